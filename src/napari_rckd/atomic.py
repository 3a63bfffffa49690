"""Atomic file writes: a temporary file beside the target, renamed over it on success.

Readers, and a crash half-way, see the old file or the new one, never a torn one: the
guarantee behind "nothing the user made is lost" for annotations, checkpoints and results.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; it replaces ``path`` if the block succeeds.

    The temporary file is created by whoever writes it (tifffile, safetensors, torch.save);
    it is given the user's usual permissions before the rename, since some writers create
    it private (0600) and others not. It lives in the same folder so the final rename never
    crosses a filesystem; one left by a killed process is removed by `remove_orphans`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unique = f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}"
    temporary = path.with_name(f".{path.name}.{unique}.tmp")
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """A file handle whose content becomes ``path`` only when the block succeeds."""
    with atomic_path(path) as temporary, open(temporary, mode, **kwargs) as handle:
        yield handle


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON so that a crash never leaves half a file."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, default=str)


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files `atomic_path` left in ``folder`` when its process was killed.

    A file whose writing process is still alive is kept: it may be mid-write.
    """
    removed = []
    for temporary in Path(folder).glob(".*.tmp"):
        parts = temporary.name.split(".")
        if len(parts) < 6 or not parts[-4].isdigit() or process_alive(int(parts[-4])):
            continue
        temporary.unlink(missing_ok=True)
        removed.append(temporary)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
