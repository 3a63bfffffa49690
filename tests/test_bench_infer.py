"""`napari-rckd bench infer` with a tiny model: the throughput rows (cold tile cache, median of
rounds with min–max, tissue detection), whole-slide runs stopping at a tile count, and the
naive baseline at the pipeline's batch size."""

from __future__ import annotations

import argparse
import json
import queue
import statistics

import pytest

from conftest import shared_path
from napari_rckd.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random dense CSAT of 64 px windows at 4 µm/px: a few tiles per test slide."""
    import torch

    from napari_rckd.models import ModelConfig, create_model, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(task="dense", num_outputs=2, input_mpp=4.0, tile_size=64)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_checkpoint(path, create_model(config), {"note": "test"})


def test_throughput_rows_read_cold_and_give_median_and_range(tiny_model, tmp_path, monkeypatch):
    from napari_rckd.inference.predictor import Predictor

    cached_tiles = []  # decoded tiles in the slide's cache as each compute starts
    compute = Predictor.compute

    def recording(self, *args, **kwargs):
        cached_tiles.append(len(self.slide._cache._tiles))
        return compute(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "compute", recording)
    slide = shared_path("slides/cmu-1-small-region.svs")
    out = tmp_path / "infer.json"
    args = ["bench", "infer", str(slide), "--checkpoint", str(tiny_model), "--tiles", "6"]
    args += ["--batch-size", "2", "--repeats", "2", "--sizes", "", "--device", "cpu"]
    args += ["--windows", "model"]  # the tiny model's own 64-px windows: many tiles
    assert main([*args, "--json", str(out)]) == 0
    alone, detected = json.loads(out.read_text())["rows"]
    assert cached_tiles[0] > 0  # the warm-up reads after the model-only windows were read
    assert cached_tiles[1:] == [0, 0]  # one pipeline pass per round, each from a cleared cache
    for row in (alone, detected):
        assert row["tiles"] == 6 and row["repeats"] == 2 and row["distinct_tiles"] >= 6
        assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"]
        assert row["pipeline_tiles_per_s"] > 0 and row["model_tiles_per_s"] > 0
    assert detected["detect_s"] > 0 and detected["detect_share"] > 0
    # one model-only measurement serves both rows; only the pipeline's times differ
    assert detected["model_tiles_per_s"] == alone["model_tiles_per_s"]
    assert {k: v for k, v in detected.items() if k in SHARED} == {
        k: v for k, v in alone.items() if k in SHARED
    }
    assert "tile cache cleared" in alone["test"] and "tissue detection" in detected["test"]


SHARED = ("model", "windows", "window_px", "core_px", "tiles", "distinct_tiles", "repeats")


def _args(model, **extra) -> argparse.Namespace:
    return argparse.Namespace(
        checkpoint=str(model), device="cpu", batch_size=2, windows="model", **extra
    )


def test_whole_slide_stops_at_a_tile_count(tiny_model, tmp_path):
    from napari_rckd.bench.infer import _tile_counts
    from napari_rckd.bench.infer_memory import _whole_slide_child
    from napari_rckd.bench.read import write_sparse_slide

    assert _tile_counts("16,all") == [16, None]
    sparse, _ = write_sparse_slide(tmp_path / "sparse.tif", 4096)
    results = queue.Queue()
    for limit in (2, None):
        _whole_slide_child(
            _args(tiny_model, wsi_mpp=4.0), sparse, False, limit, str(tmp_path), results
        )
    some, every = results.get_nowait(), results.get_nowait()
    assert some["tiles"] == 2 < every["tiles"]
    for row in (some, every):
        assert row["peak_rss_mb"] > 0 and 0 < row["detect_s"] < row["seconds"]


def test_naive_baseline_batches_like_the_pipeline(tiny_model, tmp_path):
    from napari_rckd.bench.infer_memory import _naive
    from napari_rckd.bench.infer_model import model_source
    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.wholeslide import tissue_tiles
    from napari_rckd.io import open_slide
    from napari_rckd.io.tissue import detect_tissue

    source = model_source(_args(tiny_model), str(tmp_path), 4.0)
    batches = []
    runner = source.runner

    def recording(windows):
        batches.append(windows.shape)
        return runner(windows)

    source.runner = recording
    with open_slide(shared_path("slides/he-tma-core.ome.tif")) as slide:
        predictor = Predictor(slide, [source], batch_size=2)
        tiles = tissue_tiles(predictor, detect_tissue(slide))[:5]
        assert _naive(slide, source, tiles, predictor, 2) == 5
        predictor.close()
    assert [shape[0] for shape in batches] == [2, 2, 1]
    assert all(shape[1:] == (64, 64, 3) for shape in batches)


def test_both_windows_give_output_pixels_and_their_ratio(tiny_model, tmp_path):
    out = tmp_path / "infer.json"
    args = ["bench", "infer", str(shared_path("slides/cmu-1-small-region.svs"))]
    args += ["--checkpoint", str(tiny_model), "--tiles", "4", "--batch-size", "2"]
    args += ["--repeats", "2", "--sizes", "", "--device", "cpu", "--windows", "both"]
    assert main([*args, "--json", str(out)]) == 0
    own, _, wide, _, ratio = json.loads(out.read_text())["rows"]
    assert (own["windows"], wide["windows"]) == ("model", "whole-slide")
    assert own["window_px"] == 64 and wide["window_px"] == 512
    assert wide["core_px"] == 512 - (64 - own["core_px"])  # the same halo around a wider core
    for row in (own, wide):
        assert len(row["output_mpx_per_s_rounds"]) == 2 and row["output_mpx_per_s"] > 0
    assert ratio["ratio_min"] <= ratio["ratio"] <= ratio["ratio_max"]
    assert ratio["window_px"] == "512 vs 64"


def test_against_times_a_second_model_and_gives_its_output_ratio(tiny_model, tmp_path):
    import torch

    from napari_rckd.models import ModelConfig, create_model, save_checkpoint

    torch.manual_seed(1)
    config = ModelConfig(
        task="dense",
        backbone="efficientnet_b0",
        decoder="light",
        num_outputs=2,
        input_mpp=4.0,
        tile_size=64,
    )
    other = save_checkpoint(tmp_path / "light" / "best.safetensors", create_model(config), {})
    out = tmp_path / "infer.json"
    args = ["bench", "infer", str(shared_path("slides/cmu-1-small-region.svs"))]
    args += ["--checkpoint", str(tiny_model), "--against", str(other), "--tiles", "4"]
    args += ["--batch-size", "2", "--repeats", "2", "--sizes", "", "--device", "cpu"]
    assert main([*args, "--json", str(out), "--windows", "model"]) == 0
    first, _, second, _, ratio = json.loads(out.read_text())["rows"]
    assert first["model"] == f"{tiny_model.parent.name}/tiny.safetensors"
    assert second["model"] == "light/best.safetensors"
    assert ratio["test"].startswith("output px/s, light/best.safetensors ÷ ")
    assert ratio["ratio_min"] <= ratio["ratio"] <= ratio["ratio_max"]
    rounds = zip(first["output_mpx_per_s_rounds"], second["output_mpx_per_s_rounds"], strict=True)
    assert ratio["ratio"] == pytest.approx(statistics.median(b / a for a, b in rounds))
