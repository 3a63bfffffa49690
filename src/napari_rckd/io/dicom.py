"""DICOM VL whole-slide images through ``wsidicom`` (the optional ``dicom`` extra).

A single file wsidicom refuses is read with pydicom alone (`dicom_file.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from napari_rckd.io.levels import DamageLog, dask_level
from napari_rckd.io.slide import LazyImages, Slide, SlideError
from napari_rckd.io.tiles import ArrayReader

logger = logging.getLogger(__name__)
# wsidicom logs every file it skips at INFO, which would leak into the CLI's output.
logging.getLogger("wsidicom").setLevel(logging.WARNING)


class _DicomLevel:
    """Array-like view of one pyramid level, so `ArrayReader` can slice it."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, wsi, level: int):
        self._wsi = wsi
        self._level = level
        size = wsi.levels[level].size
        self.shape = (size.height, size.width, 3)

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key[0], key[1]
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return np.empty((max(y1 - y0, 0), max(x1 - x0, 0), 3), np.uint8)
        region = self._wsi.read_region((x0, y0), self._level, (x1 - x0, y1 - y0), as_array=True)
        region = np.asarray(region)[..., :3]
        return region[(slice(None), slice(None), *key[2:])] if len(key) > 2 else region


def open_dicom(path: Path, mpp: float | None) -> Slide:
    try:
        from wsidicom import WsiDicom
    except ImportError as error:
        raise SlideError(
            f"{path.name} is a DICOM slide, which needs the optional wsidicom package; "
            "install it with: pip install 'napari-rckd[dicom]'."
        ) from error
    try:
        wsi = WsiDicom.open(path)
    except Exception as error:
        if path.is_file():
            from napari_rckd.io.dicom_file import open_dicom_file

            logger.debug("wsidicom refused %s (%s); reading it with pydicom", path.name, error)
            return open_dicom_file(path, mpp)
        if path.is_dir():
            raise SlideError(_folder_sentence(path)) from error
        raise SlideError(
            f"{path.name} is not a DICOM whole-slide image wsidicom can open "
            f"({type(error).__name__}: {error}); it needs VOLUME image frames with pixel spacing."
        ) from error
    levels, readers = [], []
    tile = wsi.levels[0].tile_size
    damage = DamageLog(path.name)
    for index in range(len(wsi.levels)):
        array = _DicomLevel(wsi, index)
        level_tile = wsi.levels[index].tile_size
        readers.append(ArrayReader(array, level=index))
        chunks = (level_tile.height, level_tile.width)
        levels.append(dask_level(readers[-1], array.shape[:2], chunks, damage))
    loaders = {}
    if wsi.labels:
        loaders["label"] = lambda: np.asarray(wsi.read_label().convert("RGB"))
    if wsi.overviews:
        loaders["macro"] = lambda: np.asarray(wsi.read_overview().convert("RGB"))
    file_mpp = float(wsi.mpp.width) if wsi.mpp is not None else None
    return Slide(
        path,
        levels,
        readers,
        mpp=mpp if mpp is not None else file_mpp,
        magnification=None,
        vendor="dicom",
        compression=_transfer_syntax_name(wsi),
        tile_shape=(tile.height, tile.width),
        associated=LazyImages(loaders, source=path.name),
        closers=[wsi.close],
    )


def _folder_sentence(path: Path) -> str:
    """Why a folder of .dcm files is no slide, and which of its files or subfolders may be one.

    A DICOM slide is one series of files in one folder; a folder that holds single-file
    slides or other slides' folders (a data set's parent folder) is none itself.
    """
    files = sorted(p.name for p in path.glob("*.dcm"))
    series = sorted(p.name + "/" for p in path.iterdir() if p.is_dir() and any(p.glob("*.dcm")))
    examples = ", ".join((series + files)[:3])
    if not files:
        return (
            f"folder {path} holds DICOM slides in its subfolders, not one slide; give one "
            f"slide's folder (here: {examples})."
        )
    return (
        f"folder {path} holds .dcm files but no complete DICOM whole-slide series (no VOLUME "
        f"pyramid level); give one slide's folder or one single-file slide (here: {examples})."
    )


def _transfer_syntax_name(wsi) -> str:
    syntax = wsi.levels[0].default_instance.image_data.transfer_syntax
    return str(getattr(syntax, "name", syntax))
