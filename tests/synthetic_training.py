"""Small learnable data and models for the fit-loop tests, and the worker torchrun launches.

The stage-1 "teacher" here marks dark pixels as nuclei (hematoxylin is dark), so a tiny
convolutional student can learn it in a few steps. Run as a script under torchrun it trains
that student on 2 CPU processes and writes what the DDP test checks.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset


class DarkPixelTiles(Dataset):
    """Random RGB tiles; target channel 0 = 1 where the pixel is dark (a stand-in teacher)."""

    def __init__(self, count: int, size: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, 3, size, size, generator=generator)
        self.targets = (self.images.mean(1, keepdim=True) < 0.45).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "target": self.targets[index]}


class LabelledTiles(Dataset):
    """Random tiles whose class is their brightest colour channel (3 classes)."""

    def __init__(self, count: int, size: int = 8, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, 3, size, size, generator=generator)
        self.labels = self.images.mean((2, 3)).argmax(1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index], "group": index % 4}


def tiny_dense_model(outputs: int = 1) -> nn.Module:
    """A few convolutions with BatchNorm and dropout (so RNG and buffers matter on resume)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout2d(0.1),
        nn.Conv2d(8, outputs, 1),
    )


def tiny_classifier(classes: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


def main() -> None:
    """Stage-1 distillation on 2 CPU processes; each rank writes its result and weights."""
    from napari_rckd.training import DistillationTask, FitConfig, checkpointing, fit

    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    # Count the weight files this rank writes: only rank 0 may write any.
    writes = []
    save_weights = checkpointing.save_weights
    checkpointing.save_weights = lambda path, *rest: (
        writes.append(path.name) or save_weights(path, *rest)
    )
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts them)
    task = DistillationTask(tiny_dense_model())
    config = FitConfig(
        steps=6,
        batch_size=4,
        lr=1e-2,
        val_every=3,
        checkpoint_every=3,
        device="cpu",
        tensorboard=False,
    )
    result = fit(task, DarkPixelTiles(32), DarkPixelTiles(10, seed=1), config, args.out_dir / "run")
    weights = {k: v.tolist() for k, v in task.model.state_dict().items()}
    report = {
        "rank": rank,
        "world_size": int(os.environ["WORLD_SIZE"]),
        "status": result.status,
        "step": result.step,
        "history": result.history,
        "weight_writes": writes,
        "process_group_left": not torch.distributed.is_initialized(),
        "weights": weights,
    }
    (args.out_dir / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
