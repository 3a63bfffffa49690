"""Predict nuclei, tissue subtype and cancer region over every tissue tile of slides.

`napari-rckd predict SLIDE|FOLDER --nuclei builtin --subtype SUB.safetensors --region
REG.safetensors --out DIR --export geojson,csv,ome-tiff` writes DIR/<slide>.zarr (OME-Zarr
results that open over the slide in napari) and the chosen exports beside it. Under torchrun
each process takes every WORLD_SIZE-th slide (rank i: slides i, i+W, ...) on its own GPU.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)

EXPORTS = ("geojson", "csv", "ome-tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="SLIDE|FOLDER", help="a slide file or a folder of slides")
    parser.add_argument(
        "--nuclei",
        metavar="SPEC",
        help="builtin, otsu, a TorchScript teacher or a dense student .safetensors",
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
        default="",
        metavar="LIST",
        help=f"comma-separated exports: {', '.join(EXPORTS)} (default: only the .zarr results)",
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
        "--region-threshold", type=float, default=0.5, help="probability for the region mask"
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


def parse_exports(text: str) -> list[str]:
    exports = [e.strip().lower() for e in text.split(",") if e.strip()]
    unknown = sorted(set(exports) - set(EXPORTS))
    if unknown:
        raise RckdError(
            f"--export {','.join(unknown)} is unknown; choose from {','.join(EXPORTS)}."
        )
    return exports


def build_sources(args, device: str) -> list:
    from napari_rckd.inference.sources import NucleiSource, RegionSource, SubtypeSource

    sources = []
    if args.nuclei:
        sources.append(NucleiSource(args.nuclei, device))
    if args.subtype:
        sources.append(SubtypeSource(args.subtype, device))
    if args.region:
        sources.append(RegionSource(args.region, device, args.region_threshold))
    if not sources:
        raise RckdError(
            "nothing to predict: give --nuclei builtin, --subtype CKPT or --region CKPT."
        )
    return sources


def run(args: argparse.Namespace) -> int:
    from napari_rckd.inference.runner import resolve_device

    exports = parse_exports(args.export)
    slides = find_slides(Path(args.input))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(args.device)
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    mine = shard(slides, rank, world)
    log.info("rank %d/%d: %d of %d slides on %s", rank, world, len(mine), len(slides), device)
    sources = build_sources(args, device)
    out = Path(args.out)
    for path in mine:
        predict_slide(path, sources, out, exports, args.slide_mpp, args.batch_size)
    return 0


def predict_slide(path: Path, sources, out: Path, exports, slide_mpp, batch_size) -> Path:
    """Whole-slide prediction of one slide into ``out/<stem>.zarr`` plus its exports."""
    from tqdm import tqdm

    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.store import open_root
    from napari_rckd.inference.wholeslide import create_output, run_whole_slide
    from napari_rckd.io import open_slide
    from napari_rckd.io.tissue import detect_tissue

    with open_slide(path, mpp=slide_mpp) as slide:
        if slide.mpp is None:
            raise RckdError(
                f"{path.name} does not record its pixel size; pass --slide-mpp (e.g. 0.5 for 20x, "
                "0.25 for 40x)."
            )
        tissue = detect_tissue(slide, path.name)
        target = create_output(out / f"{path.stem}.zarr", slide, sources)
        predictor = Predictor(slide, sources, open_root(target), batch_size=batch_size)
        with predictor, tqdm(desc=path.name, unit="tile") as bar:
            for progress in run_whole_slide(predictor, tissue):
                bar.total = progress.total
                bar.update(progress.done - bar.n)
        export_results(predictor, sources, out / path.stem, exports)
    return target


def export_results(predictor, sources, stem: Path, exports) -> None:
    from napari_rckd.io import export

    by_name = {source.name: source for source in sources}
    stores = predictor.stores
    if "nuclei" in by_name and ({"geojson", "csv"} & set(exports)):
        classes = stores.get("subtype_class")
        names = by_name["subtype"].class_names if "subtype" in by_name else None
        export.export_nuclei(
            stores["nuclei_labels"],
            predictor.slide,
            f"{stem}.nuclei.geojson" if "geojson" in exports else None,
            f"{stem}.nuclei.csv" if "csv" in exports else None,
            classes,
            names,
        )
    for name, result in (("subtype", "subtype_class"), ("region", "region_mask")):
        if name not in by_name:
            continue
        source = by_name[name]
        if "geojson" in exports:
            export.export_regions(
                f"{stem}.{name}.geojson", stores[result], source.class_names, source.class_colors
            )
        if "ome-tiff" in exports:
            export.export_ome_tiff(f"{stem}.{name}.ome.tif", stores[result])
    if "nuclei" in by_name and "ome-tiff" in exports:
        export.export_ome_tiff(f"{stem}.nuclei.ome.tif", stores["nuclei_labels"])
