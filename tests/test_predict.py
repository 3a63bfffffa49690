"""Predictor: sources for nuclei, subtype and region on real tissue, worker thread, stale drops,
cache reuse, devices and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_rckd.devices import resolve_device
from napari_rckd.errors import RckdError
from napari_rckd.inference.cache import ResultCache
from napari_rckd.inference.predictor import Predictor
from napari_rckd.inference.sources import NucleiSource, RegionSource, SubtypeSource
from napari_rckd.inference.tiling import Box

MPP = 0.499  # CMU-1-Small-Region


@pytest.fixture
def crop(crop_path):
    from napari_rckd.io import open_slide

    with open_slide(crop_path, mpp=MPP) as slide:
        yield slide


def tiny_checkpoint(path, task, num_outputs, mpp, tile=64, names=None):
    """A small random-weight model saved as a real checkpoint (timm's test_resnet backbone)."""
    import torch

    from napari_rckd.models import ModelConfig, create_model, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(
        task=task,
        backbone="test_resnet",
        num_outputs=num_outputs,
        class_names=names or [],
        input_mpp=mpp,
        tile_size=tile,
    )
    return save_checkpoint(path, create_model(config), {"test": True})


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    return dict(
        region=tiny_checkpoint(
            folder / "region.safetensors", "dense", 2, 2.0, names=["other", "cancer"]
        ),
        subtype=tiny_checkpoint(folder / "subtype.safetensors", "classify", 3, 2.0),
        student=tiny_checkpoint(folder / "student.safetensors", "dense", 1, 0.5, tile=96),
    )


def all_tiles(predictor, name):
    grid = predictor.grids[name]
    return [(name, r, c) for r in range(grid.rows) for c in range(grid.cols)]


def test_builtin_nuclei_worker_equals_synchronous(crop):
    source = NucleiSource("classical")
    events = []
    with Predictor(crop, [source], on_tile_done=events.append) as live:
        plan = live.plan_view(Box(0, 0, 768, 768), screen_px_per_level0_px=1.0)
        assert len(plan.requests) == len(live.grids["nuclei"]) == 9
        live.start()
        live.submit(plan)
        assert live.wait_idle(timeout=120)
        assert sorted((e.row, e.col) for e in events) == live.tiles_done("nuclei")
        assert live.events.qsize() == 9
        labels = live.stores["nuclei_labels"].read(Box(0, 0, 768, 768))
    with Predictor(crop, [source]) as sync:
        # the reverse order: seam conflicts are settled whatever order the tiles come in
        assert sync.compute([(r.model, r.row, r.col) for r in plan.requests][::-1]) == 9
        np.testing.assert_array_equal(
            sync.stores["nuclei_labels"].read(Box(0, 0, 768, 768)), labels
        )
    ids = np.unique(labels[labels > 0])
    assert len(ids) > 100  # dense real tissue
    prob = sync.stores["nuclei_prob"].read(Box(0, 0, 768, 768))
    assert prob[labels > 0].mean() > prob[labels == 0].mean()


def test_worker_shows_the_centre_tile_first_then_grows_its_batches(crop, monkeypatch):
    """After a camera move one tile of model time puts the centre tile on screen; later
    batches double up to the configured size, reading ahead while the model runs."""
    source = NucleiSource("classical")
    sizes, firsts = [], []
    with Predictor(crop, [source], batch_size=4) as live:
        original = live.run_batch

        def recording(name, batch, drop_stale, reads=None, cache_results=True):
            sizes.append(len(batch))
            firsts.append(batch[0])
            assert reads is not None and set(batch) <= set(reads)  # every window read ahead
            return original(name, batch, drop_stale, reads, cache_results)

        monkeypatch.setattr(live, "run_batch", recording)
        live.start()
        corner = live.plan_view(Box(0, 0, 256, 256), screen_px_per_level0_px=1.0)
        live.submit(corner)
        assert live.wait_idle(timeout=120) and sizes == [1]
        plan = live.plan_view(Box(0, 0, 768, 768), screen_px_per_level0_px=1.0)
        live.submit(plan)  # a new view starts again at one tile, its nearest
        assert live.wait_idle(timeout=120)
        assert sizes == [1, 1, 2, 4, 1] and firsts[1] == plan.requests[0]


def test_stale_requests_are_dropped(crop):
    with Predictor(crop, [NucleiSource("classical")]) as predictor:
        old = predictor.plan_view(Box(0, 0, 256, 256), 1.0)
        predictor.plan_view(Box(512, 512, 768, 768), 1.0)  # the camera moved on
        assert predictor.compute(old.requests, drop_stale=True) == 0
        assert predictor.tiles_done("nuclei") == []
        fresh = predictor.plan_view(Box(0, 0, 256, 256), 1.0)
        assert predictor.compute(fresh.requests, drop_stale=True) == 1
        assert predictor.stores["nuclei_labels"].read(Box(0, 0, 256, 256)).any()


def _must_not_run(windows):
    raise AssertionError("the model ran although the result was cached")


def test_shared_cache_is_reused_and_bounded(crop):
    source = NucleiSource("classical")
    small = ResultCache(max_bytes=1_000_000)  # ~one 320² window pair
    with Predictor(crop, [source], cache=small) as first:
        first.compute(all_tiles(first, "nuclei")[:3])
        assert 0 < small.nbytes <= 1_000_000
    shared = ResultCache()
    with Predictor(crop, [source], cache=shared) as first:
        first.compute(all_tiles(first, "nuclei")[:2])
    with Predictor(crop, [source], cache=shared) as second:
        second.sources["nuclei"].predict = _must_not_run
        assert second.compute(all_tiles(second, "nuclei")[:2]) == 2


def test_subtype_and_region_sources(crop, checkpoints):
    subtype = SubtypeSource(checkpoints["subtype"])
    region = RegionSource(checkpoints["region"])
    with Predictor(crop, [subtype, region], batch_size=3) as predictor:
        requests = all_tiles(predictor, "subtype") + all_tiles(predictor, "region")
        assert predictor.compute(requests) == len(requests)
        classes = predictor.stores["subtype_class"]
        grid = predictor.grids["subtype"]
        assert classes.shape == (grid.rows, grid.cols) == (3, 3)  # 768 px at 2 µm/px in 64 px tiles
        assert classes.scale_um() == pytest.approx(2.0 * 64)
        values = classes.read(Box(0, 0, 3, 3))
        probs = predictor.stores["subtype_prob"].read(Box(0, 0, 3, 3))
        assert probs.shape == (3, 3, 3)
        np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-5)
        np.testing.assert_array_equal(values, probs.argmax(axis=0) + 1)
        shape = predictor.grids["region"].shape
        mask = predictor.stores["region_mask"].read(Box(0, 0, *shape))
        prob = predictor.stores["region_prob"].read(Box(0, 0, *shape))
        assert prob.shape == (2, *shape) and predictor.stores["region_prob"].channels == [
            "other",
            "cancer",
        ]
        np.testing.assert_array_equal(mask, prob.argmax(axis=0) + 1)


def test_dense_student_as_nuclei_source_runs_batched(crop, checkpoints, monkeypatch):
    from napari_rckd.inference.sources import TEACHER_CORE, TEACHER_HALO
    from napari_rckd.models.runner import ModelRunner

    source = NucleiSource(checkpoints["student"])
    assert source.runner is source.teacher.runner and source.identity.startswith("nuclei:")
    assert (source.core, source.halo) == (TEACHER_CORE, TEACHER_HALO)  # as every nuclei model
    calls = []
    forward = ModelRunner.forward
    monkeypatch.setattr(
        ModelRunner, "forward", lambda self, batch: calls.append(len(batch)) or forward(self, batch)
    )
    with Predictor(crop, [source], batch_size=4) as predictor:
        tiles = all_tiles(predictor, "nuclei")[:4]
        assert predictor.compute(tiles) == 4
        assert calls == [4]  # one model call for the batch
        prob = predictor.stores["nuclei_prob"].read(Box(0, 0, TEACHER_CORE, TEACHER_CORE))
        assert prob.min() > 0 and prob.max() < 1  # a sigmoid was applied


def test_bad_inputs_are_explained(tmp_path, crop_path, checkpoints):
    from napari_rckd.io import open_slide

    with pytest.raises(RckdError, match="'dense' checkpoint but tissue subtype needs a 'classify'"):
        SubtypeSource(checkpoints["region"])
    with pytest.raises(RckdError, match="'classify' checkpoint"):
        RegionSource(checkpoints["subtype"])
    with pytest.raises(RckdError, match="not a .safetensors checkpoint"):
        RegionSource(tmp_path / "missing.safetensors")
    with open_slide(crop_path) as slide, pytest.raises(RckdError, match="pixel size"):
        Predictor(slide, [NucleiSource("classical")])
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(RckdError, match="unknown"):
        resolve_device("tpu")


def test_runner_gives_contiguous_logits_and_softmax_matches_numpy(checkpoints):
    from napari_rckd.inference.runner import softmax

    region = RegionSource(checkpoints["region"])
    logits = region.runner(np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), np.uint8))
    assert logits.shape == (2, 2, 64, 64) and logits.flags.c_contiguous  # not channels_last
    probs, best, winner = softmax(logits * 3)
    expected = np.exp(logits * 3) / np.exp(logits * 3).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    np.testing.assert_array_equal(winner, expected.argmax(axis=1))
    np.testing.assert_allclose(best, expected.max(axis=1), rtol=1e-5)
