"""A grid of square tiles over a slide resampled to a model's resolution.

A model sees the slide at its own mpp, so the grid lives in "model pixels": level-0 pixels
scaled by ``slide_mpp / model_mpp``. Each tile has a *core* (the part whose results are kept;
cores tile the slide without overlap) and a *window* (the core plus a ``halo`` of context on
every side, always full size so a model gets a fixed input shape). Results from the halo are
thrown away for dense outputs, and used to see whole nuclei for instance outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from napari_rckd.errors import RckdError


class Box(NamedTuple):
    """A half-open rectangle ``[y0, y1) × [x0, x1)`` in some pixel space."""

    y0: float
    x0: float
    y1: float
    x1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def center(self) -> tuple[float, float]:
        return ((self.y0 + self.y1) / 2, (self.x0 + self.x1) / 2)

    def is_empty(self) -> bool:
        return self.y1 <= self.y0 or self.x1 <= self.x0

    def intersect(self, other: Box) -> Box:
        return Box(
            max(self.y0, other.y0),
            max(self.x0, other.x0),
            min(self.y1, other.y1),
            min(self.x1, other.x1),
        )

    def scaled(self, factor: float) -> Box:
        return Box(self.y0 * factor, self.x0 * factor, self.y1 * factor, self.x1 * factor)

    def slices(self) -> tuple[slice, slice]:
        return (slice(int(self.y0), int(self.y1)), slice(int(self.x0), int(self.x1)))


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile``×``tile`` model pixels (plus ``halo``) over an image of ``shape``.

    ``level0_per_px`` is how many level-0 slide pixels one model pixel spans
    (``model_mpp / slide_mpp``), so grid boxes convert to slide coordinates and back.
    """

    shape: tuple[int, int]
    tile: int
    halo: int = 0
    level0_per_px: float = 1.0

    def __post_init__(self):
        if self.tile <= 0 or self.halo < 0:
            raise RckdError(
                f"a tile grid needs tile > 0 and halo >= 0, got tile={self.tile}, halo={self.halo}; "
                "pick the model's input size minus twice the halo as the tile."
            )
        if min(self.shape) <= 0 or self.level0_per_px <= 0:
            raise RckdError(
                f"a tile grid needs a non-empty image and a positive scale, got {self}."
            )

    @classmethod
    def for_slide(
        cls, slide_shape: tuple[int, int], slide_mpp: float, mpp: float, tile: int, halo: int = 0
    ) -> TileGrid:
        """The grid over a level-0 ``slide_shape`` (height, width) seen at ``mpp`` µm/px."""
        if not slide_mpp or slide_mpp <= 0 or mpp <= 0:
            raise RckdError(
                f"cannot tile at {mpp} µm/px a slide whose pixel size is {slide_mpp!r}; "
                "open the slide with its mpp (open_slide(path, mpp=...))."
            )
        factor = mpp / slide_mpp
        shape = (math.ceil(slide_shape[0] / factor), math.ceil(slide_shape[1] / factor))
        return cls(shape=shape, tile=tile, halo=halo, level0_per_px=factor)

    @property
    def rows(self) -> int:
        return math.ceil(self.shape[0] / self.tile)

    @property
    def cols(self) -> int:
        return math.ceil(self.shape[1] / self.tile)

    @property
    def window_size(self) -> int:
        return self.tile + 2 * self.halo

    def __len__(self) -> int:
        return self.rows * self.cols

    def index(self, row: int, col: int) -> int:
        """Row-major tile number, stable for a given grid (used for instance id ranges)."""
        return row * self.cols + col

    def extent(self) -> Box:
        return Box(0, 0, self.shape[0], self.shape[1])

    def core(self, row: int, col: int) -> Box:
        """The tile's core in grid pixels, clipped at the image's bottom and right edges."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise RckdError(f"tile ({row}, {col}) is outside the {self.rows}×{self.cols} grid.")
        y0, x0 = row * self.tile, col * self.tile
        return Box(y0, x0, y0 + self.tile, x0 + self.tile).intersect(self.extent())

    def window(self, row: int, col: int) -> Box:
        """The full-size model input around the core; it may reach outside the image."""
        y0, x0 = row * self.tile - self.halo, col * self.tile - self.halo
        return Box(y0, x0, y0 + self.window_size, x0 + self.window_size)

    def core_in_window(self, row: int, col: int) -> Box:
        """Where the core lies inside the window array (window coordinates)."""
        core, window = self.core(row, col), self.window(row, col)
        return Box(
            core.y0 - window.y0, core.x0 - window.x0, core.y1 - window.y0, core.x1 - window.x0
        )

    def crop_core(self, window_array: np.ndarray, row: int, col: int) -> np.ndarray:
        """The core of a per-window result (last two axes are y, x): halo results are dropped."""
        return window_array[(..., *self.core_in_window(row, col).slices())]

    def window_level0(self, row: int, col: int) -> tuple[float, float]:
        """Level-0 top-left of the window, as ``Slide.read_at_mpp(y, x, window_size, mpp)`` takes it."""
        window = self.window(row, col)
        return (window.y0 * self.level0_per_px, window.x0 * self.level0_per_px)

    def to_grid(self, box_level0: Box) -> Box:
        return box_level0.scaled(1 / self.level0_per_px)

    def to_level0(self, box: Box) -> Box:
        return box.scaled(self.level0_per_px)

    def tiles_in(self, box: Box) -> list[tuple[int, int]]:
        """(row, col) of every tile whose core intersects ``box`` (grid pixels), row-major."""
        box = box.intersect(self.extent())
        if box.is_empty():
            return []
        r0, c0 = int(box.y0 // self.tile), int(box.x0 // self.tile)
        r1 = min(self.rows, math.ceil(box.y1 / self.tile))
        c1 = min(self.cols, math.ceil(box.x1 / self.tile))
        return [(r, c) for r in range(r0, r1) for c in range(c0, c1)]
