"""Inference: model-only vs full-pipeline tiles/s on a slide, with and without tissue detection,
and the peak RSS of whole-slide runs at two tile counts and two sparse synthetic sizes, with the
naive way (level 0 into numpy, tile, predict at the same batch size) side by side.

The throughput ratios are the median (min–max) of ``--repeats`` rounds measured in this run,
model-only and pipeline interleaved. The pipeline reads cold: the slide's decoded-tile cache is
cleared before every pass (the file may still be in the operating system's page cache). The
tissue-detection row times the detection from scratch (its cache cleared) in every round.

Without --checkpoint a dense CSAT with random weights is used (said in the output): speed and
memory do not depend on the weights. --against times a second model on the same tiles right
after the first and adds its output-pixel ratio, round by round (two decoders, two backbones). Each whole-slide run happens in a fresh process so its peak
RSS is its own. Time to the first visible tile and to a full viewport need the napari glue and are
measured by `bench viewport`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from napari_rckd.bench.infer_model import model_label


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help="a slide (default: the synthetic sample slide)")
    parser.add_argument("--checkpoint", help="a dense .safetensors model (default: random CSAT)")
    parser.add_argument(
        "--against",
        metavar="CHECKPOINT",
        help="a second dense model timed right after the first on the same tiles; adds the "
        "output-pixel ratio against ÷ first for each tiling (e.g. two decoders)",
    )
    parser.add_argument("--tiles", type=int, default=32, help="tiles for the throughput test")
    parser.add_argument(
        "--repeats", type=int, default=3, help="throughput rounds; ratios are their median"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--mpp", type=float, default=2.0, help="model µm/px (random model only)")
    parser.add_argument(
        "--sizes", default="20000,40000", help="sparse synthetic slide sides for the RSS test"
    )
    parser.add_argument(
        "--tile-counts",
        default="16,all",
        help="whole-slide runs on the first size stopping after this many tiles ('all': none)",
    )
    parser.add_argument(
        "--wsi-mpp", type=float, default=4.0, help="model µm/px of the whole-slide runs"
    )
    parser.add_argument(
        "--windows",
        choices=("whole-slide", "model", "both"),
        default="whole-slide",
        help="tile as predict does (whole-slide: 512-px windows around the model's halo), at "
        "the model's own tile size as live view does, or both with their output-pixel ratio "
        "(default whole-slide)",
    )
    parser.add_argument("--device", default="auto")


def _tile_counts(text: str) -> list[int | None]:
    counts = [None if part.strip() == "all" else int(part) for part in text.split(",") if part]
    return counts or [None]


def run(args: argparse.Namespace) -> int:
    from napari_rckd.bench.infer_memory import whole_slide_rows
    from napari_rckd.bench.infer_speed import output_ratio_row, throughput
    from napari_rckd.errors import RckdError
    from napari_rckd.io import open_slide
    from napari_rckd.io.samples import synthetic_sample_path
    from napari_rckd.report import report

    path = Path(args.slide) if args.slide else synthetic_sample_path()
    tilings = ["model", "whole-slide"] if args.windows == "both" else [args.windows]
    models = [args.checkpoint] + ([args.against] if args.against else [])
    if args.against and Path(args.against) == Path(args.checkpoint or ""):
        raise RckdError(f"--against {args.against} is the --checkpoint; give another model.")
    with tempfile.TemporaryDirectory() as tmp:
        with open_slide(path) as slide:
            runs = {
                (model, tiling): throughput(args, slide, tmp, tiling, model)
                for model in models
                for tiling in tilings
            }
        rows = [row for run_rows in runs.values() for row in run_rows]
        # ratios of the first row of each run: the pipeline alone
        if args.windows == "both":
            for model in models:
                rows.append(
                    output_ratio_row(
                        runs[model, "model"][0],
                        runs[model, "whole-slide"][0],
                        f"whole-slide windows ÷ the model's own, {model_label(model)}",
                    )
                )
        if args.against:
            for tiling in tilings:
                rows.append(
                    output_ratio_row(
                        runs[args.checkpoint, tiling][0],
                        runs[args.against, tiling][0],
                        f"{model_label(args.against)} ÷ {model_label(args.checkpoint)}",
                    )
                )
        sizes = [int(s) for s in args.sizes.split(",") if s]
        rows += whole_slide_rows(args, sizes, _tile_counts(args.tile_counts), tmp)
    model = "checkpoint" if args.checkpoint else "random-weight rckd_csat (no checkpoint given)"
    report(
        "Inference: throughput (cold tile cache), tissue detection, whole-slide memory, naive",
        rows,
        args.json,
        model=model,
    )
    return 0
