"""Which tiles to compute for what is on screen, in which order, and which requests are stale.

napari tells a multiscale layer's view as ``corner_pixels`` (inclusive min/max indices in the
coordinates of ``data_level``); multiplying by ``downsample_factors[data_level]`` gives level 0.
Each model tiles the slide at its own mpp (``TileGrid``), so one view asks for fine nuclei tiles
and coarse subtype tiles at once. Tiles nearest the view's centre come first, background tiles
are skipped, and every camera move starts a new generation: a worker checks ``is_stale`` before
and after computing a tile and drops requests from older generations. A preview model (a fast
stand-in, ``ModelTiles.preview_of``) is planned before all others, and only where the model it
stands in for is planned and not yet done.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.inference.tiling import Box, TileGrid

# Below this many screen pixels per model pixel nuclei are specks: 0.5 shows a 10 µm nucleus
# computed at 0.5 µm/px as 10 screen pixels.
NUCLEI_MIN_SCREEN_PX = 0.5


class TissueLike(Protocol):
    """What the scheduler needs from a tissue mask (``napari_rckd.io.tissue.TissueMask``)."""

    def fraction(self, y: float, x: float, height: float, width: float) -> float: ...


def view_from_corner_pixels(
    corner_pixels, data_level: int, downsample_factors, slide_shape: tuple[int, int]
) -> Box:
    """The level-0 box a multiscale layer shows, from its ``corner_pixels`` at ``data_level``.

    The last two axes are taken as (y, x), so an RGB layer's 2×2 corners and an nD layer's
    corners both work; the box is clipped to the slide's level-0 ``slide_shape``.
    """
    corners = np.asarray(corner_pixels, dtype=np.float64)
    factors = np.asarray(downsample_factors, dtype=np.float64)
    if corners.ndim != 2 or corners.shape[0] != 2 or corners.shape[1] < 2:
        raise RckdError(f"corner_pixels must be a 2×ndim array, got shape {corners.shape}.")
    if not 0 <= data_level < len(factors):
        raise RckdError(f"data_level {data_level} is not one of the {len(factors)} pyramid levels.")
    fy, fx = factors[data_level][-2:]
    (y0, x0), (y1, x1) = corners[0, -2:], corners[1, -2:] + 1  # max corner is inclusive
    box = Box(y0 * fy, x0 * fx, y1 * fy, x1 * fx)
    return box.intersect(Box(0, 0, slide_shape[0], slide_shape[1]))


def screen_pixels_per_model_pixel(
    zoom: float, model_mpp: float, um_per_world_unit: float = 1.0
) -> float:
    """How big a model pixel looks: napari's ``camera.zoom`` is screen pixels per world unit.

    With slide layers scaled in µm (the plugin's convention) ``um_per_world_unit`` is 1; with
    unscaled layers it is the slide's level-0 mpp.
    """
    return zoom * model_mpp / um_per_world_unit


@dataclass(frozen=True)
class ModelTiles:
    """A model's grid over the slide and how far in the view must be for it to be useful."""

    name: str
    grid: TileGrid
    min_screen_px: float = 0.0  # screen pixels per model pixel; NUCLEI_MIN_SCREEN_PX for nuclei
    preview_of: str | None = None  # planned first, only with that model and where it is not done


@dataclass(frozen=True)
class TileRequest:
    model: str
    row: int
    col: int
    generation: int
    distance: float  # level-0 pixels from the tile core's centre to the view's centre


@dataclass
class Plan:
    """The requests for one view, nearest first, and a short note per model left out."""

    generation: int
    requests: list[TileRequest]
    skipped: dict[str, str] = field(default_factory=dict)


class ViewportScheduler:
    """Plans tile requests per view and tells a worker which requests a camera move made stale."""

    def __init__(
        self,
        models: Sequence[ModelTiles],
        tissue: TissueLike | None = None,
        min_tissue: float = 0.05,
    ):
        if len({m.name for m in models}) != len(models):
            raise RckdError(f"model names must be unique, got {[m.name for m in models]}.")
        names = {m.name for m in models}
        for model in models:
            if model.preview_of is not None and model.preview_of not in names:
                raise RckdError(
                    f"{model.name} previews {model.preview_of}, which is not computed; add that "
                    "model or leave the preview out."
                )
        self.models = list(models)
        self.tissue = tissue
        self.min_tissue = min_tissue
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    def plan(
        self,
        view: Box,
        screen_px_per_level0_px: float,
        is_done: Callable[[str, int, int], bool] | None = None,
    ) -> Plan:
        """Start a new generation and list the tiles of every model that ``view`` (level 0) needs.

        ``screen_px_per_level0_px`` is ``camera.zoom * slide_mpp`` with layers scaled in µm;
        ``is_done(model, row, col)`` lets the caller leave out tiles already computed.
        """
        with self._lock:
            self._generation += 1
            generation = self._generation
        plan = Plan(generation, [])
        for model in self.models:
            if model.preview_of is None:
                self._plan_model(plan, model, view, screen_px_per_level0_px, is_done)
        for model in self.models:  # a preview only where its model will replace it
            if model.preview_of is not None and model.preview_of not in plan.skipped:
                done = self._replaced(model.preview_of, is_done)
                self._plan_model(plan, model, view, screen_px_per_level0_px, done)
        order = {m.name: i for i, m in enumerate(self.models)}
        first = {m.name: m.preview_of is None for m in self.models}  # previews: False, first
        plan.requests.sort(key=lambda r: (first[r.model], r.distance, order[r.model], r.row, r.col))
        return plan

    def _plan_model(self, plan: Plan, model: ModelTiles, view: Box, screen_px: float, is_done):
        """Add ``model``'s tiles that ``view`` needs to ``plan``, or the reason it is left out."""
        grid, (cy, cx) = model.grid, view.center
        on_screen = screen_px * grid.level0_per_px
        if on_screen < model.min_screen_px:
            plan.skipped[model.name] = (
                f"zoom in to see {model.name}: a model pixel is {on_screen:.2g} screen pixels, "
                f"it needs {model.min_screen_px:g}"
            )
            return
        for row, col in grid.tiles_in(grid.to_grid(view)):
            core = grid.to_level0(grid.core(row, col))
            if (
                self.tissue is not None
                and self.tissue.fraction(core.y0, core.x0, core.height, core.width)
                < self.min_tissue
            ):
                continue
            if is_done is not None and is_done(model.name, row, col):
                continue
            ty, tx = core.center
            distance = math.hypot(ty - cy, tx - cx)
            plan.requests.append(TileRequest(model.name, row, col, plan.generation, distance))

    def _replaced(self, exact: str, is_done):
        """``is_done`` for a preview of ``exact``: also done where every ``exact`` tile under its
        core is done (the preview would be hidden at once)."""
        if is_done is None:
            return None
        grid = next(m.grid for m in self.models if m.name == exact)
        previews = {m.name: m.grid for m in self.models if m.preview_of == exact}

        def done(name: str, row: int, col: int) -> bool:
            if is_done(name, row, col):
                return True
            core = previews[name].to_level0(previews[name].core(row, col))
            under = grid.tiles_in(grid.to_grid(core))
            return bool(under) and all(is_done(exact, r, c) for r, c in under)

        return done

    def is_stale(self, request: TileRequest) -> bool:
        """True once a newer view was planned: the worker should drop the request."""
        return request.generation != self._generation

    def current(self, requests: Sequence[TileRequest]) -> list[TileRequest]:
        """The requests still wanted, in their order."""
        return [r for r in requests if not self.is_stale(r)]
