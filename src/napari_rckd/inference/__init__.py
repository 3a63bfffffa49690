"""Headless inference engine: tile grids, seam-free instance stitching, viewport scheduling,
tile-sparse multiscale result stores and a bounded result cache. No Qt, no napari."""

from napari_rckd.inference.cache import ResultCache
from napari_rckd.inference.scheduler import (
    NUCLEI_MIN_SCREEN_PX,
    ModelTiles,
    Plan,
    TileRequest,
    ViewportScheduler,
    screen_pixels_per_model_pixel,
    view_from_corner_pixels,
)
from napari_rckd.inference.stitching import label_dtype, stitch_instances
from napari_rckd.inference.store import ResultStore, open_root
from napari_rckd.inference.tiling import Box, TileGrid

__all__ = [
    "NUCLEI_MIN_SCREEN_PX",
    "Box",
    "ModelTiles",
    "Plan",
    "ResultCache",
    "ResultStore",
    "TileGrid",
    "TileRequest",
    "ViewportScheduler",
    "label_dtype",
    "open_root",
    "screen_pixels_per_model_pixel",
    "stitch_instances",
    "view_from_corner_pixels",
]
