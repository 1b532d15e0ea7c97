"""The scratch folder of the steps: spooled downloads and the pieces of long recordings, and
what runs killed mid-write left behind.

They are recordings (personal data), so they live under the project's own home, not the
system's /tmp. Each process works in a folder of its own named after it (`limits.processes.
owner_name`: host, pid, the pid's start time), and names its partial storage writes the same
way: the next run removes what belongs to processes that are gone, never a live run's files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

RUN_FOLDER_PREFIX = "run-"
# Whether the process a name carries is over, given the file's mtime
# (`limits.processes.owner_is_over`; "" for a name without one: judged by age).
IsOver = Callable[[str, float], bool]


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


def prepared_workdir(path: str | Path, owner: str) -> Path:
    """The scratch folder of the process `owner` under `path`, created."""
    own = Path(path) / f"{RUN_FOLDER_PREFIX}{owner}"
    own.mkdir(parents=True, exist_ok=True)
    return own


@contextmanager
def released_when_done(own: Path) -> Iterator[Path]:
    """The step's scratch folder, removed when the step is done with it: empty by then, as
    every file in it is temporary; what is not (a bug, a kill) is left to the sweep."""
    try:
        yield own
    finally:
        with suppress(OSError):
            own.rmdir()


def _remove(entry: Path, found: Leftovers) -> None:
    if entry.is_dir() and not entry.is_symlink():
        found.piece_folders += entry.name.startswith("calltexts-pieces-")
        shutil.rmtree(entry, ignore_errors=True)
    else:
        found.spool_files += entry.name.startswith("spool-")
        entry.unlink(missing_ok=True)


def sweep_workdir(path: str | Path, is_over: IsOver) -> Leftovers:
    """Remove the folders of processes that are over, and loose entries of older versions
    once old enough; count the spool files and piece folders among them."""
    root = Path(path)
    found = Leftovers()
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        try:
            modified = entry.lstat().st_mtime
            if entry.name.startswith(RUN_FOLDER_PREFIX) and entry.is_dir():
                if is_over(entry.name.removeprefix(RUN_FOLDER_PREFIX), modified):
                    for inside in entry.iterdir():
                        _remove(inside, found)
                    entry.rmdir()
            elif is_over("", modified):
                _remove(entry, found)
        except OSError:  # removed or written into meanwhile: the next sweep looks again
            continue
    return found


def sweep_leftovers(
    work_dir: str | Path, remove_partial_writes: Callable[[IsOver], int], is_over: IsOver
) -> Leftovers:
    """The scratch folder's leftovers and storage's partial writes (`Storage.
    remove_partial_writes`) of processes that are over."""
    found = sweep_workdir(work_dir, is_over)
    found.partial_writes = remove_partial_writes(is_over)
    return found
