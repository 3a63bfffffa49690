"""Predict nuclei (and, when given models, tissue subtype and cancer region) over every tissue
tile of slides, one slide or a cohort of thousands.

`napari-rckd predict SLIDE|FOLDER|LIST.txt --out DIR` runs the built-in nuclei model and writes
DIR/<slide>.zarr (OME-Zarr results that open over the slide in napari), DIR/<slide>.nuclei.geojson
(QuPath detections), DIR/<slide>.nuclei.csv (one row of measurements per nucleus) and
DIR/cohort.csv (one row of figures per slide). Add --subtype SUB.safetensors and --region
REG.safetensors for the other results, --export to choose the files (geojson, csv, ome-tiff or
none) and --nuclei none to skip nuclei. --cluster runs the slides on Dask distributed (local
worker processes, an existing scheduler, or Slurm/PBS/SGE/LSF jobs; docs/cohorts.md). A rerun
skips the slides already complete in DIR; a slide that fails is reported and the rest go on.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path

from napari_rckd.commands.arguments import positive_int
from napari_rckd.defaults import DEFAULT_EXPORTS, DEFAULT_NUCLEI, EXPORTS
from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        metavar="SLIDE|FOLDER|LIST.txt",
        help="a slide file, a folder of slides, or a .txt list of slide paths (one a line)",
    )
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
        help="replace results of the same slides already in --out made by other models or with "
        "other exports (default: refuse); results complete with these are always kept",
    )
    parser.add_argument(
        "--cluster",
        default="none",
        metavar="C",
        help="where the slides run: none (this process, default), local or local:N (N Dask "
        "worker processes), tcp://HOST:PORT (a running Dask scheduler) or jobqueue:FILE.yaml "
        "(Slurm, PBS, SGE or LSF jobs; docs/cohorts.md)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="workers to ask a jobqueue cluster for (default 1), or of --cluster local",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar: one line per slide, for logs"
    )


def run(args: argparse.Namespace) -> int:
    from napari_rckd.inference.clusters import check_spec
    from napari_rckd.inference.cohort import LIST_SUFFIXES, find_slides
    from napari_rckd.inference.cohort_report import REPORT_NAME
    from napari_rckd.inference.cohort_table import TABLE_NAME
    from napari_rckd.inference.export import parse_exports

    exports = parse_exports(args.export)
    check_spec(args.cluster)
    slides = find_slides(args.input)
    one = Path(args.input).is_file() and Path(args.input).suffix.lower() not in LIST_SUFFIXES
    out = Path(args.out).absolute()  # workers elsewhere see the same absolute path
    made = [p for p in (out / TABLE_NAME, out / REPORT_NAME, out) if not p.exists()]
    try:
        return _run_cohort(args, slides, one, out, exports)
    except BaseException:  # a refused or failed run leaves no table or --out of its own behind
        with contextlib.suppress(OSError):
            for path in made:
                if path == out:
                    path.rmdir()
                else:
                    path.unlink(missing_ok=True)
        raise


def _run_cohort(args, slides: list[Path], one: bool, out: Path, exports) -> int:
    from napari_rckd.inference.clusters import dashboard, open_client
    from napari_rckd.inference.cohort import open_table, plan_cohort, run_cohort
    from napari_rckd.inference.cohort_slide import CohortSettings, describe_models
    from napari_rckd.inference.cohort_table import TABLE_NAME

    models = dict(nuclei=args.nuclei, subtype=args.subtype, region=args.region)
    if str(models["nuclei"]).lower() == "none":
        models["nuclei"] = None
    settings = CohortSettings(
        models, str(out), args.device, tuple(exports), args.slide_mpp, args.batch_size,
        args.region_threshold, args.overwrite, args.compile,
    )  # fmt: skip
    described = describe_models(settings)  # a bad checkpoint is told here, before any work
    for note in described["notes"]:
        print(note)
    plan = plan_cohort(slides, settings, described)
    if plan.skipped:
        print(f"{len(plan.skipped)} of {len(slides)} slides already complete in {out}: skipped")
    if not plan.todo:
        print("nothing to do")
    table = open_table(plan)  # an --out we cannot write into is told before a cluster starts
    with open_client(args.cluster if plan.todo else "none", args.workers) as client:
        if client is not None:
            print(f"Dask dashboard: {dashboard(client)}")
        with CohortProgress(len(plan.todo), args.quiet) as progress:
            rows = run_cohort(plan, client, table, progress.slide, progress.tiles, args.workers)
    failed = [row for row in rows if row["status"] == "failed"]
    done = sum(row["status"] == "done" for row in rows)
    print(f"{done} done, {len(plan.skipped)} skipped, {len(failed)} failed: {out / TABLE_NAME}")
    if failed and one:  # one slide asked for: its failure is the command's error
        raise RckdError(failed[0]["error"])
    return 1 if failed else 0


class CohortProgress:
    """One bar for the cohort (slides, tiles, time left) and one line per finished slide."""

    def __init__(self, slides: int, quiet: bool = False):
        from tqdm import tqdm

        self.bar = tqdm(total=slides, unit="slide", desc="cohort", disable=quiet or not slides)
        self.quiet, self.tiles_done, self.start = quiet, 0, time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()

    def tiles(self, count: int) -> None:
        self.tiles_done += count
        rate = self.tiles_done / max(time.monotonic() - self.start, 1e-6)
        self.bar.set_postfix(tiles=self.tiles_done, tiles_s=f"{rate:.1f}")

    def slide(self, row: dict) -> None:
        self.bar.update(1)
        self._line(slide_line(row))

    def _line(self, text: str) -> None:
        if self.quiet or self.bar.disable:
            print(text, flush=True)
        else:
            self.bar.write(text)


def slide_line(row: dict) -> str:
    """``name: done, N nuclei, ... (worker)`` or ``name: failed: why``."""
    name = Path(row["file"]).name
    if row["status"] == "failed":
        return f"{name}: failed: {row['error']}"
    parts = [f"{row.get('nuclei')} nuclei"] if row.get("nuclei") is not None else []
    parts.append(f"{row.get('tissue_mm2')} mm² tissue, {row.get('tiles')} tiles")
    if row.get("damaged_tiles"):
        parts.append(f"{row['damaged_tiles']} damaged tiles skipped (predicted as glass)")
    return f"{name}: done, {', '.join(parts)}, {row.get('seconds')} s on {row.get('worker')}"
