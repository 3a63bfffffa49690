"""A slide that opens but holds damaged tiles: reads name the tile, napari's view shows it hatched."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import tifffile

from conftest import shared_path
from napari_rckd.io import open_slide
from napari_rckd.io.levels import DamagedSlideWarning
from napari_rckd.io.slide import DamagedSlideError


def _garble(path, page, tile):
    with tifffile.TiffFile(path) as tif:
        page = page(tif)
        offset, count = page.dataoffsets[tile], page.databytecounts[tile]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00garbage" * (count // 8))
    return path


@pytest.fixture
def damaged(tmp_path):
    """Level 0 tile 5 (row 1, column 1) of a 3x4-tile JPEG TIFF is garbage; the rest is fine."""
    image = np.full((192, 256, 3), 120, np.uint8)
    path = tmp_path / "damaged.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(64, 64), compression="jpeg", photometric="rgb")
        tif.write(image[::2, ::2], tile=(64, 64), compression="jpeg", subfiletype=1)
    return _garble(path, lambda tif: tif.pages[0], 5)


def test_read_region_names_file_level_and_tile(damaged):
    with open_slide(damaged) as slide:
        assert slide.read_region(0, 0, 0, 64, 64).mean() == pytest.approx(120, abs=2)
        with pytest.raises(DamagedSlideError) as raised:
            slide.read_region(0, 60, 100, 32, 32)
    message = str(raised.value)
    assert message.startswith("damaged.tif is damaged: level 0 tile 5 (row 1, column 1) could not")
    assert "\n" not in message


def test_read_at_mpp_over_a_damaged_tile_raises_the_sentence(damaged):
    with (
        open_slide(damaged, mpp=0.5) as slide,
        pytest.raises(DamagedSlideError, match="damaged.tif is damaged: level 0 tile 5"),
    ):
        slide.read_at_mpp(64, 64, 32, 0.5)


def test_display_level_hatches_the_tile_and_warns_once(damaged):
    with open_slide(damaged) as slide, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = np.asarray(slide.levels[0])
        again = np.asarray(slide.levels[0][32:128, 96:200])
    damage = [w for w in caught if issubclass(w.category, DamagedSlideWarning)]
    assert len(damage) == 1 and "damaged.tif is damaged: level 0 tile 5" in str(damage[0].message)
    tile = first[64:128, 64:128]
    assert set(np.unique(tile)) == {200, 235}  # the hatch, not the slide's grey 120
    assert np.abs(first[:64].astype(int) - 120).max() < 4
    np.testing.assert_array_equal(again, first[32:128, 96:200])


def test_damaged_associated_image_raises_the_sentence(tmp_path):
    from napari_rckd.bench.fuzz_inputs import write_seeds

    write_seeds(tmp_path)
    path = _garble(tmp_path / "aperio-like.svs", lambda tif: tif.series[3].pages[0], 0)
    with open_slide(path) as slide:
        assert slide.associated["label"].shape == (32, 48, 3)
        with pytest.raises(DamagedSlideError, match="aperio-like.svs is damaged: its macro image"):
            slide.associated["macro"]


def test_real_slide_with_a_damaged_tile(tmp_path):
    path = tmp_path / "cmu.ome.tif"
    shutil.copy(shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif"), path)
    _garble(path, lambda tif: tif.series[0].levels[0].pages[0], 20)  # row 2, column 2
    with open_slide(path) as slide:
        row, column = divmod(20, 9)
        with pytest.raises(DamagedSlideError, match="level 0 tile 20 \\(row 2, column 2\\)"):
            slide.read_region(0, row * 256, column * 256, 256, 256)
        with pytest.warns(DamagedSlideWarning):
            view = np.asarray(slide.levels[0][:1024, :1024])
        assert set(np.unique(view[512:768, 512:768])) == {200, 235}
        assert slide.read_region(1, 0, 0, 512, 512).std() > 10  # other levels still read


def test_coarsened_levels_are_lazy_means_of_level_zero(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 8448, 3), np.uint8)
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, image, tile=(64, 64), compression="deflate", photometric="rgb")
    with open_slide(path) as slide:
        assert [level.shape[:2] for level in slide.levels] == [
            (64, 8448),
            (32, 4224),
            (16, 2112),
            (8, 1056),
        ]
        # the reader plus one task per chunk of the level itself, none per chunk of level 0
        assert len(dict(slide.levels[3].__dask_graph__())) == slide.levels[3].npartitions + 1
        expected = image.astype(int).reshape(16, 4, 2112, 4, 3).mean(axis=(1, 3))
        assert np.abs(np.asarray(slide.levels[2]) - expected).max() <= 1
        np.testing.assert_array_equal(slide.read_region(2, 0, 0, 16, 2112), slide.levels[2])


def test_info_lists_a_damaged_associated_image_as_damaged(tmp_path, capsys):
    from napari_rckd.bench.fuzz_inputs import write_seeds
    from napari_rckd.cli import main

    write_seeds(tmp_path)
    path = _garble(tmp_path / "aperio-like.svs", lambda tif: tif.series[3].pages[0], 0)
    assert main(["info", str(path)]) == 0
    assert "label 32 x 48, macro (damaged)" in capsys.readouterr().out
