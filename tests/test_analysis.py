"""The engine API every front end shares: one Analysis of a real slide crop serves live
prediction, a whole-slide run and exports; bad choices are one sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_rckd.errors import RckdError
from napari_rckd.inference.analysis import Analysis
from napari_rckd.inference.tiling import Box
from napari_rckd.inference.wholeslide import open_results
from test_predict import checkpoints, crop  # noqa: F401  (fixtures)


def test_live_then_whole_slide_then_export(tmp_path, crop, checkpoints):  # noqa: F811
    analysis = Analysis(crop, {"nuclei": "otsu", "region": checkpoints["region"]}, "cpu")
    assert [s.name for s in analysis.sources] == ["nuclei", "region"]
    with pytest.raises(RckdError, match="nothing to export yet"):
        analysis.export(tmp_path / "early")

    live = analysis.live()
    plan = live.plan_view(Box(0, 0, 512, 512), screen_px_per_level0_px=1.0)
    assert live.compute([(r.model, r.row, r.col) for r in plan.requests]) > 0
    files = analysis.export(tmp_path / "live" / "crop", ["geojson"])
    assert {f.name for f in files} == {"crop.nuclei.geojson", "crop.region.geojson"}
    assert json.loads(files[0].read_text())["features"]

    run = analysis.run_whole_slide(tmp_path / "crop.zarr")
    progress = list(iter(lambda: next(run, None), None))
    assert progress[-1].done == progress[-1].total > 0 and not progress[-1].cancelled
    assert analysis.results is not live  # exports now read the whole-slide results
    assert {"nuclei_labels", "region_mask"} <= set(open_results(tmp_path / "crop.zarr"))
    files = analysis.export(tmp_path / "whole" / "crop")  # default: GeoJSON and CSV
    names = sorted(f.name for f in files)
    assert names == ["crop.nuclei.csv", "crop.nuclei.geojson", "crop.region.geojson"]
    rows = (tmp_path / "whole" / "crop.nuclei.csv").read_text().splitlines()
    assert rows[0].startswith("id,centroid_x_um") and len(rows) > 20

    csv = tmp_path / "whole" / "crop.nuclei.csv"
    before = csv.read_bytes()
    with pytest.raises(RckdError, match="already holds results of crop .crop.nuclei.csv"):
        analysis.export(tmp_path / "whole" / "crop", ["csv"])
    assert csv.read_bytes() == before  # nothing replaced unasked
    analysis.export(tmp_path / "whole" / "crop", ["ome-tiff"])  # a new format: the rest stay
    analysis.export(tmp_path / "whole" / "crop", ["csv"], overwrite=True)
    names = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert names == [
        "crop.nuclei.csv",
        "crop.nuclei.geojson",
        "crop.nuclei.ome.tif",
        "crop.region.geojson",
        "crop.region.ome.tif",
    ]  # fmt: skip  (and no staging folder left behind)


def test_bad_choices_are_one_sentence(crop, tmp_path):  # noqa: F811
    with pytest.raises(RckdError, match="nothing to predict"):
        Analysis(crop, {"nuclei": None}, "cpu")
    with pytest.raises(RckdError, match="kind cells is unknown"):
        Analysis(crop, {"cells": "otsu"}, "cpu")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(RckdError, match="broken.safetensors"):
        Analysis(crop, {"subtype": broken}, "cpu")
    analysis = Analysis(crop, {"nuclei": "otsu"}, "cpu")
    analysis.live()
    with pytest.raises(RckdError, match="export pdf is unknown"):
        analysis.export(tmp_path / "x", ["pdf"])


def test_a_slide_without_mpp_is_refused(crop, monkeypatch):  # noqa: F811
    monkeypatch.setattr(crop, "mpp", None)
    with pytest.raises(RckdError, match="does not record its pixel size"):
        Analysis(crop, {"nuclei": "otsu"})


def test_live_preview_shows_until_the_nuclei_replace_it(crop, tmp_path):  # noqa: F811
    analysis = Analysis(crop, {"nuclei": "builtin"}, "cpu")
    live = analysis.live()
    assert set(live.sources) == {"nuclei", "nuclei_preview"}  # builtin works at 0.25 µm/px
    assert "csat shows first" in analysis.preview_note
    labels, grid = live.stores["preview_labels"], live.grids["nuclei"]
    plan = live.plan_view(Box(0, 0, 512, 512), screen_px_per_level0_px=1.0)
    previews = [r for r in plan.requests if r.model == "nuclei_preview"]
    exact = [r for r in plan.requests if r.model == "nuclei"]
    assert previews and plan.requests[: len(previews)] == previews  # the preview first

    def preview_under(request) -> np.ndarray:
        core = grid.to_level0(grid.core(request.row, request.col))
        return labels.read(live.grids["nuclei_preview"].to_grid(core))

    live.compute(previews)
    shown = max(exact, key=lambda r: int((preview_under(r) > 0).sum()))
    assert (preview_under(shown) > 0).sum() > 100  # csat's nuclei, until builtin answers
    live.compute([shown])
    assert not preview_under(shown).any()  # replaced where builtin has answered
    assert (live.stores["nuclei_labels"].read(grid.core(shown.row, shown.col)) > 0).any()

    # a preview tile computed after builtin's (a pan back, a cached tile) stays hidden there too
    fresh = analysis.live()
    fresh.compute([shown])
    fresh.compute(previews)
    labels = fresh.stores["preview_labels"]
    assert not preview_under(shown).any() and (labels.read(Box(0, 0, *labels.shape)) > 0).any()
    files = analysis.export(tmp_path / "crop", ["geojson"])
    assert [f.name for f in files] == ["crop.nuclei.geojson"]  # the preview is never exported
    for quick in ("csat", "classical"):  # as fast as the preview or faster: none
        assert Analysis(crop, {"nuclei": quick}, "cpu").live().sources.keys() == {"nuclei"}
    assert set(analysis.live(preview=False).sources) == {"nuclei"}


def test_hiding_the_preview_at_the_slide_edge_and_where_it_never_was(crop):  # noqa: F811
    analysis = Analysis(crop, {"nuclei": "builtin"}, "cpu")
    live = analysis.live()
    source, grid = live.sources["nuclei_preview"], live.grids["nuclei_preview"]
    labels = live.stores["preview_labels"]
    corner = grid.to_level0(Box(0, 0, *labels.shape))
    source.hide(live.stores, grid, corner)  # nothing shown: no memory taken for zeros
    assert labels.nbytes_in_memory == 0
    live.compute([("nuclei_preview", 0, 0)])
    assert labels.read(Box(0, 0, *labels.shape)).any()
    past_the_edge = Box(-40, -40, corner.y1 + 40, corner.x1 + 40)
    source.hide(live.stores, grid, past_the_edge)
    assert not labels.read(Box(0, 0, *labels.shape)).any()
