"""Tissue detection: tile decisions on real tissue/background tiles, masks of real slides."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.io.tissue import (
    TissueMask,
    block_mean,
    clear_tissue_cache,
    detect_tissue,
    is_tissue_tile,
    tissue_fraction,
    tissue_pixels,
)


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


def test_tissue_pixels_match_rgb2hsv_decisions():
    from skimage.color import rgb2hsv

    from napari_rckd.io import tissue as t

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (400_000, 3), dtype=np.uint8)
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)  # hue and saturation 0/0
    rgb = np.concatenate([colours, greys])[None]
    hue, saturation, value = np.moveaxis(rgb2hsv(rgb), -1, 0)
    coloured = (saturation > t.MIN_SATURATION) & (value < t.MAX_VALUE) & (value > t.MIN_VALUE)
    pen = (hue > t.PEN_HUE_RANGE[0]) & (hue < t.PEN_HUE_RANGE[1])
    red = (hue < t.RED_HUE_MARGIN) | (hue > 1 - t.RED_HUE_MARGIN)
    pen |= red & (saturation > t.RED_PEN_SATURATION)
    expected = coloured & ~pen
    assert 0.1 < expected.mean() < 0.9
    assert np.array_equal(tissue_pixels(rgb), expected)


def test_block_mean_averages_whole_and_edge_blocks():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)  # RGBA, ragged edges
    out = block_mean(image, 5)
    assert out.shape == (8, 11, 3) and out.dtype == np.uint8
    for y, x in [(0, 0), (3, 4), (7, 10), (7, 0), (0, 10)]:
        block = image[5 * y : 5 * y + 5, 5 * x : 5 * x + 5, :3].reshape(-1, 3)
        assert np.array_equal(out[y, x], np.rint(block.mean(0)))
    assert block_mean(image, 1).shape == (37, 53, 3)


@pytest.fixture(scope="module")
def flat_synthetic(tmp_path_factory):
    """A synthetic H&E slide at 0.5 µm/px without a pyramid: the mask comes from level 0 / 16."""
    import tifffile

    from napari_rckd.io import open_slide
    from napari_rckd.io.synthetic import make_synthetic_slide

    folder = tmp_path_factory.mktemp("flat")
    synthetic = make_synthetic_slide(folder / "pyramid.ome.tif", size=2048, seed=0)
    with open_slide(synthetic.path) as slide:
        pixels = slide.read_region(0, 0, 0, *slide.shape)
    path = folder / "flat.tif"
    pixels_per_cm = (1e4 / synthetic.mpp, 1e4 / synthetic.mpp)
    tifffile.imwrite(
        path,
        pixels,
        tile=(256, 256),
        compression="jpeg",
        photometric="rgb",
        resolution=pixels_per_cm,
        resolutionunit="CENTIMETER",
    )
    return path, pixels


def test_block_means_give_the_mask_of_an_anti_aliased_resize(flat_synthetic):
    from skimage.transform import resize

    from napari_rckd.io import open_slide
    from napari_rckd.io.tissue import MIN_OBJECT_UM2, clean_mask

    path, pixels = flat_synthetic
    clear_tissue_cache()
    with open_slide(path) as slide:
        assert len(slide.levels) == 1 and slide.mpp == 0.5
        tissue = detect_tissue(slide, path.name)
    assert tissue.downsample == 16 and tissue.mask.shape == (128, 128)
    # how the mask used to be made: a Gaussian anti-aliased resize of level 0 to ~8 µm/px
    small = resize(pixels, (128, 128), order=1, preserve_range=True, anti_aliasing=True)
    before = clean_mask(tissue_pixels(small.astype(np.uint8)), round(MIN_OBJECT_UM2 / 8.0**2))
    assert 0.1 < before.mean() < 0.5
    assert (tissue.mask == before).mean() > 0.98
    assert tissue.mask.mean() == pytest.approx(before.mean(), abs=0.01)


def test_a_slide_file_is_detected_once(flat_synthetic, monkeypatch):
    import os

    from napari_rckd.io import open_slide
    from napari_rckd.io import tissue as module

    path, _ = flat_synthetic
    calls = []
    compute = module._compute_tissue

    def counting(slide, name):
        calls.append(name)
        return compute(slide, name)

    monkeypatch.setattr(module, "_compute_tissue", counting)
    clear_tissue_cache()
    with open_slide(path) as slide:
        first = detect_tissue(slide, "first")
        assert detect_tissue(slide, "again") is first
    with open_slide(path) as reopened:  # predict, Analyze and bench each open the file
        assert detect_tissue(reopened, "reopened") is first
    assert calls == ["first"]
    assert not first.mask.flags.writeable  # shared, so nobody may change it
    with pytest.raises(ValueError):
        first.mask[0, 0] = True
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    with open_slide(path) as changed:
        again = detect_tissue(changed, "changed")
    assert calls == ["first", "changed"] and again is not first
    assert np.array_equal(again.mask, first.mask)
    clear_tissue_cache()
    with open_slide(path) as slide:
        detect_tissue(slide, "cleared")
    assert calls[-1] == "cleared"
