"""Viewport scheduling on a real slide's pyramid: coverage, centre first, stale, tissue, zoom."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.inference.scheduler import (
    NUCLEI_MIN_SCREEN_PX,
    ModelTiles,
    ViewportScheduler,
    screen_pixels_per_model_pixel,
    view_from_corner_pixels,
)
from napari_rckd.inference.tiling import Box, TileGrid


@pytest.fixture(scope="module")
def slide():
    from napari_rckd.io import open_slide

    with open_slide(shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif")) as slide:
        yield slide


def napari_downsample_factors(slide) -> np.ndarray:
    """What a napari multiscale image layer reports: level-0 shape over each level's shape."""
    shapes = np.array([level.shape[:2] for level in slide.levels], np.float64)
    return shapes[0] / shapes


def models_for(slide) -> list[ModelTiles]:
    nuclei = TileGrid.for_slide(slide.shape, slide.mpp, 0.5, tile=256, halo=32)
    subtype = TileGrid.for_slide(slide.shape, slide.mpp, 2.0, tile=224)
    return [ModelTiles("nuclei", nuclei, NUCLEI_MIN_SCREEN_PX), ModelTiles("subtype", subtype)]


def test_corner_pixels_at_a_coarse_level_map_to_level0(slide):
    factors = napari_downsample_factors(slide)
    assert len(factors) == 4
    view = view_from_corner_pixels([[50, 40], [300, 250]], 2, factors, slide.shape)
    assert view.y0 == pytest.approx(50 * factors[2, 0]) and view.x1 == pytest.approx(
        251 * factors[2, 1]
    )
    # an nD layer's leading axes are ignored; the box is clipped to the slide
    whole = view_from_corner_pixels(
        [[0, 0, 0], [0, 370, 277]], 3, np.c_[np.ones(4), factors], slide.shape
    )
    assert whole == Box(0, 0, *slide.shape)
    with pytest.raises(RckdError, match="data_level"):
        view_from_corner_pixels([[0, 0], [10, 10]], 4, factors, slide.shape)


def test_requests_cover_the_view_centre_first_per_model(slide):
    factors = napari_downsample_factors(slide)
    view = view_from_corner_pixels([[50, 40], [300, 250]], 2, factors, slide.shape)
    scheduler = ViewportScheduler(models_for(slide))
    plan = scheduler.plan(view, screen_px_per_level0_px=1.0)
    assert plan.skipped == {}
    distances = [r.distance for r in plan.requests]
    assert distances == sorted(distances)
    for model in scheduler.models:
        grid = model.grid
        mine = [(r.row, r.col) for r in plan.requests if r.model == model.name]
        covered = np.zeros(slide.shape, bool)
        for row, col in mine:
            core = grid.to_level0(grid.core(row, col))
            assert not core.intersect(view).is_empty()  # nothing off screen
            covered[Box(*np.round(core)).slices()] = True
        assert covered[Box(*np.round(view)).slices()].all()  # everything on screen
        first = grid.to_level0(grid.core(*mine[0]))
        assert first.y0 <= view.center[0] < first.y1 and first.x0 <= view.center[1] < first.x1
    assert {r.model for r in plan.requests} == {"nuclei", "subtype"}
    # level 0 y 200..1204, x 160..1004 at 256 px tiles: rows 0-4, cols 0-3
    assert len([r for r in plan.requests if r.model == "nuclei"]) == 5 * 4


def test_a_camera_move_makes_old_requests_stale(slide):
    scheduler = ViewportScheduler(models_for(slide))
    first = scheduler.plan(Box(0, 0, 600, 600), 1.0)
    assert not any(scheduler.is_stale(r) for r in first.requests)
    second = scheduler.plan(Box(1200, 900, 1800, 1500), 1.0)
    assert second.generation == first.generation + 1
    assert all(scheduler.is_stale(r) for r in first.requests)
    assert scheduler.current(first.requests + second.requests) == second.requests
    # tiles already computed are not asked for again
    done = {(r.model, r.row, r.col) for r in second.requests[:3]}
    third = scheduler.plan(Box(1200, 900, 1800, 1500), 1.0, is_done=lambda *key: key in done)
    assert len(third.requests) == len(second.requests) - 3


def test_background_tiles_are_skipped_with_the_slide_tissue_mask(slide):
    from napari_rckd.io.tissue import detect_tissue

    tissue = detect_tissue(slide)
    models = models_for(slide)
    everything = ViewportScheduler(models).plan(Box(0, 0, *slide.shape), 1.0).requests
    on_tissue = ViewportScheduler(models, tissue=tissue, min_tissue=0.05).plan(
        Box(0, 0, *slide.shape), 1.0
    )
    assert 0 < len(on_tissue.requests) < len(everything)
    grids = {m.name: m.grid for m in models}
    for request in on_tissue.requests:
        core = grids[request.model].to_level0(grids[request.model].core(request.row, request.col))
        assert tissue.fraction(core.y0, core.x0, core.height, core.width) >= 0.05


def test_zoomed_out_the_nuclei_wait_while_the_subtype_fills_in(slide):
    scheduler = ViewportScheduler(models_for(slide))
    # the whole slide on a small screen: napari zoom 0.1 screen px per µm with layers in µm
    zoom = 0.1
    plan = scheduler.plan(Box(0, 0, *slide.shape), screen_px_per_level0_px=zoom * slide.mpp)
    assert set(plan.skipped) == {"nuclei"} and "zoom in" in plan.skipped["nuclei"]
    assert plan.requests and {r.model for r in plan.requests} == {"subtype"}
    assert screen_pixels_per_model_pixel(zoom, 0.5) == pytest.approx(0.05)
    zoomed_in = scheduler.plan(Box(0, 0, 500, 500), screen_px_per_level0_px=2.0 * slide.mpp)
    assert zoomed_in.skipped == {} and zoomed_in.requests[0].model == "nuclei"
    with pytest.raises(RckdError, match="unique"):
        ViewportScheduler([ModelTiles("a", TileGrid((9, 9), 3))] * 2)


def test_a_preview_comes_first_and_only_where_its_model_is_not_done(slide):
    fine = TileGrid.for_slide(slide.shape, slide.mpp, 0.25, tile=256, halo=32)
    quick = TileGrid.for_slide(slide.shape, slide.mpp, 0.5, tile=256, halo=32)
    models = [
        ModelTiles("nuclei", fine, NUCLEI_MIN_SCREEN_PX),
        ModelTiles("quick", quick, NUCLEI_MIN_SCREEN_PX, preview_of="nuclei"),
    ]
    scheduler = ViewportScheduler(models)
    view = Box(500, 700, 1500, 2200)
    plan = scheduler.plan(view, screen_px_per_level0_px=1.0)
    kinds = [r.model for r in plan.requests]
    first_exact = kinds.index("nuclei")
    assert first_exact > 0 and set(kinds[:first_exact]) == {"quick"}  # the whole preview first
    assert "quick" not in kinds[first_exact:]

    # where every fine tile under a preview tile is done, that preview tile is not asked for
    row, col = next((r.row, r.col) for r in plan.requests if r.model == "quick")
    core = quick.to_level0(quick.core(row, col))
    under = set(fine.tiles_in(fine.to_grid(core)))
    assert len(under) >= 4

    def done(name, r, c):
        return name == "nuclei" and (r, c) in under

    again = scheduler.plan(view, 1.0, done)
    assert ("quick", row, col) not in {(r.model, r.row, r.col) for r in again.requests}
    assert len([r for r in again.requests if r.model == "quick"]) == kinds.count("quick") - 1

    # zoomed out the fine model waits, and so does its preview (nothing would replace it)
    far = scheduler.plan(view, screen_px_per_level0_px=0.7)  # a quick pixel: 0.7 screen px
    assert "nuclei" in far.skipped and not far.requests and "quick" not in far.skipped
    with pytest.raises(RckdError, match="quick previews missing, which is not computed"):
        ViewportScheduler([ModelTiles("quick", quick, preview_of="missing")])
