"""Open any TIFF-based slide (SVS, OME-TIFF, NDPI, SCN, BIF, QPTIFF, generic) as a `Slide`.

The declared geometry is checked first (`geometry.py`). Tiled RGB pages are decoded straight
from the file (`TiledPageReader`); anything else (strips, NDPI) goes through tifffile's zarr
store. napari's dask levels wrap the same readers (`levels.py`), chunked like the file's tiles.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import tifffile
import zarr

from napari_rckd.io.geometry import check_geometry
from napari_rckd.io.levels import DamageLog, add_coarsened_levels, dask_level
from napari_rckd.io.metadata import read_metadata
from napari_rckd.io.slide import LazyImages, Slide, SlideError, check_decodes
from napari_rckd.io.tiles import ArrayReader, TileCache, TiledPageReader

logger = logging.getLogger(__name__)

# Strip files are shown in square chunks of at least this size, so a pan decodes
# a strip once per view instead of once per row of small chunks.
MIN_STRIP_CHUNK = 512
ASSOCIATED_NAMES = {"thumbnail", "label", "macro", "overview"}


def open_tiff(path: Path, mpp: float | None) -> Slide:
    # tifffile's "shaped" series (its own JSON description) loops forever on some damaged
    # descriptions (found by `bench fuzz`); slides never need it, the generic series reads
    # the same levels from the pages themselves.
    tif = tifffile.TiffFile(path, is_shaped=False)
    try:
        return _build_slide(tif, path, mpp)
    except BaseException:
        tif.close()
        raise


def _build_slide(tif: tifffile.TiffFile, path: Path, mpp_override: float | None) -> Slide:
    series = _main_series(tif, path)
    keyframe = series.keyframe
    check_geometry(series, path)
    store = series.aszarr()
    root = zarr.open(store, mode="r")
    arrays = (
        [root]
        if isinstance(root, zarr.Array)
        else [root[str(i)] for i in range(len(series.levels))]
    )
    cache = TileCache()
    fd = os.open(path, os.O_RDONLY)

    def close() -> None:
        cache.clear()
        os.close(fd)
        store.close()
        tif.close()

    try:
        levels, readers = _levels(series, arrays, fd, cache, DamageLog(path.name))
        check_decodes(readers[len(series.levels) - 1], path)
        metadata = read_metadata(tif)
    except BaseException:
        close()
        raise
    return Slide(
        path,
        levels,
        readers,
        mpp=mpp_override if mpp_override is not None else metadata.mpp,
        magnification=metadata.magnification,
        vendor=metadata.vendor,
        compression=_compression_name(keyframe.compression),
        tile_shape=_display_chunks(keyframe),
        associated=LazyImages(_associated_loaders(tif, series), source=path.name),
        closers=[close],
        cache=cache,
    )


def _levels(series, arrays, fd: int, cache: TileCache, damage: DamageLog) -> tuple[list, list]:
    """One reader and one dask level per pyramid level, plus coarsened ones for a huge single level."""
    levels, readers = [], []
    for index, (level, array) in enumerate(zip(series.levels, arrays, strict=True)):
        page = level.pages[0] if len(level.pages) == 1 else None
        if _fast_path_ok(page):
            reader = TiledPageReader(page, fd, cache, level=index)
        else:
            reader = ArrayReader(array, level=index)
        readers.append(reader)
        levels.append(dask_level(reader, level.shape[:2], _display_chunks(level.keyframe), damage))
    add_coarsened_levels(levels, readers, damage)
    return levels, readers


def _main_series(tif: tifffile.TiffFile, path: Path) -> tifffile.TiffPageSeries:
    """The largest image (series 0 for every vendor we know, but SCN may list a macro first)."""
    if len(tif.pages) == 0:
        raise SlideError(
            f"{path.name} has a TIFF header but no readable image directory; it is probably "
            "truncated or corrupt, so copy or download it again."
        )
    candidates = [s for s in tif.series if s.name.lower() not in ASSOCIATED_NAMES]
    if not candidates:
        raise SlideError(f"{path.name} contains no image; it may be empty or not a slide.")
    series = max(candidates, key=lambda s: int(np.prod(s.shape[:2])) if s.ndim >= 2 else 0)
    if series.axes not in ("YXS", "YX") or series.dtype != np.uint8:
        raise SlideError(
            f"{path.name} holds a {series.dtype} image with axes {series.axes!r}; napari-rckd reads "
            "8-bit RGB or grey brightfield slides (convert fluorescence or z-stacks first)."
        )
    if series.axes == "YXS" and series.shape[-1] not in (3, 4):
        raise SlideError(f"{path.name} has {series.shape[-1]} samples per pixel; expected RGB.")
    return series


def _fast_path_ok(page) -> bool:
    return (
        isinstance(page, tifffile.TiffPage)
        and page.is_tiled
        and not page.is_ndpi
        and page.samplesperpixel in (3, 4)
        and page.planarconfig == 1
        and page.imagedepth == 1
    )


def _compression_name(code: int) -> str:
    """tifffile gives a plain int, not its enum, for some uncompressed pages (CryoNuSeg's)."""
    try:
        return tifffile.COMPRESSION(code).name.lower()
    except ValueError:
        return f"compression-{int(code)}"


def _display_chunks(keyframe: tifffile.TiffPage) -> tuple[int, int]:
    """The file's tiles, or square chunks for strips so a pan decodes each strip once per view."""
    if keyframe.is_tiled:
        return int(keyframe.tilelength), int(keyframe.tilewidth)
    strip_rows = int(keyframe.rowsperstrip)
    side = max(MIN_STRIP_CHUNK, strip_rows if strip_rows <= 4 * MIN_STRIP_CHUNK else 0)
    return side, side


def _associated_loaders(tif: tifffile.TiffFile, main: tifffile.TiffPageSeries) -> dict:
    loaders = {}
    for series in tif.series:
        name = series.name.lower()
        if series is not main and name in ASSOCIATED_NAMES and name not in loaders:
            loaders[name] = lambda s=series: _rgb_array(s.asarray())
    return loaders


def _rgb_array(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])
