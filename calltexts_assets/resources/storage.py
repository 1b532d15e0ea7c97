"""Where exported files live: one `Storage` interface, a local and an S3 backend, one resource.

Keys are the relative, validated keys of `calltexts_assets.storage_keys`. Writes are atomic on
both backends: a failure or kill mid-write leaves no object at the key (a local kill may leave a
hidden `.<name>.*.tmp` file, which is never listed and never a valid key). Local files are
created owner-only (0600, from mkstemp): recordings and transcripts are personal data.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import dagster as dg
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from calltexts_assets.storage_keys import UnsafeKeyError, validate_key, validate_prefix

_READ_CHUNK = 1024 * 1024
# S3 objects up to this size are staged in memory before upload, larger ones on disk.
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
SSE_MODES = ("AES256", "aws:kms")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified_at: datetime  # aware, UTC


def _hashing(chunks: Iterable[bytes], sink: IO[bytes]) -> tuple[int, str]:
    """Copy chunks into sink, returning (size, sha256) without holding the whole stream."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        # Say which argument is wrong; hashlib's own TypeError would not.
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"write_stream takes bytes chunks, got {type(chunk).__name__}")
        digest.update(chunk)
        sink.write(chunk)
        size += memoryview(chunk).nbytes
    return size, digest.hexdigest()


class Storage(ABC):
    """The export store. Every method validates its key and raises UnsafeKeyError if needed."""

    @abstractmethod
    def write_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        """Store the chunks at key atomically; size and sha256 are computed on the way."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError if absent."""

    @abstractmethod
    def info(self, key: str) -> ObjectInfo | None:
        """The object's size and last modification, or None if there is no object at key."""

    @abstractmethod
    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The object in chunks; FileNotFoundError if absent."""

    @abstractmethod
    def local_path(self, key: str) -> AbstractContextManager[Path]:
        """Context manager yielding a local file Path with the object's content (for ffmpeg)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with prefix (a plain string prefix, as in S3), by key.

        Names that are not valid keys (temp files of writes in flight, foreign files) are left out.
        """

    def keys(self, prefix: str = "") -> Iterator[str]:
        """The keys `list` gives, in no particular order, one at a time: a listing of
        thousands of objects is not held in memory."""
        for info in self.list(prefix):
            yield info.key

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where the object is, for metadata and the registry: a file path or s3://bucket/key."""

    def write_bytes(self, key: str, data: bytes) -> StoredObject:
        return self.write_stream(key, [data])

    def write_text(self, key: str, text: str) -> StoredObject:
        return self.write_stream(key, [text.encode("utf-8")])

    def stat(self, key: str) -> int | None:
        """The object's size in bytes, or None if there is no object at key."""
        found = self.info(key)
        return found.size if found else None

    def exists(self, key: str) -> bool:
        return self.info(key) is not None

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        for chunk in self.iter_bytes(key):
            digest.update(chunk)
        return digest.hexdigest()


class LocalStorage(Storage):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _temp_in(self, path: Path) -> tuple[int, str]:
        # Retention may prune an emptied directory between mkdir and mkstemp: try again.
        attempts = 3
        while True:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            except FileNotFoundError:
                attempts -= 1
                if not attempts:
                    raise

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        path = self._path(key)
        fd, tmp = self._temp_in(path)
        try:
            with os.fdopen(fd, "wb") as sink:
                size, digest = _hashing(chunks, sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)
        return StoredObject(key=key, size=size, sha256=digest)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        with path.open("rb") as source:
            while chunk := source.read(_READ_CHUNK):
                yield chunk

    def info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no object at {key!r}")
        yield path

    def _walk(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, file path) of every valid key under prefix."""
        validate_prefix(prefix)
        base = self.root.joinpath(*prefix.split("/")[:-1])
        for dirpath, _dirs, files in os.walk(base):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix) and _is_valid_key(key):  # not temp or stray files
                    yield key, os.path.join(dirpath, name)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        for key, path in self._walk(prefix):
            with suppress(FileNotFoundError):  # deleted while we walked
                st = os.stat(path)
                found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        return sorted(found, key=lambda info: info.key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        for key, _path in self._walk(prefix):
            yield key

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Drop emptied directories so retention does not leave a tree of empty days behind.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def uri(self, key: str) -> str:
        return str(self._path(key))


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except UnsafeKeyError:
        return False
    return True


# Charset on text types so browsers and consoles show Cyrillic right when fetching directly.
_CONTENT_TYPES = {
    ".mp3": "audio/mpeg",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".jsonl": "application/x-ndjson; charset=utf-8",
    ".pdf": "application/pdf",
}


def _content_type(key: str) -> str:
    suffix = Path(key).suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


class S3Storage(Storage):
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        sse: str = "AES256",
        kms_key_id: str | None = None,
        transfer_config: TransferConfig | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3Storage needs a bucket")
        if sse not in SSE_MODES:
            raise ValueError(f"sse must be one of {SSE_MODES}, got {sse!r}")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.sse = sse
        self.kms_key_id = kms_key_id or None
        self.transfer_config = transfer_config or TransferConfig()

    def _full(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _encryption(self) -> dict[str, str]:
        args = {"ServerSideEncryption": self.sse}
        if self.sse == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id  # none: the bucket's AWS-managed key
        return args

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        full = self._full(key)
        # Stage first, so a failing source never starts an upload; upload_fileobj then either
        # completes (one PUT, or a multipart upload that is aborted on error) or shows nothing.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as staged:
            size, digest = _hashing(chunks, staged)
            staged.seek(0)
            extra = {
                **self._encryption(),
                "ContentType": _content_type(key),
                "Metadata": {"sha256": digest},
            }
            self.client.upload_fileobj(
                staged, self.bucket, full, ExtraArgs=extra, Config=self.transfer_config
            )
        return StoredObject(key=key, size=size, sha256=digest)

    def _get(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"no object at {self.uri(key)}") from exc
            raise

    def read_bytes(self, key: str) -> bytes:
        return self._get(key)["Body"].read()

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        body = self._get(key)["Body"]
        try:
            yield from body.iter_chunks(_READ_CHUNK)
        finally:
            body.close()

    def info(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"])

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        full = self._full(key)
        suffix = Path(key).suffix  # ffmpeg picks the demuxer from the extension
        fd, tmp = tempfile.mkstemp(prefix="calltexts-", suffix=suffix)
        os.close(fd)
        try:
            try:
                self.client.download_file(self.bucket, full, tmp)
            except ClientError as exc:
                if _is_missing(exc):
                    raise FileNotFoundError(f"no object at {self.uri(key)}") from exc
                raise
            yield Path(tmp)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)

    def _objects(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, listing entry) of every valid key under prefix, a page (1,000) at a time."""
        validate_prefix(prefix)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                if _is_valid_key(key):
                    yield key, obj

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        found = [
            ObjectInfo(key, int(obj["Size"]), obj["LastModified"].astimezone(UTC))
            for key, obj in self._objects(prefix)
        ]
        return sorted(found, key=lambda info: info.key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        for key, _obj in self._objects(prefix):
            yield key

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"


def _is_missing(exc: ClientError) -> bool:
    # Not every 404: a missing bucket (NoSuchBucket) is a setup error and must surface.
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class StorageResource(dg.ConfigurableResource):
    """The export store of the code location: local directory (default) or an S3 bucket.

    `s3` is a nested dagster-aws `S3Resource` (endpoint_url, region_name, credentials...). It
    is optional because dagster 1.13 cannot give a nested resource a default instance, and a
    local-only setup should not have to configure S3; None means `S3Resource()`, i.e. the boto3
    chain (env, profile, role). `sse`/`kms_key_id` apply to the S3 backend only.
    """

    backend: str = "local"
    local_root: str = "var"
    s3_bucket: str = ""
    s3_prefix: str = ""
    sse: str = "AES256"
    kms_key_id: str = ""
    s3: S3Resource | None = None

    _storage: Storage | None = PrivateAttr(default=None)

    def get(self) -> Storage:
        # One backend object per resource instance: boto3 clients are costly and thread-safe.
        if self._storage is None:
            self._storage = self._build()
        return self._storage

    def _build(self) -> Storage:
        if self.backend == "local":
            return LocalStorage(Path(self.local_root))
        if self.backend == "s3":
            return S3Storage(
                (self.s3 or S3Resource()).get_client(),
                bucket=self.s3_bucket,
                prefix=self.s3_prefix,
                sse=self.sse,
                kms_key_id=self.kms_key_id or None,
            )
        raise ValueError(f"storage backend must be 'local' or 's3', got {self.backend!r}")
