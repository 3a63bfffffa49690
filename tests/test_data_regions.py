"""Stage-2 data over slides: GeoJSON regions -> class tiles; label masks -> segmentation tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.io.annotations import Region, write_annotations
from napari_rckd.training.data.regions import MaskTileDataset, RegionTileDataset
from napari_rckd.training.data.splits import split_by_group

SLIDE = "slides/cmu-1-small-region.pyramid-jpeg.ome.tif"  # 2967×2220 at 0.499 µm/px


def _box(y0, x0, y1, x1):
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)


@pytest.fixture
def geojson(tmp_path):
    regions = [
        Region("tumour", [[_box(200, 300, 1200, 1300)]], color=(255, 0, 0)),
        # a frame: the hole must stay free of tiles
        Region("stroma", [[_box(1400, 200, 2600, 2000), _box(1600, 400, 2400, 1800)]]),
        Region("tumour", [[_box(2700, 1900, 2760, 1960)]]),  # smaller than a tile
    ]
    path = tmp_path / "regions.geojson"
    write_annotations(path, regions)
    return path


def test_tiles_lie_inside_their_region(geojson):
    dataset = RegionTileDataset(shared_path(SLIDE), geojson, size=128, mpp=0.5, seed=0)
    assert dataset.classes == ["stroma", "tumour"]
    assert sorted(set(dataset.groups)) == [
        "cmu-1-small-region.pyramid-jpeg.ome#region0",
        "cmu-1-small-region.pyramid-jpeg.ome#region1",
        "cmu-1-small-region.pyramid-jpeg.ome#region2",
    ]
    footprint = 128 * 0.5 / 0.499
    tol = footprint / 4  # regions are rasterised at a quarter tile per pixel
    for (y, x), label, group in zip(dataset.locations, dataset.labels, dataset.groups, strict=True):
        cy, cx = y + footprint / 2, x + footprint / 2
        if group.endswith("region0"):
            assert label == 1 and 200 - tol <= cy <= 1200 + tol and 300 - tol <= cx <= 1300 + tol
        elif group.endswith("region1"):
            assert label == 0 and 1400 - tol <= cy <= 2600 + tol and 200 - tol <= cx <= 2000 + tol
            assert not (
                1600 + footprint / 2 + tol < cy < 2400 - footprint / 2 - tol and 500 < cx < 1700
            )
    assert dataset.groups.count("cmu-1-small-region.pyramid-jpeg.ome#region2") == 1
    item = dataset[0]
    assert item["image"].shape == (3, 128, 128) and item["label"].dtype == torch.int64
    assert max(dataset[i]["image"].std() for i in range(0, len(dataset), 10)) > 0.05  # tissue
    again = RegionTileDataset(shared_path(SLIDE), geojson, size=128, mpp=0.5, seed=0)
    np.testing.assert_array_equal(again.locations, dataset.locations)
    train, val = split_by_group(dataset.groups, dataset.labels, seed=0)
    assert not {dataset.groups[i] for i in train} & {dataset.groups[i] for i in val}


def test_region_class_errors(geojson):
    with pytest.raises(RckdError, match="labels stroma outside the class list"):
        RegionTileDataset(shared_path(SLIDE), geojson, classes=["tumour", "normal"])
    with pytest.raises(RckdError, match="only one class"):
        RegionTileDataset(shared_path(SLIDE), [Region("tumour", [[_box(0, 0, 500, 500)]])])
    with pytest.raises(RckdError, match="region 1 in the annotations has no class name"):
        RegionTileDataset(
            shared_path(SLIDE),
            [Region("a", [[_box(0, 0, 500, 500)]]), Region(None, [[_box(0, 0, 50, 50)]])],
        )


def test_slide_without_mpp_needs_one(geojson):
    with pytest.raises(RckdError, match="has no mpp.*pass --slide-mpp"):
        RegionTileDataset(shared_path("slides/tcga-cr-7395-jp2k.svs"), geojson)


def test_mask_over_real_slide_from_a_coarse_labels_layer():
    path = shared_path(SLIDE)
    mask = np.zeros((2967 // 8, 2220 // 8), np.uint8)  # painted on level 3 (downsample 8)
    mask[20:180, 30:130] = 1
    mask[200:360, 30:250] = 2
    dataset = MaskTileDataset(path, mask, ["tumour", "normal"], size=256, mpp=0.5)
    assert len(dataset) > 4
    values = set()
    for index in range(0, len(dataset), 3):
        item = dataset[index]
        assert item["mask"].shape == (256, 256) and item["mask"].dtype == torch.int64
        values |= set(item["mask"].unique().tolist())
    assert values == {0, 1, 2}
    with pytest.raises(RckdError, match=r"mask values \[3\] are outside the class list"):
        MaskTileDataset(path, np.where(mask == 2, 3, mask), ["tumour", "normal"])
    with pytest.raises(RckdError, match="only one class \\(tumour\\)"):
        MaskTileDataset(path, np.where(mask == 2, 0, mask), ["tumour", "normal"])
    with pytest.raises(RckdError, match="not aligned"):
        MaskTileDataset(path, mask[:, :100], ["tumour", "normal"])


def test_mask_tiles_align_with_image_tiles(tmp_path):
    from PIL import Image
    from skimage.io import imread

    rgb = imread(shared_path("tiles/bracs/1238_adh_10.png"))[..., :3].copy()
    mask = np.zeros(rgb.shape[:2], np.uint8)
    mask[100:700, 100:500] = 1
    mask[100:700, 600:1100] = 2
    rgb[..., 0] = mask * 100  # the image carries its own mask in the red channel
    Image.fromarray(mask).save(tmp_path / "mask.png")
    dataset = MaskTileDataset(
        rgb, tmp_path / "mask.png", ["a", "b"], size=64, mpp=0.25, image_mpp=0.25
    )
    assert len(dataset) > 10
    for index in range(0, len(dataset), 5):
        item = dataset[index]
        red = (item["image"][0] * 255).round().long() // 100
        torch.testing.assert_close(red, item["mask"])
