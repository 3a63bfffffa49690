"""Stage-1 distillation under torchrun with 2 CPU processes (gloo), through the same `fit`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_rckd.training.checkpointing import load_state

WORKER = Path(__file__).with_name("synthetic_training.py")


@pytest.mark.slow
def test_two_process_distillation_trains_in_step_and_writes_once(tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--standalone", str(WORKER), str(tmp_path),
    ]  # fmt: skip
    # A session of its own, so a hung run is killed with its worker processes.
    launcher = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = launcher.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        raise
    assert launcher.returncode == 0, output[-3000:]

    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["world_size"] == 2
        assert report["status"] == "completed" and report["step"] == 6
        assert report["process_group_left"], "destroy_process_group was not called"
    # Gradients were averaged, so both ranks hold the very same weights.
    for name, value in reports[0]["weights"].items():
        assert torch.equal(torch.tensor(value), torch.tensor(reports[1]["weights"][name])), name
    # Validation metrics were reduced over both ranks' shards, so the ranks agree.
    assert reports[0]["history"] == reports[1]["history"]
    assert [h["step"] for h in reports[0]["history"]] == [3, 6]
    # Only rank 0 writes: last at steps 3 and 6, best on every improvement.
    assert reports[1]["weight_writes"] == []
    assert reports[0]["weight_writes"].count("last.safetensors") == 2
    run = tmp_path / "run"
    assert (run / "last.safetensors").is_file() and (run / "best.safetensors").is_file()
    state = load_state(run / "last.state.pt")
    assert state["train_state"].step == 6
    assert len(state["rng"]) == 2  # both ranks' random streams, for an exact resume
    # 32 tiles over 2 ranks at 4 per batch: 4 steps per epoch, so 6 steps end inside epoch 2.
    assert state["train_state"].epoch == 1 and state["train_state"].batch_in_epoch == 2
