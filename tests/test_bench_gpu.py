"""`napari-rckd bench gpu`: every step runs at toy sizes on the CPU (the figures come from a GPU
session), on CUDA when there is one, and without a GPU it says what to do in one sentence."""

from __future__ import annotations

import json

import pytest

from napari_rckd.cli import main

STEPS = ["forward csat", "forward learned", "whole-slide predict", "stage-1 training"]


def run_quick(tmp_path, device: str) -> dict:
    out = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--quick", "--device", device, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def check_rows(rows) -> None:
    steps = [row["step"] for row in rows]
    assert steps[:4] == STEPS and steps[4].startswith("torchrun stage 1")
    assert steps[5].startswith("live first tile")
    for row in rows:
        assert row.get("status", "ok") == "ok", row
    assert all(row["tiles_per_s"] > 0 for row in rows[:4])
    assert rows[2]["ratio"] > 0 and rows[3]["steps_per_s"] > 0
    live = rows[5]  # two timings: its row holds them and their ratio, never compared here
    assert live["model_1_tile_s"] > 0 and live["first_tile_s"] > 0 and live["view_tiles"] >= 1
    assert live["first_tile_ratio"] == pytest.approx(live["first_tile_s"] / live["model_1_tile_s"])


def test_every_step_runs_at_toy_sizes_on_the_cpu(tmp_path):
    check_rows(run_quick(tmp_path, "cpu")["rows"])


def test_every_step_runs_on_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    figures = run_quick(tmp_path, "cuda")
    check_rows(figures["rows"])
    assert figures["rows"][0]["peak_gpu_mb"] > 0


def test_without_a_gpu_it_says_what_to_do(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "gpu", "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "pass --quick --device cpu" in error[0]
