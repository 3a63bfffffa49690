"""`napari-rckd predict`: a real slide crop to OME-Zarr plus exports; nuclei, GeoJSON and CSV by
default; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.cli import main
from napari_rckd.defaults import DEFAULT_NUCLEI
from napari_rckd.inference.wholeslide import open_results
from test_predict import checkpoints  # noqa: F401  (fixtures)


def test_predict_writes_results_and_exports(tmp_path, crop_path, checkpoints):  # noqa: F811
    out = tmp_path / "out"
    argv = [str(crop_path), "--slide-mpp", "0.499", "--out", str(out)]
    argv += ["--region", str(checkpoints["region"]), "--export", "geojson,ome-tiff"]
    assert main(["predict", *argv, "--nuclei", "none"]) == 0
    assert (out / "crop.region.geojson").stat().st_size > 100
    assert (out / "crop.region.ome.tif").exists()
    results = open_results(out / "crop.zarr")
    assert set(results) == {"region_mask", "region_prob"}  # --nuclei none: no nuclei
    assert results["region_mask"].read((0, 0, 4, 4)).min() >= 1
    assert sorted(p.name for p in out.iterdir()) == [
        "cohort.csv",
        "cohort.html",
        "crop.region.geojson",
        "crop.region.ome.tif",
        "crop.zarr",
    ]


def test_predict_without_options_writes_nuclei_zarr_geojson_and_csv(
    tmp_path, crop_path, monkeypatch, capsys
):
    from napari_rckd.commands import predict

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert f"{DEFAULT_NUCLEI} (default:" in " ".join(capsys.readouterr().out.split())
    # the default model is whatever DEFAULT_NUCLEI names; a fast one keeps this test short
    monkeypatch.setattr(predict, "DEFAULT_NUCLEI", "otsu")
    out = tmp_path / "out"
    assert main(["predict", str(crop_path), "--slide-mpp", "0.499", "--out", str(out)]) == 0
    assert "nuclei_labels" in open_results(out / "crop.zarr")
    features = json.loads((out / "crop.nuclei.geojson").read_text())["features"]
    rows = (out / "crop.nuclei.csv").read_text().splitlines()
    assert len(features) > 20 and len(rows) == len(features) + 1
    assert not list(out.glob("*.ome.tif"))  # OME-TIFF only when asked


def test_predict_errors_are_one_sentence(tmp_path, capsys, crop_path, checkpoints):  # noqa: F811
    no_mpp = shared_path("slides/tcga-cr-7395-jp2k.svs")
    assert main(["predict", str(no_mpp), "--nuclei", "builtin", "--out", str(tmp_path)]) == 2
    assert "--slide-mpp" in capsys.readouterr().err
    argv = [str(crop_path), "--slide-mpp", "0.5", "--out", str(tmp_path), "--nuclei", "none"]
    assert main(["predict", *argv]) == 2
    assert "nothing to predict" in capsys.readouterr().err
    assert main(["predict", *argv, "--subtype", str(checkpoints["region"])]) == 2
    assert "'dense' checkpoint" in capsys.readouterr().err
    assert main(["predict", *argv, "--export", "pdf"]) == 2
    assert "--export pdf is unknown" in capsys.readouterr().err
    white = tmp_path / "white.tif"
    import tifffile

    tifffile.imwrite(white, np.full((512, 512, 3), 245, np.uint8), photometric="rgb")
    assert (
        main(
            [
                "predict",
                str(white),
                "--slide-mpp",
                "0.5",
                "--nuclei",
                "otsu",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no tissue" in capsys.readouterr().err


def test_a_refused_predict_leaves_no_out_folder_behind(tmp_path, capsys, crop_path):
    no_mpp = shared_path("slides/tcga-cr-7395-jp2k.svs")
    out = tmp_path / "new" / "results"
    assert main(["predict", str(no_mpp), "--nuclei", "otsu", "--out", str(out)]) == 2
    assert "--slide-mpp" in capsys.readouterr().err
    assert not out.exists()
    argv = [str(crop_path), "--slide-mpp", "0.5", "--nuclei", "none", "--out", str(out)]
    assert main(["predict", *argv]) == 2  # refused later, after the staging folder was made
    assert "nothing to predict" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir(parents=True)  # a folder the user made stays, empty as it was
    assert main(["predict", str(no_mpp), "--nuclei", "otsu", "--out", str(out)]) == 2
    assert out.is_dir() and not list(out.iterdir())
