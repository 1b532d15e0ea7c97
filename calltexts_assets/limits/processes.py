"""Which process a pid names, and whether it still runs (Linux `/proc`, `kill 0` elsewhere):
a run or a slot holder is recorded by host, pid and the pid's start time, so a dead one is
told from a live one, and a reused pid from the process that had it."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
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


# What another host's process left cannot be asked about: gone once no call could take it.
OTHER_HOST_STALE_AFTER_SEC = 6 * 3600
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_OWNER = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-(?P<start>[0-9]*)")


def owner_name() -> str:
    """This process as file names carry it (scratch folders, partial writes):
    `<host hash>-<pid>-<start time>`."""
    pid = os.getpid()
    return f"{_HOST}-{pid}-{process_start(pid)}"


def owner_is_over(owner: str, modified_at: float) -> bool:
    """Whether the process an `owner_name` names is gone: asked of this host's kernel, else
    (another host on a shared folder, or no owner in the name) judged by the file's age."""
    found = _OWNER.fullmatch(owner)
    if found is None or found["host"] != _HOST:
        return time.time() - modified_at > OTHER_HOST_STALE_AFTER_SEC
    return not pid_alive(int(found["pid"]), found["start"])
