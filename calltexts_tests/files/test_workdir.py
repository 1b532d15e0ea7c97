"""The scratch folder: what a killed run left behind is swept, live files are not."""

from __future__ import annotations

import os
import time
from pathlib import Path

from calltexts_assets.files.workdir import STALE_AFTER_SEC, prepared_workdir


def test_stale_entries_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "tmp"
    root.mkdir()
    old_spool = root / "spool-abc.mp3"
    old_spool.write_bytes(b"audio")
    old_chunks = root / "calltexts-pieces-x"
    old_chunks.mkdir()
    (old_chunks / "piece_001.mp3").write_bytes(b"audio")
    fresh = root / "spool-live.mp3"
    fresh.write_bytes(b"audio")
    stamp = time.time() - STALE_AFTER_SEC - 60
    for path in (old_spool, old_chunks):
        os.utime(path, (stamp, stamp))

    assert prepared_workdir(root) == root
    assert sorted(p.name for p in root.iterdir()) == ["spool-live.mp3"]


def test_missing_folder_is_created(tmp_path: Path) -> None:
    assert prepared_workdir(tmp_path / "a" / "b").is_dir()
