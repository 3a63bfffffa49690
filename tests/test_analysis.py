"""The engine API every front end shares: one Analysis of a real slide crop serves live
prediction, a whole-slide run and exports; bad choices are one sentence."""

from __future__ import annotations

import json

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
