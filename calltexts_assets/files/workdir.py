"""The scratch folder of the steps: spooled downloads and the pieces of long recordings, and
what runs killed mid-write left behind.

They are recordings (personal data), so they live under the project's own home, not the
system's /tmp. Each process works in a folder of its own named after it (host, pid, the
pid's start time), and names its partial storage writes the same way: the next run removes
what belongs to processes that are gone, and never touches a live run's files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from calltexts_assets.limits.processes import pid_alive, process_start

# What another host's process left cannot be asked about: gone once no call could take it.
STALE_AFTER_SEC = 6 * 3600
RUN_FOLDER_PREFIX = "run-"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_OWNER = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-(?P<start>[0-9]*)")


def owner_name() -> str:
    """This process, as file names carry it: `<host hash>-<pid>-<start time>`."""
    pid = os.getpid()
    return f"{_HOST}-{pid}-{process_start(pid)}"


def owner_is_over(owner: str, modified_at: float) -> bool:
    """Whether the process an `owner_name` names is gone: asked of this host's kernel, else
    (another host on a shared folder, or no owner in the name) judged by age."""
    found = _OWNER.fullmatch(owner)
    if found is None or found["host"] != _HOST:
        return time.time() - modified_at > STALE_AFTER_SEC
    return not pid_alive(int(found["pid"]), found["start"])


@dataclass
class Leftovers:
    """What processes that are over left behind, removed by this run."""

    spool_files: int = 0  # downloads spooled before they were stored (`spool-*.part`)
    piece_folders: int = 0  # pieces cut for the STT (`calltexts-pieces-*`)
    partial_writes: int = 0  # storage writes cut short (`.call_<id>.<ext>.<owner>.*.tmp`)

    @property
    def total(self) -> int:
        return self.spool_files + self.piece_folders + self.partial_writes

    def figures(self) -> dict[str, int]:
        return {
            "leftover_spool_files_removed": self.spool_files,
            "leftover_piece_folders_removed": self.piece_folders,
            "leftover_partial_writes_removed": self.partial_writes,
        }


def prepared_workdir(path: str | Path) -> Path:
    """This process's own scratch folder under `path`, created."""
    own = Path(path) / f"{RUN_FOLDER_PREFIX}{owner_name()}"
    own.mkdir(parents=True, exist_ok=True)
    return own


def _remove(entry: Path, found: Leftovers) -> None:
    if entry.is_dir() and not entry.is_symlink():
        found.piece_folders += entry.name.startswith("calltexts-pieces-")
        shutil.rmtree(entry, ignore_errors=True)
    else:
        found.spool_files += entry.name.startswith("spool-")
        entry.unlink(missing_ok=True)


def sweep_workdir(path: str | Path) -> Leftovers:
    """Remove the folders of processes that are over, and loose entries of older versions
    past STALE_AFTER_SEC; count the spool files and piece folders among them."""
    root = Path(path)
    found = Leftovers()
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        try:
            modified = entry.lstat().st_mtime
            if entry.name.startswith(RUN_FOLDER_PREFIX) and entry.is_dir():
                if owner_is_over(entry.name.removeprefix(RUN_FOLDER_PREFIX), modified):
                    for inside in entry.iterdir():
                        _remove(inside, found)
                    entry.rmdir()
            elif time.time() - modified > STALE_AFTER_SEC:
                _remove(entry, found)
        except FileNotFoundError:  # removed meanwhile (another run sweeping)
            continue
        except OSError:  # written into meanwhile: the next sweep takes it
            continue
    return found


PartialWriteSweep = Callable[[Callable[[str, float], bool]], int]


def sweep_leftovers(work_dir: str | Path, remove_partial_writes: PartialWriteSweep) -> Leftovers:
    """The scratch folder's leftovers and storage's partial writes (`Storage.
    remove_partial_writes`) of processes that are over."""
    found = sweep_workdir(work_dir)
    found.partial_writes = remove_partial_writes(owner_is_over)
    return found
