"""Live results are bounded: past the budget, tiles that left the view are evicted, and a view
that comes back gets the same nuclei as the first time."""

from __future__ import annotations

import numpy as np

from napari_rckd.inference.predictor import Predictor
from napari_rckd.inference.sources import NucleiSource
from napari_rckd.inference.tiling import Box
from test_predict import crop  # noqa: F401  (fixtures)


def _column(predictor, col: int) -> Box:
    """The level-0 box of one column of nuclei tiles' cores."""
    grid = predictor.grids["nuclei"]
    top = grid.to_level0(grid.core(0, col))
    bottom = grid.to_level0(grid.core(grid.rows - 1, col))
    return Box(top.y0, top.x0, bottom.y1, bottom.x1)


def _show(predictor, view: Box) -> int:
    return predictor.compute(predictor.plan_view(view, 1.0).requests)


def test_tiles_that_left_the_view_are_evicted_and_come_back_the_same(crop):  # noqa: F811
    with Predictor(crop, [NucleiSource("classical")], batch_size=1) as unbounded:
        left = _column(unbounded, 0)
        _show(unbounded, left)
        one_column = unbounded.results_nbytes
        labels = unbounded.stores["nuclei_labels"]
        first = labels.read(labels_box := Box(0, 0, *labels.shape))
        assert one_column > 0 and (first > 0).sum() > 1000

    budget = int(1.3 * one_column)
    with Predictor(crop, [NucleiSource("classical")], memory_budget=budget) as bounded:
        grid = bounded.grids["nuclei"]
        assert _show(bounded, left) == grid.rows
        assert _show(bounded, _column(bounded, grid.cols - 1)) == grid.rows  # the far column
        assert bounded.results_nbytes <= budget
        evicted = [row for row in range(grid.rows) if not bounded.is_done("nuclei", row, 0)]
        assert evicted  # the left column left memory to make room
        labels = bounded.stores["nuclei_labels"]
        core_left = Box(0, 0, labels.shape[0], grid.tile)
        assert (
            labels.read(core_left)[evicted[0] * grid.tile : (evicted[0] + 1) * grid.tile] == 0
        ).all()
        assert _show(bounded, left) == len(evicted)  # recomputed (here from the result cache)
        again = labels.read(labels_box)
        np.testing.assert_array_equal(again[:, : grid.tile], first[:, : grid.tile])


def test_the_view_on_screen_is_never_evicted(crop):  # noqa: F811
    with Predictor(crop, [NucleiSource("classical")], memory_budget=1) as predictor:
        grid = predictor.grids["nuclei"]
        assert _show(predictor, _column(predictor, 0)) == grid.rows
        assert all(predictor.is_done("nuclei", row, 0) for row in range(grid.rows))


def test_freed_memory_goes_back_to_the_os_on_glibc():
    import platform
    import sys

    from napari_rckd.inference.native_memory import release_free_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert release_free_memory() is glibc
