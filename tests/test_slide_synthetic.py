"""The synthetic H&E slide: deterministic, pyramidal, 0.5 µm/px, with regions that look different."""

from __future__ import annotations

import numpy as np
import pytest

from napari_rckd.io import open_slide
from napari_rckd.io.synthetic import (
    NORMAL,
    REGION_CLASSES,
    STROMA,
    TUMOUR,
    make_synthetic_slide,
    synthetic_region_map,
)


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory):
    return make_synthetic_slide(
        tmp_path_factory.mktemp("synthetic") / "s.ome.tif", size=2048, seed=3
    )


def test_pyramid_mpp_and_region_map(small_slide):
    with open_slide(small_slide.path) as slide:
        assert slide.mpp == 0.5 and slide.vendor == "ome"
        assert [level.shape[0] for level in slide.levels] == [
            2048,
            1024,
            512,
        ]  # down to about 512 px
        assert slide.tile_shape == (512, 512)
    region = small_slide.region_map
    assert region.shape == (2048 // small_slide.map_downsample,) * 2
    assert set(np.unique(region)) == set(range(len(REGION_CLASSES)))
    np.testing.assert_array_equal(region, synthetic_region_map(2048, seed=3))


def test_same_seed_same_pixels(small_slide, tmp_path):
    again = make_synthetic_slide(tmp_path / "again.ome.tif", size=2048, seed=3)
    with open_slide(small_slide.path) as a, open_slide(again.path) as b:
        np.testing.assert_array_equal(
            a.read_region(0, 900, 900, 300, 300), b.read_region(0, 900, 900, 300, 300)
        )


def _mean_colour(slide, region, cls, downsample):
    ys, xs = np.nonzero(region == cls)
    pixels = [
        slide.read_region(0, y * downsample, x * downsample, downsample, downsample).reshape(-1, 3)
        for y, x in zip(ys[::7], xs[::7], strict=True)
    ]
    return np.concatenate(pixels).mean(axis=0)


def test_regions_look_like_h_and_e(small_slide):
    region, ds = small_slide.region_map, small_slide.map_downsample
    with open_slide(small_slide.path) as slide:
        background = _mean_colour(slide, region, 0, ds)
        stroma = _mean_colour(slide, region, STROMA, ds)
        tumour = _mean_colour(slide, region, TUMOUR, ds)
        normal = _mean_colour(slide, region, NORMAL, ds)
    assert background.min() > 235  # glass
    assert stroma[0] > stroma[1] + 30  # eosin: pink, red well above green
    assert tumour.sum() < stroma.sum() - 60  # dense dark nuclei
    assert tumour[2] > tumour[1]  # hematoxylin: blue above green
    assert normal.sum() > tumour.sum()  # regular glands with lumens are lighter than tumour
