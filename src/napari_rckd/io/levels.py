"""napari's dask levels: each one reads through the slide's `RegionReader`, never raising.

napari computes these levels in its render thread, where an exception has no frame of
ours and no one to tell. So a tile that cannot be decoded is drawn hatched, and the
slide warns once (napari shows warnings as notifications); the reader path that
inference and training use still raises (see `Slide.read_region`).
"""

from __future__ import annotations

import itertools
import threading
import warnings

import dask.array as da
import numpy as np

from napari_rckd.io.tiles import CoarsenedReader, RegionReader, TileDecodeError

_names = itertools.count()
# A single-level image larger than this (either side) gets lazily coarsened levels
# down to COARSEST_SIZE, so napari never has to show level 0 when zoomed out.
PYRAMID_MIN_SIZE = 8192
COARSEST_SIZE = 2048


class DamagedSlideWarning(UserWarning):
    """A slide shown with some tiles hatched because they could not be decoded."""


class DamageLog:
    """Counts a slide's undecodable display tiles and warns at the first one only."""

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self._lock = threading.Lock()

    def record(self, error: TileDecodeError) -> None:
        with self._lock:
            self.count += 1
            first = self.count == 1
        if first:
            warnings.warn(
                f"{self.name} is damaged: {error} could not be decoded ({error.reason}); damaged "
                "tiles are shown hatched, so copy or export the slide again.",
                DamagedSlideWarning,
                stacklevel=2,
            )


class _LevelArray:
    """The array-like dask slices: ``[y0:y1, x0:x1, c0:c1]`` of one level, hatched on damage."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, reader: RegionReader, shape: tuple[int, int], damage: DamageLog):
        self.shape = (*shape, 3)
        self._reader = reader
        self._damage = damage

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        (y0, y1, _), (x0, x1, _) = (k.indices(n) for k, n in zip(key[:2], self.shape, strict=False))
        try:
            region = self._reader.read(y0, x0, y1, x1)
        except TileDecodeError as error:
            self._damage.record(error)
            region = _hatched(y1 - y0, x1 - x0)
        return region[(slice(None), slice(None), *key[2:])]


def dask_level(
    reader: RegionReader, shape: tuple[int, int], chunks: tuple[int, int], damage: DamageLog
) -> da.Array:
    """A lazy RGB level whose graph holds one task per chunk and nothing else."""
    return da.from_array(
        _LevelArray(reader, shape, damage),
        chunks=(*chunks, 3),
        name=f"rckd-level-{next(_names)}",  # unique: tokenizing the reader would mean nothing
        asarray=False,
        meta=np.empty((0, 0, 0), np.uint8),
    )


def add_coarsened_levels(levels: list, readers: list, damage: DamageLog) -> None:
    """Append 2x, 4x, ... mean levels to a huge single-level image (in place; else nothing)."""
    shape = levels[0].shape[:2]
    if len(levels) != 1 or max(shape) <= PYRAMID_MIN_SIZE:
        return
    chunks = levels[0].chunksize[:2]
    while max(shape) / 2 > COARSEST_SIZE // 2:
        shape = (shape[0] // 2, shape[1] // 2)
        readers.append(CoarsenedReader(readers[-1]))
        levels.append(dask_level(readers[-1], shape, chunks, damage))


def _hatched(height: int, width: int) -> np.ndarray:
    """Light grey with diagonal stripes: visibly missing, unlike white background."""
    yy, xx = np.ogrid[:height, :width]
    stripes = ((yy + xx) // 8) % 2 == 0
    return np.repeat(np.where(stripes, 200, 235).astype(np.uint8)[..., None], 3, axis=-1)
