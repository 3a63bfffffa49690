"""`predict` over damaged slides: a few bad tiles are skipped and counted, a mostly bad slide fails."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from napari_rckd.cli import main
from napari_rckd.inference.wholeslide import open_results


def _garble_tiles(path, tiles):
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = [(page.dataoffsets[t], page.databytecounts[t]) for t in tiles]
    with open(path, "r+b") as handle:
        for offset, count in spans:
            handle.seek(offset)
            handle.write(b"\x00garbage" * (count // 8))


def _predict(path, out):
    argv = [str(path), "--slide-mpp", "0.499", "--out", str(out), "--nuclei", "otsu"]
    return main(["predict", *argv, "--export", "geojson,csv"])


def test_a_damaged_tile_is_skipped_and_counted(tmp_path, crop_path, capsys):
    path = tmp_path / "crop.tif"
    shutil.copy(crop_path, path)
    # a corner (not tile 0: open decodes it to check the codec), where fewer than half of
    # the model windows reach
    _garble_tiles(path, [2])
    assert _predict(path, tmp_path / "out") == 0
    output = capsys.readouterr()
    assert "crop.tif: " in output.out and "damaged tiles skipped" in output.out
    labels = open_results(tmp_path / "out" / "crop.zarr")["nuclei_labels"]
    assert labels.read((0, 0, *labels.shape)).max() > 0  # the rest of the slide still predicted
    assert (tmp_path / "out" / "crop.nuclei.csv").exists()


def test_a_mostly_damaged_slide_fails_with_one_sentence(tmp_path, crop_path, capsys):
    path = tmp_path / "crop.tif"
    shutil.copy(crop_path, path)
    _garble_tiles(path, [4])  # the centre tile: 8 of the 9 model windows reach into it
    code = _predict(path, tmp_path / "out")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code != 0
    assert last.startswith("napari-rckd predict: error: crop.tif is damaged: 8 of its 9 tissue")


def test_tissue_that_cannot_be_read_is_not_called_missing(tmp_path, crop_path):
    from napari_rckd.io import open_slide
    from napari_rckd.io.slide import DamagedSlideError
    from napari_rckd.io.tissue import detect_tissue

    path = tmp_path / "crop.tif"
    shutil.copy(crop_path, path)
    _garble_tiles(path, range(1, 9))  # all but tile 0, which open decodes to check the codec
    with (
        open_slide(path, mpp=0.499) as slide,
        pytest.warns(UserWarning, match="damaged"),
        pytest.raises(DamagedSlideError, match="crop.tif is damaged"),
    ):
        detect_tissue(slide, "crop")


@pytest.mark.parametrize("tile", [2, 8])
def test_tissue_detection_reads_past_a_damaged_tile(tmp_path, crop_path, tile):
    from napari_rckd.io import open_slide
    from napari_rckd.io.tissue import detect_tissue

    path = tmp_path / "crop.tif"
    shutil.copy(crop_path, path)
    _garble_tiles(path, [tile])
    with open_slide(path, mpp=0.499) as slide, pytest.warns(UserWarning, match="damaged"):
        mask = detect_tissue(slide, "crop")
    assert np.asarray(mask.mask).any()
