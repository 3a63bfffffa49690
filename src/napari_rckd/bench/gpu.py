"""A GPU session's figures in one command, sized to finish within 8 minutes on one GPU.

For the sessions that get a GPU for a few minutes: everything worth knowing about the
accelerated paths, measured side by side, without preparing anything.

1. forward: the shipped RCKD-CSAT nuclei student (`csat`) and the learned nuclei teacher at
   256², bf16 autocast, batch ``--batch``: tiles/s and peak GPU memory;
2. whole-slide predict: `bench infer` on the slide (a dense CSAT at 0.5 µm/px, 256² windows):
   pipeline and model-only tiles/s and their ratio (median of 3 rounds, min–max);
3. stage-1 training: `bench train`: steps/s and tiles/s of the real loop, and its ratio to
   compute only;
4. DDP: a short `torchrun` stage-1 run on every GPU (at most 2): it ends cleanly;
5. live view without a display: the predictor's first tile after a plan, against one tile of
   the same model's time.

Steps 2-4 run as child processes, so each one's memory and CUDA context are its own.
``--quick --device cpu`` runs every step at toy sizes: the tests use it to keep each path
working on machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from napari_rckd.errors import RckdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help="slide for predict and training (default: sample)")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (cpu only with --quick)")
    parser.add_argument("--batch", type=int, default=256, help="tiles per forward (default 256)")
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes: check that every step runs"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_rckd.devices import resolve_device
    from napari_rckd.io.samples import synthetic_sample_path
    from napari_rckd.report import report

    device = torch.device(resolve_device(args.device))
    if device.type != "cuda" and not args.quick:
        raise RckdError(
            f"bench gpu measures a CUDA GPU and found {device.type}; run it on a GPU machine, or "
            "pass --quick --device cpu to check that its steps run"
        )
    slide = str(Path(args.slide) if args.slide else synthetic_sample_path())
    size = 64 if args.quick else 256
    batch = 2 if args.quick else args.batch
    rows = forward_rows(device, size, batch, seconds=0.2 if args.quick else 5.0)
    with tempfile.TemporaryDirectory(prefix="rckd-bench-gpu-") as tmp:
        rows.append(_child("whole-slide predict", _infer_argv(slide, device, args.quick), tmp))
        rows.append(_child("stage-1 training", _train_argv(slide, device, args.quick), tmp))
        rows.append(ddp_smoke(slide, device, args.quick, Path(tmp)))
    rows.append(first_live_tile(slide, device))
    report(f"GPU session figures on {_device_name(device)}", rows, args.json)
    return 0


def forward_rows(device, size: int, batch: int, seconds: float) -> list[dict]:
    """tiles/s and peak memory of the shipped networks at ``size``², bf16 on CUDA."""
    import torch

    from napari_rckd.bench.models import images_per_second
    from napari_rckd.teachers import get_teacher

    networks = {
        spec: get_teacher(spec, device=str(device)).runner.model
        for spec in ("csat", "learned")  # the shipped student and the network inside builtin
    }
    rows = []
    for name, model in networks.items():
        model = model.eval().to(device, memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rate = images_per_second(model, size, batch, device, seconds)
        memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        rows.append(dict(step=f"forward {name}", size=size, batch=batch, tiles_per_s=rate,
                         peak_gpu_mb=memory))  # fmt: skip
    return rows


def _infer_argv(slide: str, device, quick: bool) -> list[str]:
    tiles, batch = ("8", "2") if quick else ("4096", "64")
    return ["infer", slide, "--device", str(device), "--mpp", "0.5", "--tiles", tiles,
            "--batch-size", batch, "--repeats", "1" if quick else "3", "--sizes", ""]  # fmt: skip


def _train_argv(slide: str, device, quick: bool) -> list[str]:
    tiles, batch, size = ("8", "4", "64") if quick else ("1024", "64", "256")
    return ["train", slide, "--device", str(device), "--tiles", tiles, "--batch-size", batch,
            "--tile-size", size, "--workers", "0" if quick else "8"]  # fmt: skip


def _child(step: str, bench_argv: list[str], tmp: str) -> dict:
    """Run `napari-rckd bench ...` in a child process; its key figures as a row named ``step``."""
    out = Path(tmp) / f"{bench_argv[0]}.json"
    started = time.perf_counter()
    command = [sys.executable, "-m", "napari_rckd.cli", "bench", *bench_argv, "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(step=step, status=f"failed (exit {done.returncode}): {last}")
    figures = json.loads(out.read_text())
    row = dict(step=step, status="ok", seconds=time.perf_counter() - started)
    if bench_argv[0] == "infer":  # the cold-cache throughput row
        first = figures["rows"][0]
        row.update(tiles_per_s=first["pipeline_tiles_per_s"])
        row.update(model_tiles_per_s=first["model_tiles_per_s"], ratio=first["ratio"])
        row.update(ratio_range=f"{first['ratio_min']:.2f}-{first['ratio_max']:.2f}")
    else:  # bench train: the real loop, and its steps at the batch used
        loop = next(r for r in figures["rows"] if r["phase"].startswith("stage-1 fit loop"))
        row.update(tiles_per_s=loop["tiles_s"], steps_per_s=loop["tiles_s"] / figures["batch_size"])
        row.update(ratio=figures["ratio_loop_to_compute"])
    return row


def ddp_smoke(slide: str, device, quick: bool, tmp: Path) -> dict:
    """A short stage-1 run under torchrun on up to two GPUs (one process on a CPU)."""
    import torch

    processes = min(2, torch.cuda.device_count()) if device.type == "cuda" else 1
    steps, batch, size = ("2", "2", "64") if quick else ("20", "32", "256")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", "-m", "napari_rckd.cli", "pretrain", slide,
               "--out", str(tmp / "ddp"), "--steps", steps, "--batch-size", batch,
               "--tile-size", size, "--tiles", "16", "--val-tiles", "4",
               "--device", device.type, "--workers", "0"]  # fmt: skip
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    ok = done.returncode == 0 and (tmp / "ddp" / "last.safetensors").exists()
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return dict(step=f"torchrun stage 1, {processes} process(es)",
                status="ok" if ok else f"failed (exit {done.returncode}): {last}",
                seconds=time.perf_counter() - started)  # fmt: skip


def first_live_tile(slide_path: str, device) -> dict:
    """The predictor's first tile after a plan (no display), against one tile of model time."""

    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.sources import NucleiSource
    from napari_rckd.inference.tiling import Box
    from napari_rckd.io import open_slide

    with open_slide(slide_path) as slide:
        source = NucleiSource("csat", str(device))
        with Predictor(slide, [source]) as predictor:
            height, width = slide.shape
            predictor.compute([predictor.plan_view(Box(0, 0, 512, 512), 1.0).requests[0]])  # warm
            view = Box(height / 2 - 540, width / 2 - 960, height / 2 + 540, width / 2 + 960)
            plan = predictor.plan_view(view, 1.0)
            window = predictor._read("nuclei", plan.requests[0])[None]
            started = time.perf_counter()
            source.predict(window)
            model_s = time.perf_counter() - started
            while not predictor.events.empty():  # the warm-up's tile is not the first one
                predictor.events.get_nowait()
            predictor.start()
            started = time.perf_counter()
            predictor.submit(plan)
            predictor.events.get(timeout=120)
            first_s = time.perf_counter() - started
            predictor.submit(predictor.plan_view(Box(0, 0, 0, 0), 0.0))  # stop the rest
    return dict(step="live first tile (csat, no display)", status="ok", first_tile_s=first_s,
                model_1_tile_s=model_s, first_tile_ratio=first_s / max(model_s, 1e-9),
                view_tiles=len(plan.requests))  # fmt: skip


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
