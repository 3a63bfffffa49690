"""Inference speed of backbones: images/s, params, MACs, and MAC rate as a fraction of matmul peak.

All models run in one process, side by side, in eval mode with channels_last (CPU: float32;
CUDA: bf16 autocast). The matmul peak is measured in the same run, so the fraction says how
well each architecture uses the hardware independent of how fast the machine is. A second
table times the packaged nuclei models end to end (``predict`` on a tile of the sample slide,
resampling and instance separation included), as a user's live view runs them. A third shows
``csat`` given by name and by its weights file at batch 1 and 8: one teacher class and one
batched runner serve both, with the same outputs (``same_output``) and so the same tiles/s.
"""

from __future__ import annotations

import argparse
import os
import time

from napari_rckd.defaults import DECODERS

DEFAULT_MODELS = ["rckd_csat", "efficientnet_b0", "convnextv2_atto", "resnet18"]
DEFAULT_NUCLEI = ["builtin", "learned", "csat", "classical"]
NUCLEI_TILE = 256  # px at the sample's 0.5 µm/px, the tile `evaluate nuclei` counts in
RUNTIME_BATCHES = [1, 8]  # tiles per call of the by-name / by-file csat rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="timm model names")
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512], help="input sizes (px)")
    parser.add_argument(
        "--batch", type=int, default=None, help="images per batch (default 4 on CPU, 64 on CUDA)"
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="time to measure each model at each size"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd models (slow to start)"
    )
    parser.add_argument(
        "--decoder",
        choices=DECODERS,
        default="standard",
        help="the dense decoder whose MACs are set against the encoder's (default standard)",
    )
    parser.add_argument(
        "--nuclei",
        nargs="*",
        default=DEFAULT_NUCLEI,
        help=f"nuclei models to time end to end (default {' '.join(DEFAULT_NUCLEI)}; none: skip)",
    )
    parser.add_argument(
        "--runtime-batches",
        nargs="*",
        type=int,
        default=RUNTIME_BATCHES,
        help="batches at which csat by name and by file are timed through the batched runner "
        f"(default {' '.join(map(str, RUNTIME_BATCHES))}; none: skip)",
    )


def run(args: argparse.Namespace) -> int:
    import timm
    import torch

    import napari_rckd.models  # noqa: F401  (registers rckd_csat)
    from napari_rckd.report import report

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch = args.batch or (64 if device.type == "cuda" else 4)
    # Other work on the machine only ever slows the matmul, so the best rate seen is the peak;
    # measuring it before every model keeps it honest when the load changes during the run.
    peaks = []
    rows = []
    load_at_start = os.getloadavg()[0]
    for name in args.models:
        peaks.append(matmul_peak_macs(device, min(args.seconds, 1.0)))
        model = timm.create_model(name).eval().to(device, memory_format=torch.channels_last)
        params = sum(p.numel() for p in model.parameters())
        variants = [("eager", model)]
        if args.compile:
            variants.append(("compiled", torch.compile(model, dynamic=False)))
        dense = dense_model(name, args.decoder).to(device)
        for size in args.sizes:
            macs = count_macs(model, size, device)
            encoder = count_macs(dense.backbone, size, device)
            decoder = count_macs(dense, size, device) - encoder
            for mode, runnable in variants:
                images_per_s = images_per_second(runnable, size, batch, device, args.seconds)
                rows.append(
                    {
                        "model": name,
                        "mode": mode,
                        "size": size,
                        "params_M": params / 1e6,
                        "GMACs": macs / 1e9,
                        "images_per_s": images_per_s,
                        "GMAC_per_s": macs * images_per_s / 1e9,
                        # the dense model (nuclei, regions) with --decoder: its decoder and
                        # head against the encoder it reads
                        "decoder": args.decoder,
                        "dense_decoder_GMACs": decoder / 1e9,
                        "decoder_per_encoder": decoder / encoder,
                    }
                )
        del model, dense, variants
    peaks.append(matmul_peak_macs(device, min(args.seconds, 1.0)))
    nuclei_rows = [
        {"nuclei_model": spec, "tiles_per_s": nuclei_tiles_per_second(spec, device, args.seconds)}
        for spec in args.nuclei
    ]
    runtime_rows = by_name_and_file(device, args.runtime_batches, args.seconds)
    peak = max(peaks)
    for row in rows:
        row["fraction_of_peak"] = row["GMAC_per_s"] * 1e9 / peak
    report(
        f"Backbone inference on {device.type} (batch {batch}, channels_last"
        + (", bf16 autocast)" if device.type == "cuda" else ", float32)"),
        rows,
        args.json,
        matmul_peak_GMAC_per_s=round(peak / 1e9, 1),
        device=str(device),
        batch=batch,
        # Figures from a busy machine are low; the load says how busy it was.
        load_average_1min=f"{load_at_start:.1f} at start, {os.getloadavg()[0]:.1f} at end",
        json_extra={"nuclei_models": nuclei_rows, "nuclei_runtime": runtime_rows},
    )
    if nuclei_rows:
        report(
            f"Nuclei models end to end on {device.type} ({NUCLEI_TILE}² tiles at 0.5 µm/px of the "
            "sample slide, one at a time as live view asks)",
            nuclei_rows,
            None,
        )
    if runtime_rows:
        report(
            f"csat by name and by file on {device.type}: one code path ({NUCLEI_TILE}² tiles "
            "of the sample slide, batches through the runner)",
            runtime_rows,
            None,
        )
    return 0


def by_name_and_file(device, batches: list[int], seconds: float) -> list[dict]:
    """Tiles/s of ``csat`` given by name and as its shipped weights file, at each batch: the
    class and runner that serve each (the code path) and whether their outputs are equal."""
    import numpy as np

    from napari_rckd.models.shipped import shipped_weights
    from napari_rckd.teachers import get_teacher

    if not batches:
        return []
    tiles = _sample_tiles(max(batches))
    rows, reference = [], None
    for given, spec in (("name", "csat"), ("file", str(shipped_weights("csat")))):
        teacher = get_teacher(spec, device=str(device))
        outputs = teacher.predict_batch(tiles)
        labels = np.stack([o.labels for o in outputs])
        reference = labels if reference is None else reference
        runner = getattr(teacher, "runner", None)
        path = f"{type(teacher).__name__}.predict_batch -> {type(runner).__name__}"
        for batch in batches:
            rate = _timed(lambda b=batch, t=teacher: t.predict_batch(tiles[:b]), device, seconds)
            rows.append({
                "nuclei_model": "csat", "given_as": given, "code_path": path, "batch": batch,
                "tiles_per_s": rate * batch, "same_output": bool(np.array_equal(labels, reference)),
            })  # fmt: skip
    return rows


def _sample_tiles(count: int):
    """``count`` different tiles of the sample slide, side by side along one row."""
    import numpy as np

    from napari_rckd.io import open_slide
    from napari_rckd.io.samples import synthetic_sample_path

    with open_slide(synthetic_sample_path()) as slide:
        width = slide.levels[0].shape[1]
        step = max(1, (width - NUCLEI_TILE) // count)
        return np.stack(
            [slide.read_region(0, 1024, i * step, NUCLEI_TILE, NUCLEI_TILE) for i in range(count)]
        )


def nuclei_tiles_per_second(spec: str, device, seconds: float) -> float:
    """``predict`` calls per second of nuclei model ``spec`` on one tile of the sample slide."""
    from napari_rckd.io import open_slide
    from napari_rckd.io.samples import synthetic_sample_path
    from napari_rckd.teachers import get_teacher

    teacher = get_teacher(spec, device=str(device))
    with open_slide(synthetic_sample_path()) as slide:
        tile = slide.read_region(0, 1024, 1024, NUCLEI_TILE, NUCLEI_TILE)
    return _timed(lambda: teacher.predict(tile, slide.mpp), device, seconds)


def _autocast(device):
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()  # CPU-GPU sync point: the clock must see the finished work


def _timed(fn, device, seconds: float) -> float:
    """Calls per second of ``fn`` after a warm-up, measured for at least ``seconds``."""
    for _ in range(2):
        fn()
    _sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls / elapsed


def matmul_peak_macs(device, seconds: float) -> float:
    """MAC/s of a large square matmul in the dtype the models run in: the practical peak."""
    import torch

    n = 4096 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    repeats = 20 if device.type == "cuda" else 1

    def step():
        for _ in range(repeats):
            torch.mm(a, b)

    return _timed(step, device, seconds) * repeats * n**3


def dense_model(backbone: str, decoder: str = "standard"):
    """The package's dense model (encoder, FPN decoder, 2-channel head) on ``backbone``."""
    from napari_rckd.models import ModelConfig, create_model

    config = ModelConfig(task="dense", backbone=backbone, num_outputs=2, decoder=decoder)
    return create_model(config).eval()


def count_macs(model, size: int, device) -> float:
    """Multiply-accumulates for one image (FlopCounterMode FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def images_per_second(model, size: int, batch: int, device, seconds: float) -> float:
    import torch

    x = torch.rand(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode(), _autocast(device):
            model(x)

    return _timed(step, device, seconds) * batch
