"""Whole-slide runs: equal to the union of viewport results, cancellable, re-open over the slide."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_rckd.errors import RckdError
from napari_rckd.inference.predictor import Predictor
from napari_rckd.inference.sources import NucleiSource, RegionSource
from napari_rckd.inference.store import open_root
from napari_rckd.inference.tiling import Box
from napari_rckd.inference.wholeslide import create_output, open_results, run_whole_slide
from napari_rckd.io.tissue import TissueMask, detect_tissue
from test_predict import checkpoints, crop  # noqa: F401  (fixtures)


def test_whole_slide_equals_union_of_viewports(tmp_path, crop, checkpoints):  # noqa: F811
    sources = [NucleiSource("classical"), RegionSource(checkpoints["region"])]
    tissue = detect_tissue(crop)
    target = create_output(tmp_path / "crop.zarr", crop, sources)
    with Predictor(crop, sources, open_root(target), tissue=tissue) as whole:
        steps = list(run_whole_slide(whole, tissue))
        assert (
            steps[-1].done
            == steps[-1].total
            == len(whole.tiles_done("nuclei")) + len(whole.tiles_done("region"))
        )
    with Predictor(crop, sources, tissue=tissue) as viewer:
        for view in (Box(0, 0, 768, 400), Box(0, 380, 768, 768)):  # pan left, then right
            viewer.compute(viewer.plan_view(view, screen_px_per_level0_px=1.0).requests)
        assert viewer.tiles_done("nuclei") == whole.tiles_done("nuclei")
    results = open_results(target)
    # every result, nuclei labels included (seam conflicts are settled whatever the tile order),
    # is the same at every pyramid level
    for name in ("nuclei_labels", "nuclei_prob", "region_prob", "region_mask"):
        for level, array in enumerate(results[name].levels):
            box = Box(0, 0, *array.shape[-2:])
            np.testing.assert_array_equal(
                results[name].read(box, level), viewer.stores[name].read(box, level)
            )
    labels = results["nuclei_labels"]
    assert len(np.unique(labels.read(Box(0, 0, *labels.shape)))) > 100  # real nuclei, not empty


def test_results_reopen_over_the_slide(tmp_path, crop, checkpoints):  # noqa: F811
    source = RegionSource(checkpoints["region"])
    target = create_output(tmp_path / "r.zarr", crop, [source])
    with Predictor(crop, [source], open_root(target)) as predictor:
        list(run_whole_slide(predictor, None))
    store = open_results(target)["region_mask"]
    assert store.scale_um() == pytest.approx(2.0)
    assert store.translate_um() == pytest.approx(0.5 * (2.0 - 0.499))
    ome = store.group.attrs["ome"]["multiscales"][0]
    assert ome["axes"][0]["unit"] == "micrometer"
    assert ome["datasets"][1]["coordinateTransformations"][0]["scale"] == [4.0, 4.0]
    levels = store.dask_levels()
    assert levels[0].shape == (192, 192) and levels[0].compute().min() >= 1
    assert open_root(target, mode="r").attrs["napari_rckd_slide"]["mpp"] == 0.499


def test_cancel_stops_after_the_batch_in_flight(crop, checkpoints):  # noqa: F811
    stop = threading.Event()
    with Predictor(crop, [RegionSource(checkpoints["region"])], batch_size=2) as predictor:
        progress = []
        for step in run_whole_slide(predictor, None, stop=stop):
            progress.append(step)
            stop.set()
        assert progress[-1].cancelled and progress[-1].done == 2 < progress[-1].total
        assert len(predictor.tiles_done("region")) == 2


def test_no_tissue_is_an_error(crop):  # noqa: F811
    empty = TissueMask(np.zeros((4, 4), bool), downsample=192)
    with (
        Predictor(crop, [NucleiSource("classical")]) as predictor,
        pytest.raises(RckdError, match="no tissue"),
    ):
        next(run_whole_slide(predictor, empty))
    with pytest.raises(RckdError, match="no whole-slide results"):
        open_results(crop.path.parent / "missing.zarr")


def test_whole_slide_runs_use_larger_dense_windows_without_seams(tmp_path, crop, checkpoints):  # noqa: F811
    from napari_rckd.inference.analysis import Analysis
    from napari_rckd.inference.sources import WHOLE_SLIDE_WINDOW

    live = RegionSource(checkpoints["student"], "cpu")  # a dense model at 0.5 µm/px, 96 px
    wide = live.for_whole_slide()
    assert (live.window, wide.window) == (96, WHOLE_SLIDE_WINDOW)
    assert wide.halo == live.halo and wide.core == WHOLE_SLIDE_WINDOW - 2 * live.halo
    assert (wide.core / wide.window) ** 2 >= 0.75 > (live.core / live.window) ** 2
    assert wide.identity != live.identity and wide.runner is live.runner  # one model, two keys
    assert NucleiSource("classical").for_whole_slide().window == NucleiSource("classical").window
    analysis = Analysis(crop, sources=[live])
    list(analysis.run_whole_slide(tmp_path / "wide.zarr"))
    grid = analysis.results.grids["region"]
    assert grid.tile == wide.core and grid.halo == live.halo
    prob = open_results(tmp_path / "wide.zarr")["region_prob"]
    values = prob.read(Box(0, 0, *prob.shape))
    # the cores tile the slide: every pixel written (a sigmoid is never exactly 0), no seams
    assert len(analysis.results.tiles_done("region")) == 4 and (values > 0).all()
