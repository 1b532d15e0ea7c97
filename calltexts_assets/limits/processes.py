"""Which process a pid names, and whether it still runs (Linux `/proc`, `kill 0` elsewhere):
a run or a slot holder is recorded by host, pid and the pid's start time, so a dead one is
told from a live one, and a reused pid from the process that had it."""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), "" elsewhere: with the
    pid it names one process, so a reused pid is not taken for a dead holder's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, started: str) -> bool:
    """Whether the process `pid` (started at `started`, when known) still runs here. A
    zombie (killed, not yet reaped by its parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return not started or fields[19] == started
