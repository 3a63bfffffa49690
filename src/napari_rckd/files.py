"""Checks before reading a file the user named: it exists, is a regular file, may be read.

Without them a pipe blocks the reader forever (or reads as empty), and a file the user
may not read is reported as corrupt, sending them to delete a good checkpoint.
"""

from __future__ import annotations

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
