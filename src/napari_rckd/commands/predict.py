"""Predict nuclei (and, when given models, tissue subtype and cancer region) over every tissue
tile of slides.

`napari-rckd predict SLIDE|FOLDER --out DIR` runs the built-in nuclei model and writes
DIR/<slide>.zarr (OME-Zarr results that open over the slide in napari), DIR/<slide>.nuclei.geojson
(QuPath detections) and DIR/<slide>.nuclei.csv (one row of measurements per nucleus). Add
--subtype SUB.safetensors and --region REG.safetensors for the other results, --export to choose
the files (geojson, csv, ome-tiff or none) and --nuclei none to skip nuclei. Under torchrun each
process takes every WORLD_SIZE-th slide (rank i: slides i, i+W, ...) on its own GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path

from napari_rckd.defaults import DEFAULT_EXPORTS, DEFAULT_NUCLEI, EXPORTS
from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="SLIDE|FOLDER", help="a slide file or a folder of slides")
    parser.add_argument(
        "--nuclei",
        metavar="SPEC",
        default=DEFAULT_NUCLEI,
        help=f"nuclei model: {DEFAULT_NUCLEI} (default: the built-in teacher on CPU, the "
        "RCKD-CSAT student on a GPU), builtin, learned, csat, classical, otsu, a TorchScript "
        "teacher, a dense student .safetensors, or none",
    )
    parser.add_argument(
        "--subtype", metavar="CKPT", help="a classification .safetensors checkpoint"
    )
    parser.add_argument(
        "--region", metavar="CKPT", help="a dense segmentation .safetensors checkpoint"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps"
    )
    parser.add_argument(
        "--export",
        default=",".join(DEFAULT_EXPORTS),
        metavar="LIST",
        help=f"comma-separated files beside the .zarr results: {', '.join(EXPORTS)} or none "
        f"(default {','.join(DEFAULT_EXPORTS)})",
    )
    parser.add_argument(
        "--slide-mpp",
        type=float,
        metavar="UM",
        help="µm per pixel for slides that do not record it",
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="tiles per model call (default 4)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the models: each compiles once (~30 s on a CPU) and then runs "
        "faster; pays on whole slides, not on a few tiles",
    )
    parser.add_argument(
        "--region-threshold", type=float, default=0.5, help="probability for the region mask"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results of the same slides already in --out (default: refuse)",
    )


def find_slides(path: Path) -> list[Path]:
    from napari_rckd.io import SLIDE_SUFFIXES

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RckdError(f"{path} is neither a slide file nor a folder; check the path.")
    slides = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and "".join(p.suffixes[-1:]).lower() in SLIDE_SUFFIXES
    )
    if not slides:
        raise RckdError(
            f"folder {path} holds no slide files ({', '.join(sorted(SLIDE_SUFFIXES))}); "
            "point at a slide or a folder of slides."
        )
    return slides


def shard(items: list, rank: int, world_size: int) -> list:
    """Rank ``rank`` of ``world_size`` takes items rank, rank + W, ... (torchrun's RANK/WORLD_SIZE)."""
    return items[rank::world_size]


def run(args: argparse.Namespace) -> int:
    from napari_rckd.inference.export import parse_exports
    from napari_rckd.inference.outputs import recover, refuse_existing
    from napari_rckd.inference.runner import resolve_device

    exports = parse_exports(args.export)
    slides = find_slides(Path(args.input))
    recover(Path(args.out))  # what a killed run left: finish its publication or remove it
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(args.device)
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    mine = shard(slides, rank, world)
    if not args.overwrite:  # before any work, not after the first slides
        refuse_existing(Path(args.out), [path.stem for path in mine])
    log.info("rank %d/%d: %d of %d slides on %s", rank, world, len(mine), len(slides), device)
    models = dict(nuclei=args.nuclei, subtype=args.subtype, region=args.region)
    if str(models["nuclei"]).lower() == "none":
        models["nuclei"] = None
    out = Path(args.out)
    existed = out.exists()
    try:
        sources = None  # built once, for the first slide, and shared by the rest
        for path in mine:
            sources = predict_slide(path, models, device, out, exports, args, sources)
    except BaseException:
        if not existed:  # a refused or failed run leaves no empty --out behind
            with contextlib.suppress(OSError):
                out.rmdir()  # only an empty folder: what a run wrote stays
        raise
    return 0


def predict_slide(path: Path, models, device, out: Path, exports, args, sources=None) -> list:
    """Whole-slide prediction of one slide into ``out/<stem>.zarr`` plus its exports.

    They are written into a staging folder and appear in ``out`` together (`staged_outputs`).
    """
    from napari_rckd.io import open_slide

    with open_slide(path, mpp=args.slide_mpp) as slide:
        if slide.mpp is None:  # refused before anything is written into --out
            raise RckdError(
                f"{path.name} does not record its pixel size; pass --slide-mpp (e.g. 0.5 for 20x, "
                "0.25 for 40x)."
            )
        return _predict_open_slide(slide, path, models, device, out, exports, args, sources)


def _predict_open_slide(slide, path, models, device, out, exports, args, sources):
    from tqdm import tqdm

    from napari_rckd.inference.analysis import Analysis
    from napari_rckd.inference.outputs import staged_outputs

    with staged_outputs(out, path.stem, args.overwrite) as staging:
        analysis = Analysis(
            slide,
            models,
            device,
            sources=sources,
            batch_size=args.batch_size,
            region_threshold=args.region_threshold,
        )
        if analysis.nuclei_note:
            print(analysis.nuclei_note)
        if args.compile and sources is None:  # the first slide built them; the rest reuse them
            from napari_rckd.inference.sources import compile_models

            count = compile_models(analysis.sources)
            print(
                f"torch.compile: {count} model(s) compile on their first batch (~30 s each on a CPU)"
            )
        damaged = 0
        with tqdm(desc=path.name, unit="tile") as bar:
            run = analysis.run_whole_slide(
                staging / f"{path.stem}.zarr", exports_stem=staging / path.stem, exports=exports
            )
            for progress in run:  # nuclei exports stream while the tiles run; the rest follow
                bar.total = progress.total
                bar.update(progress.done - bar.n)
                damaged = progress.damaged
        if damaged:
            print(f"{path.name}: {damaged} damaged tiles skipped (predicted as glass)")
    return analysis.sources
