"""The S3 backend of `Storage`: server-side encryption on every object, atomic uploads."""

from __future__ import annotations

import mimetypes
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from calltexts_assets.clients.storage import (
    READ_CHUNK,
    ObjectInfo,
    Storage,
    StoredObject,
    hashing_copy,
    is_valid_key,
)
from calltexts_assets.files.recording_formats import CONTENT_TYPES as AUDIO_CONTENT_TYPES
from calltexts_assets.files.storage_keys import validate_key, validate_prefix

# S3 objects up to this size are staged in memory before upload, larger ones on disk.
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
SSE_MODES = ("AES256", "aws:kms")


# Charset on text types so browsers and consoles show Cyrillic right when fetching directly.
_CONTENT_TYPES = {
    **{f".{extension}": kind for extension, kind in AUDIO_CONTENT_TYPES.items()},
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".jsonl": "application/x-ndjson; charset=utf-8",
    ".pdf": "application/pdf",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
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
            size, digest = hashing_copy(chunks, staged)
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
            yield from body.iter_chunks(READ_CHUNK)
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
                if is_valid_key(key):
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
