"""`torchrun --nproc-per-node 2 napari-rckd pretrain` on a real slide with 2 CPU processes (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import shared_path


@pytest.mark.slow
def test_pretrain_under_torchrun_writes_one_loadable_checkpoint(tmp_path):
    from napari_rckd.models import load_checkpoint
    from napari_rckd.training.checkpointing import load_state

    slide = shared_path("slides/cmu-1-small-region.svs")
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--standalone", "-m", "napari_rckd.cli",
        "pretrain", str(slide), "--out", str(out), "--backbone", "resnet18",
        "--tile-size", "64", "--tiles", "8", "--val-tiles", "2", "--batch-size", "2",
        "--steps", "2", "--device", "cpu", "--workers", "1",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    # rank 0 alone reports and writes
    assert finished.stdout.count("completed at step 2") == 1
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "best.safetensors",
        "last.safetensors",
    ]
    model, metadata = load_checkpoint(out / "last.safetensors")
    assert model.config.task == "dense" and metadata["provenance"]["step"] == 2
    state = load_state(out / "last.state.pt")
    assert len(state["rng"]) == 2  # both processes' random streams, for an exact resume
    # both ranks filled the shared teacher cache: 8 + 2 tiles, each answered once
    assert len(list((out / "teacher-cache").rglob("*.npz"))) == 10
