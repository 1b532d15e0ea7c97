"""Where exported files live: the `Storage` interface and the local backend (S3: `s3.py`).

Keys are the relative, validated keys of `calltexts_assets.files.storage_keys`. Writes are
atomic on every backend: a failure or kill mid-write leaves no object at the key (a local
kill may leave a hidden `.<name>.*.tmp` file, which is never listed and never a valid key).
Local files are created owner-only (0600, from mkstemp): recordings and transcripts are
personal data.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from calltexts_assets.files.storage_keys import UnsafeKeyError, validate_key, validate_prefix
from calltexts_assets.limits.processes import owner_name

READ_CHUNK = 1024 * 1024


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


def hashing_copy(chunks: Iterable[bytes], sink: IO[bytes]) -> tuple[int, str]:
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

    def remove_partial_writes(self, is_over: Callable[[str, float], bool]) -> int:
        """Remove the partial writes of processes that are over (`is_over(owner, mtime)`),
        returning how many. An S3 object is visible only once written: nothing to remove
        (abandoned multipart uploads go by the bucket's lifecycle rule)."""
        return 0

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
                # The writer's name in it: a later run removes it once the writer is gone.
                prefix = f".{path.name}.{owner_name()}."
                return tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
            except FileNotFoundError:
                attempts -= 1
                if not attempts:
                    raise

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        path = self._path(key)
        fd, tmp = self._temp_in(path)
        try:
            with os.fdopen(fd, "wb") as sink:
                size, digest = hashing_copy(chunks, sink)
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
            while chunk := source.read(READ_CHUNK):
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
                if key.startswith(prefix) and is_valid_key(key):  # not temp or stray files
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

    def remove_partial_writes(self, is_over: Callable[[str, float], bool]) -> int:
        removed = 0
        if not (self.root / "exports").is_dir():
            return 0
        for dirpath, _dirs, files in os.walk(self.root / "exports"):
            for name in files:
                found = _PARTIAL_WRITE.fullmatch(name)
                if found is None:
                    continue
                path = os.path.join(dirpath, name)
                with suppress(FileNotFoundError):
                    if is_over(found["owner"] or "", os.lstat(path).st_mtime):
                        os.unlink(path)
                        removed += 1
        return removed


# `.<name>.<owner>.<random>.tmp` (`_temp_in`); older versions wrote no owner.
_PARTIAL_WRITE = re.compile(r"\..+?\.(?:(?P<owner>[0-9a-f]{8}-[0-9]+-[0-9]*)\.)?[^.]+\.tmp")


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


def unchanged_since(
    storage: Storage,
    key: str,
    sha256: str | None,
    written_at: datetime | None,
    *,
    verify: bool = False,
) -> bool:
    """Whether the object at `key` is the one written at `written_at` with `sha256`: it is
    there and, unless modified after it was written (or `verify` asks), not hashed again.
    Without a recorded hash (written by an older version) being there is all there is."""
    found = storage.info(key)
    if found is None:
        return False
    if sha256 is None:
        return True
    if written_at is not None and written_at.tzinfo is None:
        written_at = written_at.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    if verify or written_at is None or found.modified_at > written_at:
        return storage.sha256(key) == sha256
    return True


def is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except UnsafeKeyError:
        return False
    return True
