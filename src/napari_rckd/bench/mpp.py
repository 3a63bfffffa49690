"""How far the nuclei-based µm/px estimate is from the truth, per source whose mpp is known.

Reads a data folder's ``manifest.csv`` (columns ``path``, ``kind``, ``mpp``: the project's
shared data has one), groups its H&E images, tiles, regions and slides by folder and mpp, and
estimates every group's mpp from up to --images of its images (slides: crops of level 0)
with `napari_rckd.io.nuclei_scale.estimate_mpp`, the estimate stage 2 uses for tiles that
record none. Prints true vs estimated mpp and the relative error, marking the sources the
estimate was calibrated on; the others are held out. A `~` before a manifest mpp (an
approximate value) is kept in the table and the value used as it is.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError

IMAGE_KINDS = {"nuclei-image", "tile", "region", "slide"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, metavar="DIR", help="folder with a manifest.csv (path,kind,mpp)"
    )
    parser.add_argument(
        "--images", type=int, default=16, help="images per source, spread over it (default 16)"
    )


def sources(root: Path) -> dict[tuple[str, str], list[Path]]:
    """(folder, mpp as written) -> image paths, for every image of known mpp."""
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise RckdError(f"{root} has no manifest.csv; give the folder of the shared data")
    found: dict[tuple[str, str], list[Path]] = defaultdict(list)
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("kind") in IMAGE_KINDS and row.get("mpp", "").strip():
                path = Path(row["path"])
                found[(path.parent.as_posix(), row["mpp"].strip())].append(root / path)
    return dict(found)


def read_images(paths: list[Path], count: int):
    """Up to ``count`` images spread over ``paths``; slides give crops of their level 0."""
    from napari_rckd.training.data.labelled import read_rgb

    picked = [paths[i] for i in np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int)]
    for path in dict.fromkeys(picked):
        if path.suffix.lower() in {".svs", ".tif", ".tiff"} and "slides" in path.parts:
            yield from slide_crops(path)
        else:
            yield read_rgb(path)


def slide_crops(path: Path):
    """Level-0 crops of a slide's tissue: the ones stage 2 estimates a slide's mpp from."""
    from napari_rckd.io import open_slide
    from napari_rckd.io.nuclei_scale import slide_images

    with open_slide(path) as slide:
        yield from list(slide_images(slide))


def run(args: argparse.Namespace) -> int:
    from napari_rckd.io.nuclei_scale import CALIBRATION_SOURCES, estimate_mpp
    from napari_rckd.report import format_table

    rows = []
    for (folder, written), paths in sorted(sources(Path(args.data)).items()):
        true = float(written.lstrip("~"))
        estimate = estimate_mpp(read_images(paths, args.images))
        name = folder.split("/")[-1]
        error = None if estimate.mpp is None else estimate.mpp / true - 1
        rows.append(
            {
                "source": folder,
                "used for": "calibration" if name in CALIBRATION_SOURCES else "held out",
                "true mpp": written,
                "estimated": None if estimate.mpp is None else round(estimate.mpp, 3),
                "error %": None if error is None else round(100 * error, 1) + 0.0,  # no -0.0
                "images": estimate.images,
                "sure": "yes" if estimate.sure else f"no: {estimate.reason}",
            }
        )
        print(f"{folder}: {estimate.describe()}", flush=True)
    held = [
        abs(r["error %"]) for r in rows if r["used for"] == "held out" and r["error %"] is not None
    ]
    print()
    print(format_table(rows))
    if held:
        print(
            f"\nheld-out sources: median |error| {np.median(held):.0f} %, worst {max(held):.0f} %"
            f" ({len(held)} sources)"
        )
    if args.json:
        from napari_rckd.atomic import write_json_atomic

        write_json_atomic(Path(args.json), {"rows": rows, "held_out_abs_error_pct": held})
    return 0 if rows else 1
