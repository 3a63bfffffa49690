"""`Slide`: a whole-slide image as a lazy pyramid plus fast region reads.

`levels` (dask arrays) are for napari's display; `read_region` and `read_at_mpp` are the
hot path for inference and training and go through per-level `RegionReader`s instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.io.tiles import RegionReader, TileCache, TileDecodeError

logger = logging.getLogger(__name__)


class SlideError(RckdError):
    """A slide that cannot be opened or read, explained in one sentence."""


class DamagedSlideError(SlideError):
    """A slide that opened but holds a tile or image that cannot be decoded."""


class LazyImages(Mapping):
    """Associated images (thumbnail, label, macro) decoded only when first asked for."""

    def __init__(self, loaders: Mapping[str, Callable[[], np.ndarray]], source: str = "slide"):
        self._loaders = dict(loaders)
        self._loaded: dict[str, np.ndarray] = {}
        self._source = source

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._loaded:
            load = self._loaders[name]
            try:
                self._loaded[name] = load()
            except Exception as error:  # any codec or layout error: the file is damaged
                raise DamagedSlideError(
                    f"{self._source} is damaged: its {name} image could not be decoded "
                    f"({type(error).__name__}: {error}); copy or export the slide again."
                ) from error
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


class Slide:
    """An open slide. Build it with `open_slide`; close it (or use ``with``) when done."""

    def __init__(
        self,
        path: Path,
        levels: Sequence,
        readers: Sequence[RegionReader],
        *,
        mpp: float | None,
        magnification: float | None,
        vendor: str,
        compression: str,
        tile_shape: tuple[int, int],
        associated: Mapping[str, np.ndarray] | None = None,
        closers: Sequence[Callable[[], None]] = (),
        cache: TileCache | None = None,
    ):
        self.path = Path(path)
        self.levels = list(levels)
        self._readers = list(readers)
        self.mpp = mpp
        self.magnification = magnification
        self.vendor = vendor
        self.compression = compression
        self.tile_shape = tile_shape
        self.associated = associated if associated is not None else LazyImages({})
        self._closers = list(closers)
        self._cache = cache
        height, width = self.shape
        # OpenSlide's convention: the mean of the two axes' ratios
        self.downsamples = [
            (height / level.shape[0] + width / level.shape[1]) / 2 for level in self.levels
        ]

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 (height, width) in pixels."""
        return tuple(self.levels[0].shape[:2])

    def level_mpp(self, level: int) -> float | None:
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    def read_region(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        """RGB uint8 ``height``×``width`` from ``level`` at (y, x) in that level's pixels.

        Only the tiles that overlap are decoded; outside the slide is white (255). A tile
        that cannot be decoded raises `DamagedSlideError` naming the file, level and tile.
        """
        if not 0 <= level < len(self.levels):
            raise SlideError(
                f"{self.path.name} has levels 0..{len(self.levels) - 1}; level {level} does not exist."
            )
        if height <= 0 or width <= 0:
            raise SlideError(f"region size must be positive, got {height}x{width}.")
        y, x = int(y), int(x)
        level_height, level_width = self.levels[level].shape[:2]
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + height, level_height), min(x + width, level_width)
        if (y0, x0, y1, x1) == (y, x, y + height, x + width):
            return self._read(level, y0, x0, y1, x1)
        out = np.full((height, width, 3), 255, np.uint8)
        if y1 > y0 and x1 > x0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read(level, y0, x0, y1, x1)
        return out

    def _read(self, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        try:
            return self._readers[level].read(y0, x0, y1, x1)
        except TileDecodeError as error:
            raise DamagedSlideError(
                f"{self.path.name} is damaged: {error} could not be decoded ({error.reason}); "
                "copy or export the slide again."
            ) from error

    def best_level_for(self, downsample: float) -> int:
        """The coarsest level that is not coarser than ``downsample`` (1% tolerance)."""
        candidates = [i for i, d in enumerate(self.downsamples) if d <= downsample * 1.01]
        return max(candidates, key=lambda i: self.downsamples[i]) if candidates else 0

    def read_at_mpp(self, y: float, x: float, size: int, mpp: float) -> np.ndarray:
        """A ``size``×``size`` RGB tile at ``mpp`` µm/px whose top-left is (y, x) in level-0 pixels."""
        if self.mpp is None:
            raise SlideError(
                f"{self.path.name} does not record its pixel size, so a tile at {mpp} µm/px "
                "cannot be read; pass the scanner's value, e.g. open_slide(path, mpp=0.5)."
            )
        if mpp <= 0 or size <= 0:
            raise SlideError(f"read_at_mpp needs a positive mpp and size, got {mpp} and {size}.")
        factor = mpp / self.mpp  # level-0 pixels per output pixel
        level = self.best_level_for(factor)
        ds_y = self.shape[0] / self.levels[level].shape[0]
        ds_x = self.shape[1] / self.levels[level].shape[1]
        top, left = y / ds_y, x / ds_x  # in level pixels, fractional
        span_y, span_x = size * factor / ds_y, size * factor / ds_x
        if _is_whole(top, left) and math.isclose(span_y, size) and math.isclose(span_x, size):
            return self.read_region(level, round(top), round(left), size, size)
        y0, x0 = math.floor(top) - 1, math.floor(left) - 1  # one pixel margin for the filter
        height = math.ceil(top + span_y) + 1 - y0
        width = math.ceil(left + span_x) + 1 - x0
        region = self.read_region(level, y0, x0, height, width)
        return _resample(region, (left - x0, top - y0, left - x0 + span_x, top - y0 + span_y), size)

    def clear_cache(self) -> None:
        """Drop decoded tiles (the cache is bounded anyway; this gives the memory back now)."""
        if self._cache is not None:
            self._cache.clear()

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Slide({self.path.name!r}, shape={self.shape}, levels={len(self.levels)}, "
            f"mpp={self.mpp}, vendor={self.vendor!r})"
        )


def check_decodes(reader: RegionReader, path: Path) -> None:
    """Decode one pixel now, so a bad codec fails at open in one sentence, not later in a view."""
    try:
        reader.read(0, 0, 1, 1)
    except TileDecodeError as error:
        raise SlideError(
            f"{path.name} cannot be decoded ({error.reason}, {error}); the file may be "
            "corrupt or use a compression imagecodecs does not support."
        ) from error


def _is_whole(*values: float) -> bool:
    return all(abs(v - round(v)) < 1e-6 for v in values)


def _resample(region: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Lanczos resampling of a sub-pixel ``box`` (left, top, right, bottom) to size×size.

    Pillow filters over the whole source footprint when shrinking, so there is no aliasing.
    """
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(region))
    resized = image.resize((size, size), Image.Resampling.LANCZOS, box=box)
    return np.asarray(resized)
