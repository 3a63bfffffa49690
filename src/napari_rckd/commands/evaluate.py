"""Measure nuclei teachers (and students used as teachers) against instance ground truth.

`napari-rckd evaluate nuclei --teacher builtin --teacher classical --data DIR` prints, for every
source folder under DIR, the mean and the worst image's pixel Dice, AJI and PQ (IoU > 0.5) and
the speed, one row per teacher; --json adds every image's scores. A teacher is `builtin`
(`hybrid`), `learned`, `csat`, `classical`, `otsu`, `cellpose`, `instanseg`, a TorchScript file
or a `.safetensors` checkpoint, a network one optionally with `+classical` (see
docs/teachers.md).

`napari-rckd evaluate tiles CHECKPOINT --data DIR` scores a fine-tuned classifier on a folder
of labelled tiles (see docs/rckd.md).
"""

from __future__ import annotations

import argparse

from napari_rckd import zoo

# Every model of the zoo that needs no other package.
DEFAULT_TEACHERS = tuple(m.name for m in zoo.models() if m.kind != zoo.EXTERNAL)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    nuclei = sub.add_parser(
        "nuclei",
        help="pixel Dice, AJI and PQ of nuclei teachers per ground-truth source",
        description=(
            "Run each teacher on every labelled image under --data (images X.tif|png beside "
            "X_label.tif instance maps, one sub-folder per source; mpp from manifest.csv) and "
            "print the mean pixel Dice, AJI and PQ per source."
        ),
    )
    nuclei.add_argument(
        "--teacher",
        action="append",
        metavar="SPEC",
        help=f"{', '.join(zoo.names())} (builtin, also named hybrid, is the learned teacher "
        "averaged with the classical detector), a TorchScript file or a .safetensors checkpoint "
        "(append +classical to average it with the classical detector); repeat to compare "
        f"(default: {', '.join(DEFAULT_TEACHERS)})",
    )
    nuclei.add_argument(
        "--data", required=True, metavar="DIR", help="ground-truth folder, e.g. data/nuclei"
    )
    nuclei.add_argument(
        "--mpp", type=float, help="µm per pixel of every image (default: from manifest.csv)"
    )
    nuclei.add_argument("--json", metavar="FILE", help="also write the table to this JSON file")
    nuclei.set_defaults(_evaluate=run_nuclei)

    tiles = sub.add_parser(
        "tiles",
        help="accuracy, balanced accuracy and per-class F1 of a classifier on labelled tiles",
        description=(
            "Classify every tile under --data with a fine-tuned checkpoint (class names from the "
            "checkpoint) and print accuracy, balanced accuracy, macro F1 and per-class F1."
        ),
    )
    tiles.add_argument("checkpoint", metavar="CHECKPOINT", help="a `finetune` .safetensors")
    tiles.add_argument("--data", required=True, nargs="+", metavar="DIR", help="tile folders")
    tiles.add_argument(
        "--label-from", default="auto", help="folder, prefix, field:N or auto (default)"
    )
    tiles.add_argument("--data-mpp", type=float, help="µm per pixel of the tiles, when known")
    tiles.add_argument("--batch-size", type=int, default=16, help="tiles per batch (default 16)")
    tiles.add_argument(
        "--skip-unknown",
        action="store_true",
        help="leave out tiles of classes the checkpoint does not know (e.g. NCT-CRC's BACK) and "
        "report how many were skipped",
    )
    tiles.add_argument("--json", metavar="FILE", help="also write the metrics to this JSON file")
    tiles.set_defaults(_evaluate=run_tiles)


def run(args: argparse.Namespace) -> int:
    from napari_rckd.commands import checks

    checks.evaluate(args)  # before torch loads: a typo answers at once
    return args._evaluate(args)


def run_nuclei(args: argparse.Namespace) -> int:
    from napari_rckd.report import report
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.evaluation import evaluate_teacher, find_ground_truth
    from napari_rckd.training.in_sample import warn_if_nuclei_seen

    images = find_ground_truth(args.data, mpp=args.mpp)
    specs = args.teacher or DEFAULT_TEACHERS
    teachers = [get_teacher(spec) for spec in specs]
    names = [teacher.name for teacher in teachers]
    for spec, teacher in zip(specs, teachers, strict=True):
        if names.count(teacher.name) > 1:  # e.g. two runs' best.safetensors: say which is which
            teacher.name = str(spec)
    names = [image.image_path.name for image in images]
    for spec, teacher in zip(specs, teachers, strict=True):
        warn_if_nuclei_seen(spec, names, teacher.name)  # a WARNING line before the table
    per_image: list[dict] = []
    rows = []
    for teacher in teachers:
        rows += evaluate_teacher(teacher, images, per_image, progress(teacher.name, "image"))
    rows.sort(key=lambda row: (row["source"], row["teacher"]))
    report(
        "Nuclei teachers against ground truth (mean and worst image per source; tiles_s: "
        "256² input tiles per second)",
        rows,
        args.json,
        json_extra={"per_image": per_image},
        teachers={teacher.name: teacher.identity for teacher in teachers},
    )
    return 0


def run_tiles(args: argparse.Namespace) -> int:
    from napari_rckd.report import report
    from napari_rckd.training.tile_evaluation import evaluate_tiles

    metrics = evaluate_tiles(
        args.checkpoint, args.data, args.label_from, args.data_mpp, args.batch_size,
        skip_unknown=args.skip_unknown, track=progress("tiles", "batch"),
    )  # fmt: skip
    skipped = {k.split("/", 1)[1]: int(v) for k, v in metrics.items() if k.startswith("skipped/")}
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if not k.startswith("skipped/")]
    extra = (
        {"skipped": ", ".join(f"{n} tiles of {c}" for c, n in skipped.items())} if skipped else {}
    )
    report(
        f"Classification of {', '.join(args.data)}",
        rows,
        args.json,
        checkpoint=args.checkpoint,
        **extra,
    )
    return 0


def progress(what: str, unit: str):
    """A ``track(items, count)`` that shows a progress bar once a run lasts over a second."""
    from tqdm import tqdm

    def track(items, count):
        return tqdm(items, total=count, desc=what, unit=unit, delay=1.0, dynamic_ncols=True)

    return track
