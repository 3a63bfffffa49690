"""Stage-1 data on real slides: tissue tile plans, the teacher cache, workers, bad input."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.io import find_slides
from napari_rckd.io.tissue import tissue_fraction
from napari_rckd.teachers import TeacherOutput, get_teacher
from napari_rckd.training.data.augment import Augment
from napari_rckd.training.data.sampling import SlidePool
from napari_rckd.training.data.stage1 import TissueTileDataset

SIZE = 128


class RefusingTeacher:
    """Claims the classical teacher's identity but must never be asked: proves cache hits."""

    def __init__(self, identity):
        self.identity = identity
        self.mpp = 0.5

    def predict(self, tile, mpp):
        raise AssertionError("the teacher was called although the cache is warm")


@pytest.fixture(scope="module")
def svs():
    return shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif")  # 4 levels: fast masks


@pytest.fixture(scope="module")
def warm(svs, tmp_path_factory):
    """Six tiles with their classical-teacher responses cached."""
    cache = tmp_path_factory.mktemp("cache")
    dataset = TissueTileDataset(svs, get_teacher("classical"), cache, count=6, size=SIZE, seed=3)
    progress = list(dataset.precompute())
    assert progress[-1] == (6, 6)
    return dataset, cache


def test_plan_is_deterministic_tissue_only_and_cached(warm, svs, caplog):
    dataset, cache = warm
    assert dataset.plan.shape == (6, 3)
    assert len(list(cache.rglob("*.npz"))) == 6
    again = TissueTileDataset(
        svs, RefusingTeacher(dataset.teacher.identity), cache, count=6, size=SIZE, seed=3
    )
    np.testing.assert_array_equal(again.plan, dataset.plan)
    other = TissueTileDataset(svs, RefusingTeacher("x"), cache, count=6, size=SIZE, seed=4)
    assert not np.array_equal(other.plan, dataset.plan)
    plans = sorted((cache / "plans").glob("*.npy"))
    assert len(plans) == 2  # one per seed: `again` reused the first
    for plan in plans:
        plan.write_bytes(b"garbage")
    resampled = TissueTileDataset(svs, RefusingTeacher("x"), cache, count=6, size=SIZE, seed=3)
    np.testing.assert_array_equal(resampled.plan, dataset.plan)
    assert "tile plan" in caplog.text and "corrupt" in caplog.text

    from napari_rckd.io import open_slide

    with open_slide(svs) as slide:
        for index in range(len(again)):
            item = again[index]  # warm: the refusing teacher is never asked
            assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
            assert item["target"].shape == (1, SIZE, SIZE)
            image = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            _, y, x = dataset.plan[index]
            np.testing.assert_array_equal(image, slide.read_at_mpp(y, x, SIZE, 0.5))
            # loose tissue and fat keep real tiles' pixel fractions well below 1; background
            # tiles score under 0.02 (see test_tissue)
            assert tissue_fraction(image) > 0.2
            expected = dataset.teacher.predict(image, 0.5).prob
            assert np.abs(item["target"][0].numpy() - expected).max() <= 0.5 / 255 + 1e-6


def test_boundaries_and_augmentation(warm, svs):
    dataset, cache = warm
    boundary_set = TissueTileDataset(
        svs,
        RefusingTeacher(dataset.teacher.identity),
        cache,
        count=6,
        size=SIZE,
        seed=3,
        boundaries=True,
        augment=Augment(),  # flips, rotations, colour: targets stay binary
    )
    item = boundary_set[0]
    assert item["target"].shape == (2, SIZE, SIZE)
    assert set(item["target"][1].unique().tolist()) <= {0.0, 1.0}
    assert item["target"][1].sum() > 0  # real nuclei have edges
    assert item["image"].min() >= 0 and item["image"].max() <= 1


def test_corrupt_cache_entry_is_reported_and_recomputed(warm, caplog):
    dataset, _ = warm
    entry = dataset.cache.path(dataset._key(2))
    good = dataset.tile(2)
    entry.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        tile = dataset.tile(2)
    assert "corrupt" in caplog.text and entry.name in caplog.text
    np.testing.assert_array_equal(tile.image, good.image)
    assert dataset.cache.load(dataset._key(2), SIZE) is not None  # rewritten, valid again


def test_dataloader_workers_reopen_slides(warm):
    dataset, _ = warm
    dataset[0]  # opens the slide in this process
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.pool._open == {}
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(3, 3, SIZE, SIZE)] * 2


def test_slide_without_mpp_needs_one(tmp_path):
    jp2k = shared_path("slides/tcga-cr-7395-jp2k.svs")
    teacher = get_teacher("classical")
    with pytest.raises(RckdError, match="tcga-cr-7395-jp2k.svs has no mpp.*pass --slide-mpp"):
        TissueTileDataset(jp2k, teacher, tmp_path, count=2, size=64)
    dataset = TissueTileDataset(SlidePool([jp2k], 0.25), teacher, tmp_path, count=2, size=64)
    assert dataset[0]["target"].shape == (1, 64, 64)


def test_finding_slides(tmp_path, shared_data):
    slides = find_slides(shared_data / "slides")
    names = {p.name for p in slides}
    assert {"cmu-1-small-region.svs", "tcga-cr-7395-jp2k.svs", "cmu-1-small-region"} <= names
    (tmp_path / "notes.txt").write_text("no slides here")
    with pytest.raises(RckdError, match="contains no slide images"):
        find_slides(tmp_path)
    with pytest.raises(RckdError, match="does not exist"):
        find_slides(tmp_path / "missing")


class _FlatTeacher:
    identity = "flat"
    mpp = 0.5

    def predict(self, tile, mpp):
        return TeacherOutput(
            np.zeros(tile.shape[:2], np.float32), np.zeros(tile.shape[:2], np.int32)
        )


def test_tiles_come_from_several_slides(tmp_path, shared_data):
    paths = [
        shared_data / "slides/cmu-1-small-region.svs",
        shared_data / "slides/he-tma-core.ome.tif",
    ]
    dataset = TissueTileDataset(SlidePool(paths, 0.5), _FlatTeacher(), tmp_path, count=20, size=64)
    counts = np.bincount(dataset.plan[:, 0], minlength=2)
    assert counts.sum() == 20 and (counts > 0).all()


def test_held_out_tiles_never_overlap_training_tiles(warm, svs):
    dataset, cache = warm
    val = TissueTileDataset(
        svs, RefusingTeacher("x"), cache, count=20, size=SIZE, seed=9, avoid=dataset
    )
    footprint = SIZE * 0.5 / 0.499
    for _, y, x in val.plan:
        gaps = np.abs(dataset.plan[:, 1:] - [y, x])
        assert not (gaps < footprint).all(axis=1).any()
    with pytest.raises(RckdError, match="same slides, tile size and mpp"):
        TissueTileDataset(svs, RefusingTeacher("x"), cache, count=2, size=64, avoid=dataset)
