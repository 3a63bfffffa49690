"""Which slides a path names: the one rule for every command that takes slides or folders.

A file is a slide; a folder is searched recursively for slide files, and a folder of ``.dcm``
files is one DICOM slide (its frames and levels), never one slide per file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from napari_rckd.errors import RckdError
from napari_rckd.io.opener import DICOM_SUFFIXES, SLIDE_SUFFIXES


def find_slides(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Slide files from files and folders (searched recursively; a DICOM folder is one slide)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise RckdError(f"{path} does not exist; give slide files or folders of slides")
        if path.is_file():
            found.append(path)
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file())
        slides = [p for p in files if p.suffix.lower() in SLIDE_SUFFIXES - DICOM_SUFFIXES]
        slides += sorted({p.parent for p in files if p.suffix.lower() in DICOM_SUFFIXES})
        if not slides:
            raise RckdError(
                f"folder {path} contains no slide images (looked for "
                f"{', '.join(sorted(SLIDE_SUFFIXES))}); point at slide files or their folder"
            )
        found.extend(slides)
    if not found:
        raise RckdError("no slides given; pass at least one slide file or folder")
    return found
