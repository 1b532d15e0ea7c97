"""The scratch folder of the steps: spooled downloads and the pieces of long recordings.

They are recordings (personal data), so they live under the project's own home, not the
system's /tmp, and what a killed run left behind is swept by the next one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

# No call takes this long; anything older belongs to a run that died (kill -9, OOM).
STALE_AFTER_SEC = 6 * 3600


def prepared_workdir(path: str | Path, *, stale_after_sec: float = STALE_AFTER_SEC) -> Path:
    """Create the folder and remove entries older than `stale_after_sec` (a concurrent run's
    fresh files are left alone)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - stale_after_sec
    for entry in root.iterdir():
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
    return root
