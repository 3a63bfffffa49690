"""Checks before reading a file the user named (it exists, is a regular file, may be read),
and the short hash that names a file's contents.

Without the checks a pipe blocks the reader forever (or reads as empty), and a file the user
may not read is reported as corrupt, sending them to delete a good checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from napari_rckd.errors import RckdError


def check_readable(path: Path, what: str) -> None:
    """Raise `RckdError` naming ``what`` (e.g. "weights file") unless ``path`` can be read."""
    if not path.exists():
        raise RckdError(f"{what} {path} does not exist; check the path.")
    if not path.is_file():
        raise RckdError(f"{what} {path} is not a regular file (a folder, pipe or device).")
    if not os.access(path, os.R_OK):
        raise RckdError(
            f"{what} {path} cannot be read: permission denied; ask for read access or copy it."
        )


HASH_CHARS = 16  # a sha256 prefix: enough to tell files apart, short enough to read


def sha256_prefix(path: Path, chars: int = HASH_CHARS) -> str:
    """The first ``chars`` hex digits of the file's sha256 (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:chars]
