"""Measure nuclei teachers (and students used as teachers) against instance ground truth.

`napari-rckd evaluate nuclei --teacher builtin --teacher otsu --data DIR` prints, for every
source folder under DIR, the mean pixel Dice, AJI and PQ (IoU > 0.5) over its images, one row
per teacher. A teacher is `builtin`, `otsu`, `cellpose`, `instanseg`, a TorchScript file or a
student `.safetensors` checkpoint (see docs/teachers.md).
"""

from __future__ import annotations

import argparse


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
        help="builtin, otsu, cellpose, instanseg, a TorchScript file or a student "
        ".safetensors checkpoint; repeat to compare (default: builtin and otsu)",
    )
    nuclei.add_argument(
        "--data", required=True, metavar="DIR", help="ground-truth folder, e.g. data/nuclei"
    )
    nuclei.add_argument(
        "--mpp", type=float, help="µm per pixel of every image (default: from manifest.csv)"
    )
    nuclei.add_argument("--json", metavar="FILE", help="also write the table to this JSON file")
    nuclei.set_defaults(_evaluate=run_nuclei)


def run(args: argparse.Namespace) -> int:
    return args._evaluate(args)


def run_nuclei(args: argparse.Namespace) -> int:
    from napari_rckd.bench.report import report
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.evaluation import evaluate_teacher, find_ground_truth

    images = find_ground_truth(args.data, mpp=args.mpp)
    teachers = [get_teacher(spec) for spec in (args.teacher or ["builtin", "otsu"])]
    rows = [row for teacher in teachers for row in evaluate_teacher(teacher, images)]
    rows.sort(key=lambda row: (row["source"], row["teacher"]))
    report(
        "Nuclei teachers against ground truth (mean over images per source)",
        rows,
        args.json,
        teachers={teacher.name: teacher.identity for teacher in teachers},
    )
    return 0
