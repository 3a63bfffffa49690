"""`open_slide`: check the path, pick the backend by format, turn every failure into a `SlideError`."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from napari_rckd.io.slide import Slide, SlideError

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".qptiff", ".btf", ".vms"}
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg"}
DICOM_SUFFIXES = {".dcm"}
SLIDE_SUFFIXES = TIFF_SUFFIXES | PLAIN_SUFFIXES | DICOM_SUFFIXES
# classic and BigTIFF, little- and big-endian
TIFF_MAGIC = {b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"}


def open_slide(path: str | os.PathLike, mpp: float | None = None) -> Slide:
    """Open a whole-slide image lazily; ``mpp`` (µm/px at level 0) overrides the file's value.

    Raises `SlideError` with one sentence naming the file and the problem.
    """
    path = Path(path).expanduser()
    if mpp is not None and not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise SlideError(f"mpp must be a positive number of µm per pixel, got {mpp!r}.")
    mpp = float(mpp) if mpp is not None else None
    try:
        kind = _kind(path)
    except OSError as error:  # a looping link, a folder we may not enter, ...
        raise SlideError(
            f"{path} cannot be reached ({error.strerror or error}); check the path and its links."
        ) from error
    if kind == "dicom":
        return _open_dicom(path, mpp)
    if kind == "plain":
        from napari_rckd.io.plain import open_plain

        return _guarded(open_plain, path, mpp)
    from napari_rckd.io.tiff import open_tiff

    return _guarded(open_tiff, path, mpp)


def _kind(path: Path) -> str:
    """dicom, plain or tiff: by the first bytes, the suffix only when they say nothing.

    Raises `SlideError` for what is no slide file at all: missing, a folder, a pipe, empty,
    unreadable. A pipe is refused before it is opened, because reading one blocks forever.
    """
    if not path.exists():
        if path.is_symlink():
            raise SlideError(f"{path} is a symbolic link to nothing (or to itself); fix the link.")
        raise SlideError(f"{path} does not exist; check the path.")
    if path.is_dir():
        if any(path.glob("*.dcm")):
            return "dicom"
        others = any(p.suffix.lower() in SLIDE_SUFFIXES for p in path.iterdir())
        if not others and any(path.glob("*/*.dcm")):
            return "dicom"  # DICOM slides' parent folder: open_dicom names the subfolders
        raise SlideError(f"{path} is a directory; give a slide file (or a folder of DICOM files).")
    if not path.is_file():
        raise SlideError(f"{path} is not a regular file (a pipe or a device); give a slide file.")
    if path.stat().st_size == 0:
        raise SlideError(f"{path.name} is empty (0 bytes); copy or download it again.")
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except PermissionError as error:
        raise SlideError(
            f"{path.name} cannot be read: permission denied; ask for read access or copy the file."
        ) from error
    if head[:4] in TIFF_MAGIC:
        return "tiff"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return "plain"
    if head[128:132] == b"DICM":
        return "dicom"
    suffix = path.suffix.lower()
    return "dicom" if suffix in DICOM_SUFFIXES else "plain" if suffix in PLAIN_SUFFIXES else "tiff"


def _open_dicom(path: Path, mpp: float | None) -> Slide:
    from napari_rckd.io.dicom import open_dicom

    return _guarded(open_dicom, path, mpp)


def _guarded(opener, path: Path, mpp: float | None) -> Slide:
    try:
        slide = opener(path, mpp)
    except SlideError:
        raise
    except Exception as error:
        kind = "slide" if path.suffix.lower() in SLIDE_SUFFIXES else "supported slide format"
        raise SlideError(
            f"{path.name} could not be opened as a {kind} ({type(error).__name__}: {error}); "
            "check that the file is a complete, uncorrupted whole-slide image."
        ) from error
    logger.debug("opened %r", slide)
    return slide
