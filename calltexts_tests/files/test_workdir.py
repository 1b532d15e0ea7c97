"""The scratch folder: what runs that are over left behind is swept, a live run's is not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from calltexts_assets.clients.storage import LocalStorage
from calltexts_assets.files.workdir import prepared_workdir, sweep_leftovers, sweep_workdir
from calltexts_assets.limits.processes import (
    OTHER_HOST_STALE_AFTER_SEC,
    owner_is_over,
    owner_name,
)


def _gone_owner() -> str:
    """The owner name of a process that has ended."""
    code = "from calltexts_assets.limits.processes import owner_name; print(owner_name())"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_each_process_works_in_a_folder_of_its_own(tmp_path: Path) -> None:
    own = prepared_workdir(tmp_path / "a" / "b", owner_name())
    assert own.is_dir() and own.parent == tmp_path / "a" / "b"
    assert own.name == f"run-{owner_name()}"


def test_folders_of_processes_that_are_gone_are_swept_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "tmp"
    dead = root / f"run-{_gone_owner()}"
    (dead / "calltexts-pieces-x").mkdir(parents=True)
    (dead / "calltexts-pieces-x" / "piece_001.mp3").write_bytes(b"audio")
    (dead / "spool-abc.part").write_bytes(b"audio")
    live = prepared_workdir(root, owner_name())
    (live / "spool-live.part").write_bytes(b"audio")
    # Loose entries of older versions: by age.
    old_spool, fresh = root / "spool-old.part", root / "spool-fresh.part"
    for path in (old_spool, fresh):
        path.write_bytes(b"audio")
    stamp = time.time() - OTHER_HOST_STALE_AFTER_SEC - 60
    os.utime(old_spool, (stamp, stamp))

    found = sweep_workdir(root, owner_is_over)

    assert (found.spool_files, found.piece_folders) == (2, 1)
    assert sorted(p.name for p in root.iterdir()) == sorted(["spool-fresh.part", live.name])
    assert (live / "spool-live.part").exists()


def test_partial_writes_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    storage.write_text("exports/2026-11/transcripts/call_1.txt", "text")
    folder = tmp_path / "store" / "exports/2026-11/transcripts"
    dead = folder / f".call_2.txt.{_gone_owner()}.abc123.tmp"
    live = folder / f".call_3.txt.{owner_name()}.abc123.tmp"
    old = folder / ".call_4.txt.abc123.tmp"  # an older version's, without an owner
    for path in (dead, live, old):
        path.write_bytes(b"partial")

    found = sweep_leftovers(tmp_path / "tmp", storage.remove_partial_writes, owner_is_over)

    assert found.partial_writes == 1 and found.total == 1
    assert not dead.exists() and live.exists() and old.exists()
    assert storage.read_bytes("exports/2026-11/transcripts/call_1.txt") == b"text"
