from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from calltexts_assets.clients.storage import LocalStorage
from calltexts_assets.files.storage_keys import UnsafeKeyError
from calltexts_assets.resources.storage import StorageResource

KEY = "exports/2026-11/raw/2026/11/03/call_c1.mp3"
UNSAFE_KEYS = ["../x", "a/../../x", "/etc/passwd", "..", "", "x\x00", "a//b", "a\\..\\b", "ａ/b"]


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "root")


def _files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def _failing_chunks(good: int) -> Iterator[bytes]:
    for _ in range(good):
        yield b"x" * 1000
    raise ConnectionError("download broke mid-stream")


def test_round_trip(storage: LocalStorage) -> None:
    chunks = [os.urandom(70_000) for _ in range(5)]
    data = b"".join(chunks)
    stored = storage.write_stream(KEY, iter(chunks))
    assert stored.key == KEY
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() == storage.sha256(KEY)
    assert storage.read_bytes(KEY) == data
    assert storage.exists(KEY)
    assert storage.stat(KEY) == len(data)
    assert storage.uri(KEY) == str(storage.root / KEY)
    with storage.local_path(KEY) as path:
        assert path.read_bytes() == data


def test_write_text_is_utf8_without_bom(storage: LocalStorage) -> None:
    key = "exports/2026-11/transcripts/call_c1.txt"
    stored = storage.write_text(key, "Оператор: Здравствуйте\n")
    raw = (storage.root / key).read_bytes()
    assert raw == "Оператор: Здравствуйте\n".encode()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert stored.size == len(raw)


def test_overwrite_replaces(storage: LocalStorage) -> None:
    storage.write_bytes(KEY, b"old")
    storage.write_bytes(KEY, b"new")
    assert storage.read_bytes(KEY) == b"new"


def test_failed_stream_leaves_no_object_and_no_litter(storage: LocalStorage) -> None:
    with pytest.raises(ConnectionError):
        storage.write_stream(KEY, _failing_chunks(good=3))
    assert not storage.exists(KEY)
    assert _files_under(storage.root) == []


def test_failed_overwrite_keeps_previous_version(storage: LocalStorage) -> None:
    storage.write_bytes(KEY, b"complete recording")
    with pytest.raises(ConnectionError):
        storage.write_stream(KEY, _failing_chunks(good=3))
    assert storage.read_bytes(KEY) == b"complete recording"
    assert _files_under(storage.root) == [KEY]


def test_str_chunks_are_refused(storage: LocalStorage) -> None:
    with pytest.raises(TypeError, match="bytes"):
        storage.write_stream(KEY, ["text"])  # type: ignore[list-item]
    assert _files_under(storage.root) == []


def test_killed_writer_leaves_no_object(storage: LocalStorage) -> None:
    # os._exit skips every finally/except: the closest thing to SIGKILL mid-write.
    script = textwrap.dedent(
        f"""
        import os
        from calltexts_assets.clients.storage import LocalStorage

        def chunks():
            yield b"x" * 100_000
            os._exit(9)

        LocalStorage({str(storage.root)!r}).write_stream({KEY!r}, chunks())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    assert done.returncode == 9
    assert not storage.exists(KEY)
    assert storage.list() == []
    # the only trace is a hidden temp file beside the key, which no listing returns
    leftovers = _files_under(storage.root)
    assert len(leftovers) == 1 and Path(leftovers[0]).name.startswith(".call_c1.mp3.")


def test_stream_is_not_held_in_memory(storage: LocalStorage) -> None:
    chunk = b"\x01" * (1024 * 1024)
    tracemalloc.start()
    try:
        stored = storage.write_stream(KEY, (chunk for _ in range(32)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.size == 32 * len(chunk)
    assert peak < 8 * len(chunk)
    digest = hashlib.sha256()
    for _ in range(32):
        digest.update(chunk)
    assert storage.sha256(KEY) == stored.sha256 == digest.hexdigest()


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_rejected_everywhere(storage: LocalStorage, key: str) -> None:
    calls = [
        lambda: storage.write_bytes(key, b"x"),
        lambda: storage.write_text(key, "x"),
        lambda: storage.read_bytes(key),
        lambda: storage.exists(key),
        lambda: storage.stat(key),
        lambda: storage.sha256(key),
        lambda: storage.delete(key),
        lambda: storage.uri(key),
    ]
    for call in calls:
        with pytest.raises(UnsafeKeyError):
            call()
    with pytest.raises(UnsafeKeyError), storage.local_path(key):
        pass
    assert not (storage.root.parent / "x").exists()


def test_missing_objects(storage: LocalStorage) -> None:
    assert storage.stat(KEY) is None
    assert not storage.exists(KEY)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(KEY)
    with pytest.raises(FileNotFoundError):
        storage.sha256(KEY)
    with pytest.raises(FileNotFoundError), storage.local_path(KEY):
        pass
    storage.delete(KEY)  # idempotent


def test_list_is_a_string_prefix_and_skips_temp_files(storage: LocalStorage) -> None:
    keys = [
        "exports/2026-11/transcripts/call_a.txt",
        "exports/2026-11/transcripts/call_b.txt",
        "exports/2026-12/transcripts/call_c.txt",
        "logs/call_export_20261103T110500Z.jsonl",
    ]
    for key in keys:
        storage.write_text(key, key)
    (storage.root / "exports/2026-11/transcripts/.call_z.txt.abc.tmp").write_bytes(b"partial")
    assert [o.key for o in storage.list()] == keys
    assert [o.key for o in storage.list("exports/2026-11/")] == keys[:2]
    assert [o.key for o in storage.list("exports/2026-1")] == keys[:3]
    assert [o.key for o in storage.list("exports/2026-11/transcripts/call_b")] == keys[1:2]
    assert storage.list("nothing/here") == []
    assert sorted(storage.keys("exports/2026-1")) == keys[:3]  # same filter, lazily
    assert list(storage.keys("nothing/here")) == []
    info = storage.list("logs/")[0]
    assert info.size == len(keys[3])
    assert info.modified_at.tzinfo is not None


def test_delete_prunes_empty_directories(storage: LocalStorage) -> None:
    storage.write_bytes(KEY, b"a")
    storage.write_bytes("exports/2026-11/transcripts/call_c1.txt", b"t")
    storage.delete(KEY)
    assert not (storage.root / "exports/2026-11/raw").exists()
    assert (storage.root / "exports/2026-11/transcripts/call_c1.txt").exists()
    storage.write_bytes(KEY, b"again")  # the tree comes back on the next write
    assert storage.read_bytes(KEY) == b"again"


def test_resource_defaults_to_local_storage(tmp_path: Path) -> None:
    resource = StorageResource(local_root=str(tmp_path))
    assert isinstance(resource.get(), LocalStorage)
    assert resource.get() is resource.get()
    with pytest.raises(ValueError, match="backend"):
        StorageResource(backend="ftp").get()


def test_resource_in_an_asset(tmp_path: Path) -> None:
    @dg.asset
    def note(storage: StorageResource) -> None:
        storage.get().write_text("logs/call_export_20261103T110500Z.jsonl", "{}\n")

    result = dg.materialize(
        [note], resources={"storage": StorageResource(local_root=str(tmp_path))}
    )
    assert result.success
    assert (tmp_path / "logs/call_export_20261103T110500Z.jsonl").read_text() == "{}\n"
