"""Tissue detection: tile decisions on real tissue/background tiles, masks of real slides."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.io.tissue import TissueMask, detect_tissue, is_tissue_tile, tissue_fraction


def _read_rgb(path):
    from skimage.io import imread

    return imread(path)[..., :3]


def test_each_real_tile_is_classified_right():
    folder = shared_path("tiles/tissue-vs-background")
    tiles = sorted(folder.glob("*/*.png"))
    assert len(tiles) == 13
    wrong = [p.name for p in tiles if is_tissue_tile(_read_rgb(p)) != (p.parent.name == "tissue")]
    assert wrong == []


def test_pen_marks_are_not_tissue_pixels():
    folder = shared_path("tiles/tissue-vs-background/background")
    green = _read_rgb(folder / "no-tissue-green-pen.png")
    assert tissue_fraction(green) < 0.01  # 78% of it is saturated, dark enough: ink, not stain


def test_mask_fraction_maps_level0_boxes():
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    tissue = TissueMask(mask, downsample=16.0)
    assert tissue.fraction(0, 0, 80, 160) == 1.0
    assert tissue.fraction(80, 0, 80, 160) == 0.0
    assert tissue.fraction(40, 0, 80, 160) == pytest.approx(0.5)
    assert tissue.fraction(1000, 1000, 10, 10) == 0.0
    assert tissue.area_px0 == 50 * 256


@pytest.mark.parametrize(
    "name, mpp_known",
    [("cmu-1-small-region.svs", True), ("tcga-cr-7395-jp2k.svs", False)],
)
def test_real_slide_mask(name, mpp_known):
    from napari_rckd.io import open_slide

    with open_slide(shared_path(f"slides/{name}")) as slide:
        tissue = detect_tissue(slide, name)
        assert (slide.mpp is not None) == mpp_known
        # the mask covers the whole slide and maps back to level 0
        assert tissue.mask.shape[0] * tissue.downsample == pytest.approx(slide.shape[0], rel=0.01)
        assert 0.2 < tissue.mask.mean() < 0.9
        if mpp_known:  # computed near 8 µm/px
            assert 12 < tissue.downsample < 20
        # a box the mask calls tissue really is tissue at full resolution
        ys, xs = np.nonzero(tissue.mask)
        pick = len(ys) // 2
        y, x = ys[pick] * tissue.downsample, xs[pick] * tissue.downsample
        tile = slide.read_region(0, int(y), int(x), 256, 256)
        assert tissue_fraction(tile) > 0.3


def test_slide_without_tissue_is_a_clear_error():
    from napari_rckd.io import open_slide

    # a near-empty IHC overview: glass and a tiny blue (non-H&E) fragment
    with (
        open_slide(shared_path("slides/ihc-kidney-strips.tif")) as slide,
        pytest.raises(RckdError, match="no tissue found in ihc-kidney-strips.tif"),
    ):
        detect_tissue(slide, "ihc-kidney-strips.tif")
