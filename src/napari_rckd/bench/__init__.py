"""Benchmarks: each prints a table of figures and can write them as JSON.

`napari-rckd bench read|models|train|infer|transfer|mpp|suggest|fuzz|faults|scale|cohort|browse|viewport|gpu ...`; every target is a module in this
package with ``add_arguments(parser)`` and ``run(args)``, imported only when chosen.
"""

from __future__ import annotations

import argparse
import importlib

# target -> (module, one-line help)
TARGETS: dict[str, tuple[str, str]] = {
    "read": (
        "napari_rckd.bench.read",
        "slide open time, random-read rate (vs OpenSlide) and memory",
    ),
    "models": (
        "napari_rckd.bench.models",
        "images/s, params, MACs and MAC efficiency of backbones",
    ),
    "train": (
        "napari_rckd.bench.train",
        "RCKD stage-1 tiles/s: real loop vs compute only, peak memory",
    ),
    "infer": (
        "napari_rckd.bench.infer",
        "pipeline ÷ model-only (cold reads, median of rounds, with tissue detection), "
        "whole-slide peak RSS at two tile counts and sizes, naive at the same batch size",
    ),
    "fuzz": (
        "napari_rckd.bench.fuzz",
        "mutated TIFFs through every reader path: hangs, crashes, raw exceptions (must be 0)",
    ),
    "transfer": (
        "napari_rckd.bench.transfer",
        "RCKD stage 2 on grouped labelled tiles: init × label budget × seed, paired to random",
    ),
    "mpp": (
        "napari_rckd.bench.mpp",
        "the nuclei-based µm/px estimate against every source of known mpp: relative error",
    ),
    "faults": (
        "napari_rckd.bench.faults",
        "kill -9 predict at random moments: old results or new ones after the next start, never a mix",
    ),
    "gpu": (
        "napari_rckd.bench.gpu",
        "one GPU session's figures: forward, whole-slide predict, stage-1 training, DDP, live",
    ),
    "scale": (
        "napari_rckd.bench.scale",
        "predict at growing slide sizes: tiles/s, export s per 1,000 nuclei, peak RSS, napari open",
    ),
    "cohort": (
        "napari_rckd.bench.cohort",
        "slides/h and tiles/s in-process, local:1 and local:2; Dask and scheduler overhead, "
        "worker peak RSS at two slide sizes, 10,000 slides on 16 workers",
    ),
    "browse": (
        "napari_rckd.bench.browse",
        "live nuclei over many views of a large slide in napari: RSS against the memory budget",
    ),
    "suggest": (
        "napari_rckd.bench.suggest",
        "Suggest regions: precision of 'tile has a nuclei error' of each signal vs random tiles",
    ),
    "viewport": (
        "napari_rckd.bench.viewport",
        "live napari viewport: time to the first tile and to a full 1920×1080 view after a pan",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (module_name, help_text) in TARGETS.items():
        module = importlib.import_module(module_name)
        target_parser = sub.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).strip()
        )
        module.add_arguments(target_parser)
        target_parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
        target_parser.set_defaults(_bench_run=module.run)


def run(args: argparse.Namespace) -> int:
    return args._bench_run(args)
