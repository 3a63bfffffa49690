"""Run one fuzz input the way a user's session would, in a forked child with a deadline.

The child opens the file, computes the display levels as napari would, reads regions and
tiles at an mpp as inference and training do, and decodes the associated images. It
reports one outcome; the parent turns a child past its deadline into a hang and one killed
by a signal (a segfault in a codec, or the memory cap) into a crash. Forking, instead of
starting an interpreter per input, keeps the imports warm: a few hundred inputs fit in CI.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import time
import warnings
from pathlib import Path

import numpy as np

# Regions read per level: the corners hold any damage a mutation makes in these small seeds,
# while an image that claims to be large cannot make one input take minutes.
MAX_READ = 1024


def run_isolated(path: Path, timeout: float, memory_bytes: int) -> str:
    """The outcome of exercising ``path`` in a child: ok, refused, damaged, raw: ..., hang, crash: ..."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(path, write_end, memory_bytes)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        report = _read_all(read_end) if ready else None
    finally:
        os.close(read_end)
    if report is None:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if report is None:
        return "hang"
    if not report:
        if os.WIFSIGNALED(status):
            return f"crash: signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"crash: exit status {os.WEXITSTATUS(status)}"
    return report


def exercise(path: Path) -> str:
    """Open and read ``path`` through every user path; return ok, refused or damaged."""
    from napari_rckd.io import SlideError, open_slide
    from napari_rckd.io.levels import DamagedSlideWarning

    try:
        slide = open_slide(path, mpp=0.5)
    except SlideError:
        return "refused"
    damaged = False
    with slide, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index, level in enumerate(slide.levels):
            for y, x, height, width in _windows(level.shape[:2]):
                np.asarray(level[y : y + height, x : x + width])  # napari's path: never raises
                try:
                    slide.read_region(index, y, x, height, width)
                except SlideError:
                    damaged = True
        for read in (
            lambda: slide.read_at_mpp(0, 0, 32, 0.7),
            *(lambda name=name: slide.associated[name] for name in slide.associated),
        ):
            try:
                read()
            except SlideError:
                damaged = True
        warned = sum(issubclass(w.category, DamagedSlideWarning) for w in caught)
    if warned > 1:
        raise AssertionError(f"{warned} damage warnings for one slide; expected at most one")
    return "damaged" if damaged or warned else "ok"


def memory_cap(budget_bytes: int) -> int:
    """An address-space limit ``budget_bytes`` above what this process already maps."""
    with open("/proc/self/statm") as handle:
        mapped = int(handle.read().split()[0]) * resource.getpagesize()
    return mapped + budget_bytes


def _child(path: Path, write_end: int, memory_bytes: int) -> None:
    status = 0
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, resource.RLIM_INFINITY))
        outcome = exercise(path)
    except BaseException as error:  # the finding itself: a raw exception escaped
        outcome = f"raw: {type(error).__name__}: {error}"[:300]
    try:
        os.write(write_end, outcome.encode())
    except BaseException:
        status = 1
    os._exit(status)


def _read_all(fd: int) -> str:
    chunks, deadline = [], time.monotonic() + 5
    while time.monotonic() < deadline:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _windows(shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    height, width = (min(side, MAX_READ) for side in shape)
    corners = {(0, 0), (shape[0] - height, shape[1] - width)}
    return [(y, x, height, width) for y, x in sorted(corners)]
