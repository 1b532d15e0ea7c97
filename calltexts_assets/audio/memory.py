"""Process-wide memory setting: freed audio buffers go back to the OS (glibc malloc)."""

from __future__ import annotations

import ctypes
import sys

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_buffers_to_os() -> bool:
    """Serve allocations of 1 MiB and more (decoded PCM, chunks, uploads) with mmap, so that
    freeing one gives its memory back at once. Returns whether the setting took.

    glibc raises its mmap threshold after each large free (up to 32 MiB), after which one
    call's PCM after another lands in per-thread heaps that keep their peak: measured on
    1,200 sandbox calls at concurrency 10, peak RSS 655 MiB without this, 342 MiB with it.
    Setting the threshold also turns that adjustment off. Elsewhere than glibc: no-op.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
