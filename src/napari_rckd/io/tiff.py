"""Open any TIFF-based slide (SVS, OME-TIFF, NDPI, SCN, BIF, QPTIFF, generic) as a `Slide`.

tifffile -> ``series.aszarr()`` -> zarr -> one ``dask.array.from_zarr`` per level, chunks
equal to the file's tiles; region reads decode the tiles straight from the pages.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dask.array as da
import numpy as np
import tifffile
import zarr

from napari_rckd.io.metadata import read_metadata
from napari_rckd.io.slide import LazyImages, Slide, SlideError
from napari_rckd.io.tiles import ArrayReader, TileCache, TiledPageReader

logger = logging.getLogger(__name__)

# Strip files are re-chunked to square tiles of at least this size, so a pan decodes
# a strip once per view instead of once per row of small chunks.
MIN_STRIP_CHUNK = 512
# A single-level image larger than this (either side) gets lazily coarsened levels
# down to COARSEST_SIZE, so napari never has to show level 0 when zoomed out.
PYRAMID_MIN_SIZE = 8192
COARSEST_SIZE = 2048
ASSOCIATED_NAMES = {"thumbnail", "label", "macro", "overview"}


def open_tiff(path: Path, mpp: float | None) -> Slide:
    tif = tifffile.TiffFile(path)
    try:
        return _build_slide(tif, path, mpp)
    except BaseException:
        tif.close()
        raise


def _build_slide(tif: tifffile.TiffFile, path: Path, mpp_override: float | None) -> Slide:
    series = _main_series(tif, path)
    keyframe = series.keyframe
    _check_complete(series, path)
    store = series.aszarr()
    root = zarr.open(store, mode="r")
    arrays = (
        [root]
        if isinstance(root, zarr.Array)
        else [root[str(i)] for i in range(len(series.levels))]
    )
    fd = os.open(path, os.O_RDONLY)
    cache = TileCache()
    levels, readers = [], []
    for index, (level, array) in enumerate(zip(series.levels, arrays, strict=True)):
        dask_level = _as_rgb(da.from_zarr(array), keyframe.is_tiled)
        levels.append(dask_level)
        page = level.pages[0] if len(level.pages) == 1 else None
        if _fast_path_ok(page):
            readers.append(TiledPageReader(page, fd, cache, key=index))
        else:
            readers.append(ArrayReader(dask_level))
    if len(levels) == 1 and max(levels[0].shape[:2]) > PYRAMID_MIN_SIZE:
        for level in _coarsened_levels(levels[0]):
            levels.append(level)
            readers.append(ArrayReader(level))
    _check_decodes(readers[len(series.levels) - 1], path)

    metadata = read_metadata(tif)
    tile_shape = (
        (keyframe.tilelength, keyframe.tilewidth) if keyframe.is_tiled else levels[0].chunksize[:2]
    )

    def close() -> None:
        cache.clear()
        os.close(fd)
        store.close()
        tif.close()

    return Slide(
        path,
        levels,
        readers,
        mpp=mpp_override if mpp_override is not None else metadata.mpp,
        magnification=metadata.magnification,
        vendor=metadata.vendor,
        compression=keyframe.compression.name.lower(),
        tile_shape=tuple(int(v) for v in tile_shape),
        associated=LazyImages(_associated_loaders(tif, series)),
        closers=[close],
        cache=cache,
    )


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


def _check_complete(series: tifffile.TiffPageSeries, path: Path) -> None:
    """A truncated download keeps its header: catch tiles that point past the end of the file."""
    size = path.stat().st_size
    for level in series.levels:
        for page in level.pages:
            if page is None or not len(page.dataoffsets):
                continue
            offsets = np.asarray(page.dataoffsets, np.int64)
            ends = offsets + np.asarray(page.databytecounts, np.int64)
            if int(ends.max()) > size:
                raise SlideError(
                    f"{path.name} is truncated: its image data runs past the end of the file "
                    f"({size:,} bytes); copy or download it again."
                )


def _check_decodes(reader, path: Path) -> None:
    """Decode one pixel of the coarsest level now, so a bad codec fails at open, not in a view."""
    try:
        reader.read(0, 0, 1, 1)
    except Exception as error:
        raise SlideError(
            f"{path.name} cannot be decoded ({type(error).__name__}: {error}); the file may be "
            "corrupt or use a compression imagecodecs does not support."
        ) from error


def _fast_path_ok(page) -> bool:
    return (
        isinstance(page, tifffile.TiffPage)
        and page.is_tiled
        and not page.is_ndpi
        and page.samplesperpixel in (3, 4)
        and page.planarconfig == 1
        and page.imagedepth == 1
    )


def _as_rgb(level: da.Array, tiled: bool) -> da.Array:
    if level.ndim == 2:  # grey: repeat lazily into three channels
        level = da.broadcast_to(level[..., None], (*level.shape, 3))
    level = level[..., :3]
    if not tiled:
        strip_rows = level.chunksize[0]
        side = max(MIN_STRIP_CHUNK, strip_rows if strip_rows <= 4 * MIN_STRIP_CHUNK else 0)
        level = level.rechunk((side, side, 3))
    return level


def _coarsened_levels(level0: da.Array) -> list[da.Array]:
    """Lazy 2x, 4x, ... means of level 0, each chunked like level 0."""
    levels = []
    chunk = level0.chunksize[0]
    factor = 2
    while max(level0.shape[:2]) / factor > COARSEST_SIZE // 2:
        source = level0.rechunk((chunk * factor, chunk * factor, 3))
        coarse = da.coarsen(np.mean, source, {0: factor, 1: factor}, trim_excess=True)
        levels.append(coarse.astype(np.uint8))
        factor *= 2
    return levels


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
