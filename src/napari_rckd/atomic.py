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


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; it replaces ``path`` if the block succeeds.

    The temporary file is created by whoever writes it (tifffile, safetensors, torch.save),
    so it gets the user's usual permissions; it lives in the same folder so the final
    rename never crosses a filesystem.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unique = f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}"
    temporary = path.with_name(f".{path.name}.{unique}.tmp")
    try:
        yield temporary
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
