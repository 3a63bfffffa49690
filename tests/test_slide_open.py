"""Every real slide opens lazily with the right pyramid, mpp, tiles and pixels."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from conftest import shared_path
from napari_rckd.io import Slide, SlideError, open_slide

# file -> (level shapes, mpp the file records, tile shape, associated images)
CMU_SHAPES = [(2967, 2220), (1484, 1110), (742, 555), (371, 278)]
SLIDES = {
    "cmu-1-small-region.svs": ([(2967, 2220)], 0.499, (240, 240), {"thumbnail", "label", "macro"}),
    "cmu-1-small-region.pyramid-jpeg.ome.tif": (CMU_SHAPES, 0.499, (256, 256), set()),
    # no Aperio/OME fields, but ResolutionUnit=cm with 10000000/499 px/cm is a real 0.499 µm
    "cmu-1-small-region.pyramid-deflate.tif": (CMU_SHAPES, 0.499, (256, 256), set()),
    "he-tma-core.ome.tif": ([(1484, 1380)], 0.5000799, (256, 256), set()),
    "tcga-cr-7395-jp2k.svs": ([(3567, 4443), (1783, 2221)], None, (256, 256), {"thumbnail"}),
    "ihc-kidney-strips.tif": ([(901, 1493)], None, (901, 901), set()),
}


@pytest.mark.parametrize("name", sorted(SLIDES))
def test_levels_mpp_and_tiles_match_the_file(name):
    shapes, mpp, tile, associated = SLIDES[name]
    with open_slide(shared_path(f"slides/{name}")) as slide:
        assert [level.shape for level in slide.levels] == [(*s, 3) for s in shapes]
        assert all(level.dtype == np.uint8 for level in slide.levels)
        if mpp is None:
            assert slide.mpp is None
        else:
            assert slide.mpp == pytest.approx(mpp, rel=1e-5)
        assert slide.tile_shape == tile
        for level in slide.levels:  # chunks are the native tiles (edge chunks may be shorter)
            assert level.chunks[0][0] == tile[0] and level.chunks[1][0] == tile[1]
        assert set(slide.associated) == associated
        assert slide.downsamples[0] == 1.0
        assert slide.downsamples == sorted(slide.downsamples)


@pytest.mark.parametrize("name", sorted(SLIDES))
def test_pixels_equal_tifffile_full_decode(name):
    path = shared_path(f"slides/{name}")
    rng = np.random.default_rng(0)
    with tifffile.TiffFile(path) as tif, open_slide(path) as slide:
        for index, series_level in enumerate(tif.series[0].levels):
            reference = series_level.asarray()[..., :3]
            height, width = reference.shape[:2]
            for _ in range(3):
                h, w = (
                    rng.integers(1, min(height, 600), endpoint=True),
                    rng.integers(1, min(width, 600)),
                )
                y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                expected = reference[y : y + h, x : x + w]
                np.testing.assert_array_equal(slide.read_region(index, y, x, h, w), expected)
                np.testing.assert_array_equal(
                    np.asarray(slide.levels[index][y : y + h, x : x + w]), expected
                )


def test_read_region_is_white_outside_the_slide():
    path = shared_path("slides/cmu-1-small-region.svs")
    with open_slide(path) as slide:
        reference = tifffile.imread(path)
        region = slide.read_region(0, -20, 2200, 60, 40)
        assert region.shape == (60, 40, 3)
        assert (region[:20] == 255).all() and (region[:, 20:] == 255).all()
        np.testing.assert_array_equal(region[20:, :20], reference[:40, 2200:])
        assert (slide.read_region(0, 5000, 5000, 8, 8) == 255).all()


def test_associated_images_are_rgb_and_lazy():
    with open_slide(shared_path("slides/cmu-1-small-region.svs")) as slide:
        assert slide.associated._loaded == {}
        assert slide.associated["label"].shape == (463, 387, 3)
        assert slide.associated["macro"].shape == (431, 1280, 3)
        assert set(slide.associated._loaded) == {"label", "macro"}


def test_read_at_mpp_uses_a_coarser_level_and_matches_its_pixels():
    path = shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif")
    with open_slide(path) as slide:
        assert slide.best_level_for(2.0) == 1 and slide.best_level_for(1.9) == 0
        level1_mpp = slide.level_mpp(1)
        tile = slide.read_at_mpp(1000, 600, 128, level1_mpp)
        expected = slide.read_region(1, 500, 300, 128, 128)
        assert tile.shape == (128, 128, 3) and tile.dtype == np.uint8
        # the level-1 grid is 1484/2967 of level 0, not exactly 1/2: allow resampling error
        assert np.abs(tile.astype(int) - expected).mean() < 12
        native = slide.read_at_mpp(1000, 600, 64, slide.mpp)
        np.testing.assert_array_equal(native, slide.read_region(0, 1000, 600, 64, 64))


def test_read_at_mpp_downsamples_without_aliasing():
    with open_slide(shared_path("slides/cmu-1-small-region.svs")) as slide:
        tile = slide.read_at_mpp(800, 400, 100, slide.mpp * 4)
        source = slide.read_region(0, 800, 400, 400, 400).astype(float)
        block_mean = source.reshape(100, 4, 100, 4, 3).mean(axis=(1, 3))
        assert tile.shape == (100, 100, 3)
        assert np.abs(tile - block_mean).mean() < 6


def test_missing_mpp_is_a_clear_error_and_can_be_overridden():
    path = shared_path("slides/tcga-cr-7395-jp2k.svs")
    with open_slide(path) as slide, pytest.raises(SlideError, match=r"tcga-cr-7395-jp2k.svs.*mpp="):
        slide.read_at_mpp(0, 0, 64, 0.5)
    with open_slide(path, mpp=0.25) as slide:
        assert slide.mpp == 0.25
        assert slide.read_at_mpp(0, 0, 64, 0.5).shape == (64, 64, 3)


def test_magnification_and_vendor():
    with open_slide(shared_path("slides/cmu-1-small-region.svs")) as slide:
        assert (slide.magnification, slide.vendor, slide.compression) == (20.0, "aperio", "jpeg")
    with open_slide(shared_path("slides/tcga-cr-7395-jp2k.svs")) as slide:
        assert slide.magnification is None
        assert slide.compression == "aperio_jp2000_rgb"


def test_dicom_series_opens_with_mpp_and_same_pixels_as_the_svs():
    pytest.importorskip("wsidicom")
    folder = shared_path("slides/dicom/cmu-1-small-region")
    with (
        open_slide(folder) as slide,
        open_slide(shared_path("slides/cmu-1-small-region.svs")) as svs,
    ):
        assert isinstance(slide, Slide)
        assert slide.shape == (2967, 2220) and slide.mpp == pytest.approx(0.499)
        assert {"label", "macro"} <= set(slide.associated)
        region = slide.read_region(0, 300, 240, 240, 240).astype(int)
        # same scan, re-encoded: close but not bit-identical
        assert np.abs(region - svs.read_region(0, 300, 240, 240, 240)).mean() < 8


def test_plain_png_opens_without_mpp():
    path = shared_path("tiles/crc-val-he-7k/TUM-TCGA-DRHQMTQA.png")
    with open_slide(path) as slide:
        assert slide.levels[0].shape == (224, 224, 3) and slide.mpp is None
        assert slide.read_region(0, 0, 0, 224, 224).mean() < 250


def test_uncompressed_tiff_whose_compression_tifffile_gives_as_a_bare_int_opens():
    path = shared_path("nuclei/cryonuseg/TCGA-DE-A4MA.tif")
    with open_slide(path) as slide:
        assert slide.compression == "none" and slide.levels[0].shape == (512, 512, 3)
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 512, 512), tifffile.imread(path))
