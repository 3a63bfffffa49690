"""RCKD stage-1 throughput: the real training loop against the student's bare compute, in one run.

First the teacher answers every planned tile once (the cache is warmed; its rate is shown),
then the same student is timed twice on the same tiles: (1) "compute only", forward +
backward + AdamW step on batches already in memory; (2) one epoch of the real stage-1 `fit`
loop (cache reads, augmentation, DataLoader, clipping, LR schedule). Their ratio says how
much the data side costs; the target is >= 0.8. The first step of each is a warm-up and is
not timed. Peak resident memory covers the whole run (and data-loading workers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "slides", nargs="*", help="slides to cut tiles from (default: the synthetic sample slide)"
    )
    parser.add_argument("--backbone", default="rckd_csat", help="student backbone")
    parser.add_argument("--teacher", default="builtin", help="teacher (default builtin)")
    parser.add_argument("--tile-size", type=int, default=256, help="tile side in px")
    parser.add_argument("--mpp", type=float, default=0.5, help="µm per pixel of the tiles")
    parser.add_argument("--tiles", type=int, default=128, help="tiles in the timed epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cache", metavar="DIR", help="teacher cache (default: a temporary one)")


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_rckd.report import report

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="rckd-bench-train-") as scratch:
        cache = Path(args.cache) if args.cache else Path(scratch) / "cache"
        rows, extra = measure(args, cache, Path(scratch) / "run")
    report("RCKD stage 1: real loop vs compute only (tiles/s)", rows, args.json, **extra)
    return 0


def measure(args: argparse.Namespace, cache: Path, out_dir: Path) -> tuple[list[dict], dict]:
    import torch

    from napari_rckd.devices import resolve_device
    from napari_rckd.models import ModelConfig, create_model
    from napari_rckd.teachers import get_teacher
    from napari_rckd.training import Callback, DistillationTask, FitConfig, fit
    from napari_rckd.training.data.augment import Augment
    from napari_rckd.training.data.stage1 import TissueTileDataset

    slides = args.slides or [_sample_slide()]
    teacher = get_teacher(args.teacher)
    dataset = TissueTileDataset(
        slides, teacher, cache, count=args.tiles, size=args.tile_size, mpp=args.mpp,
        augment=Augment(),
    )  # fmt: skip
    start = time.perf_counter()
    for _ in dataset.precompute():
        pass
    warm_seconds = time.perf_counter() - start
    device = torch.device(resolve_device(args.device))

    def student() -> DistillationTask:
        config = ModelConfig(task="dense", backbone=args.backbone, tile_size=args.tile_size)
        return DistillationTask(create_model(config))

    # (1) compute only: the epoch's batches already in memory, unaugmented
    items = [dataset[i] for i in range(len(dataset))]
    steps = len(items) // args.batch_size
    batches = [
        {
            key: torch.stack(
                [it[key] for it in items[s * args.batch_size : (s + 1) * args.batch_size]]
            )
            .to(device)
            .contiguous(memory_format=torch.channels_last)
            for key in ("image", "target")
        }
        for s in range(steps)
    ]
    task = student().to(device)
    task.model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    times = []
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        task(batch)["loss"].backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter())
    compute_rate = (steps - 1) * args.batch_size / (times[-1] - times[0])

    # (2) one epoch of the real loop on the warm cache
    class StepClock(Callback):
        """Wall-clock time at the end of every optimizer step."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step(self, info) -> None:
            self.times.append(time.perf_counter())

    clock = StepClock()
    config = FitConfig(
        epochs=1, batch_size=args.batch_size, lr=1e-4, val_every=10**6, checkpoint_every=10**6,
        device=args.device, num_workers=args.workers, tensorboard=False,
    )  # fmt: skip
    fit(student(), dataset, None, config, out_dir, callbacks=[clock])
    loop_rate = (len(clock.times) - 1) * args.batch_size / (clock.times[-1] - clock.times[0])

    rows = [
        {"phase": "teacher (cold cache fill)", "tiles_s": len(dataset) / warm_seconds},
        {"phase": "compute only (in memory)", "tiles_s": compute_rate},
        {"phase": "stage-1 fit loop (warm cache)", "tiles_s": loop_rate},
    ]
    extra = {
        "ratio_loop_to_compute": round(loop_rate / compute_rate, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "backbone": args.backbone,
        "tile_size": args.tile_size,
        "batch_size": args.batch_size,
        "steps_timed": steps - 1,
        "workers": args.workers,
        "device": str(device),
        "slides": [Path(s).name for s in slides],
    }
    return rows, extra


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CPU-GPU sync point: time finished work only


def _peak_rss_mb() -> float:
    """Peak resident memory of this process and its (DataLoader worker) children."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024  # Linux reports KiB


def _sample_slide() -> Path:
    from napari_rckd.io.samples import synthetic_sample_path

    return synthetic_sample_path()
