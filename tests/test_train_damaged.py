"""Stage-1 training data over damaged slides: bad tiles are learnt as glass and counted; a
mostly damaged plan fails in one sentence."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from napari_rckd.errors import RckdError
from napari_rckd.teachers import get_teacher
from napari_rckd.training.data.stage1 import TissueTileDataset
from napari_rckd.training.recipes.common import fill_cache


def _garble(path, tiles):
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = [(page.dataoffsets[t], page.databytecounts[t]) for t in tiles]
    with open(path, "r+b") as handle:
        for offset, count in spans:
            handle.seek(offset)
            handle.write(b"\x00garbage" * (count // 8))


@pytest.fixture
def planned(tmp_path, crop_path):
    """Eight 64-px tiles planned on an intact copy of the crop (whose tiles are 256 px)."""
    path = tmp_path / "slide.tif"
    shutil.copy(crop_path, path)
    teacher = get_teacher("otsu")
    dataset = TissueTileDataset(
        path, teacher, tmp_path / "cache", count=8, size=64, slide_mpp=0.499, seed=0
    )
    tiles = [int(y // 256) * 3 + int(x // 256) for _, y, x in dataset.plan]
    return path, dataset, tiles


def test_damaged_tiles_are_learnt_as_glass_and_counted(planned, caplog):
    path, dataset, tiles = planned
    # the file tile holding most planned tiles, short of half of them (tile 0: open decodes it)
    target = max((t for t in set(tiles) - {0} if tiles.count(t) < 4), key=tiles.count)
    _garble(path, [target])
    with caplog.at_level("WARNING"):
        fill_cache([dataset])
    assert len(dataset.damaged) >= tiles.count(target)
    assert "could not be decoded and were learnt as glass" in caplog.text
    index = min(dataset.damaged)
    assert dataset.tile(index).image.min() == 255 and dataset.tile(index).prob.max() < 0.5
    assert dataset[index]["image"].shape == (3, 64, 64)


def test_mostly_damaged_plan_fails_with_one_sentence(planned):
    path, dataset, _ = planned
    _garble(path, range(1, 9))
    with pytest.raises(RckdError, match=r"training tiles could not be decoded \(slide.tif\)"):
        fill_cache([dataset])


def _halves():
    from napari_rckd.io.annotations import Region

    def box(y0, x0, y1, x1):
        return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)

    return [Region("tumour", [[box(0, 0, 768, 384)]]), Region("stroma", [[box(0, 384, 768, 768)]])]


def test_stage_2_regions_skip_damaged_tiles_before_training(tmp_path, crop_path, caplog):
    from napari_rckd.training.data.regions import RegionTileDataset

    path = tmp_path / "slide.tif"
    shutil.copy(crop_path, path)
    intact = RegionTileDataset(path, _halves(), size=64, mpp=0.499, slide_mpp=0.499)
    _garble(path, [4])  # the centre file tile
    with caplog.at_level("WARNING"):
        damaged = RegionTileDataset(path, _halves(), size=64, mpp=0.499, slide_mpp=0.499)
    assert 0 < len(damaged) < len(intact)
    assert "damaged of" in caplog.text and "training tiles skipped" in caplog.text
    assert all(damaged[i]["image"].shape == (3, 64, 64) for i in range(len(damaged)))
    _garble(path, range(1, 9))
    with pytest.raises(RckdError, match=r"training tiles of slide.tif are damaged"):
        RegionTileDataset(path, _halves(), size=64, mpp=0.499, slide_mpp=0.499)
