"""`open_slide`: check the path, pick the backend by format, turn every failure into a `SlideError`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from napari_rckd.io.slide import Slide, SlideError

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".qptiff", ".btf", ".vms"}
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg"}
DICOM_SUFFIXES = {".dcm"}
SLIDE_SUFFIXES = TIFF_SUFFIXES | PLAIN_SUFFIXES | DICOM_SUFFIXES


def open_slide(path: str | os.PathLike, mpp: float | None = None) -> Slide:
    """Open a whole-slide image lazily; ``mpp`` (µm/px at level 0) overrides the file's value.

    Raises `SlideError` with one sentence naming the file and the problem.
    """
    path = Path(path).expanduser()
    if mpp is not None and not (isinstance(mpp, (int, float)) and mpp > 0):
        raise SlideError(f"mpp must be a positive number of µm per pixel, got {mpp!r}.")
    mpp = float(mpp) if mpp is not None else None
    if not path.exists():
        raise SlideError(f"{path} does not exist; check the path.")
    if path.is_dir():
        if any(path.glob("*.dcm")):
            return _open_dicom(path, mpp)
        raise SlideError(f"{path} is a directory; give a slide file (or a folder of DICOM files).")
    if path.stat().st_size == 0:
        raise SlideError(f"{path.name} is empty (0 bytes); copy or download it again.")
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return _open_dicom(path, mpp)
    if suffix in PLAIN_SUFFIXES:
        from napari_rckd.io.plain import open_plain

        return _guarded(open_plain, path, mpp)
    from napari_rckd.io.tiff import open_tiff

    return _guarded(open_tiff, path, mpp)


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
