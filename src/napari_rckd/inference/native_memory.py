"""Give freed memory back to the operating system after live results are evicted.

glibc's allocator keeps what numpy frees in per-thread arenas for reuse; with the worker, the
reader threads and Qt's all allocating, browsing a large slide kept growing the process by
hundreds of MB after the results themselves had stopped growing (`bench browse`: Python's own
allocations flat, RSS still rising). ``malloc_trim`` returns the free pages of every arena.
Elsewhere (macOS, Windows, musl) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS; False where that cannot be done."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
