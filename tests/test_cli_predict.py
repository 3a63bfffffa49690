"""`napari-rckd predict`: a real slide crop to OME-Zarr plus exports; clear errors; sharding."""

from __future__ import annotations

import numpy as np

from conftest import shared_path
from napari_rckd.cli import main
from napari_rckd.commands.predict import shard
from napari_rckd.inference.wholeslide import open_results
from test_predict import checkpoints  # noqa: F401  (fixtures)


def test_predict_writes_results_and_exports(tmp_path, crop_path, checkpoints):  # noqa: F811
    out = tmp_path / "out"
    argv = [str(crop_path), "--slide-mpp", "0.499", "--out", str(out)]
    argv += ["--region", str(checkpoints["region"]), "--export", "geojson,ome-tiff"]
    assert main(["predict", *argv]) == 0
    assert (out / "crop.region.geojson").stat().st_size > 100
    assert (out / "crop.region.ome.tif").exists()
    assert open_results(out / "crop.zarr")["region_mask"].read((0, 0, 4, 4)).min() >= 1


def test_predict_errors_are_one_sentence(tmp_path, capsys, crop_path, checkpoints):  # noqa: F811
    no_mpp = shared_path("slides/tcga-cr-7395-jp2k.svs")
    assert main(["predict", str(no_mpp), "--nuclei", "builtin", "--out", str(tmp_path)]) == 2
    assert "--slide-mpp" in capsys.readouterr().err
    argv = [str(crop_path), "--slide-mpp", "0.5", "--out", str(tmp_path)]
    assert main(["predict", *argv, "--subtype", str(checkpoints["region"])]) == 2
    assert "'dense' checkpoint" in capsys.readouterr().err
    assert main(["predict", *argv, "--nuclei", "builtin", "--export", "pdf"]) == 2
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
                "builtin",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no tissue" in capsys.readouterr().err


def test_cohort_sharding_covers_every_slide_once():
    slides = list(range(11))
    parts = [shard(slides, rank, 4) for rank in range(4)]
    assert sorted(sum(parts, [])) == slides and parts[1] == [1, 5, 9]
