"""Train the learned nuclei teacher on labelled nuclei images (shipped as `learned`).

DATA holds one sub-folder per source of H&E images X.tif|png beside an instance map
X_label.tif or a binary mask X_mask.png, with each image's mpp in a manifest.csv in DATA or
one of its two parents. Every image is resampled to --mpp; --holdout SOURCE (a folder-name
prefix, repeatable) leaves sources out for leave-one-source-out evaluation. OUT ends up with
best.safetensors (best nuclear Dice on held-out training images; run.log beside it says what
the run did), usable as
`--teacher OUT/best.safetensors` anywhere a teacher is named. --unlabeled SLIDES adds
tissue no one annotated, answered by --pseudo-teacher (self-training, docs/teachers.md).
"""

from __future__ import annotations

import argparse

from napari_rckd.commands import checks
from napari_rckd.commands.arguments import (
    add_decoder_argument,
    add_pixel_size_arguments,
    positive_int,
    share,
)
from napari_rckd.commands.pretrain import stop_on_signals, summary
from napari_rckd.defaults import TEACHER_BACKBONE, TEACHER_MPP, TEACHER_STEPS
from napari_rckd.errors import RckdError

EPILOG = """examples:
  # the shipped teacher: every source of the shared nuclei data
  napari-rckd train-teacher ../shared/data/nuclei --out runs/teacher

  # leave MoNuSeg out, then measure on it
  napari-rckd train-teacher ../shared/data/nuclei --holdout monuseg --out runs/loso-monuseg
  napari-rckd evaluate nuclei --teacher runs/loso-monuseg/best.safetensors --teacher classical \\
      --data ../shared/data/nuclei/monuseg-train

  # self-training: also learn the built-in teacher's answers on unlabeled slides
  napari-rckd train-teacher ../shared/data/nuclei --out runs/teacher-st \\
      --unlabeled ../shared/data/slides/cmu-1-small-region.svs --unlabeled my_slides/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("data", metavar="DATA", help="folder of nuclei ground-truth sources")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints)")
    parser.add_argument(
        "--holdout",
        action="append",
        default=[],
        metavar="SOURCE",
        help="source prefix to leave out",
    )
    parser.add_argument(
        "--backbone", default=TEACHER_BACKBONE, help=f"timm backbone (default {TEACHER_BACKBONE})"
    )
    add_decoder_argument(parser)
    parser.add_argument(
        "--mpp", type=float, default=TEACHER_MPP, help=f"µm/px of the model (default {TEACHER_MPP})"
    )
    parser.add_argument("--tile-size", type=int, default=192, help="crop side in px (default 192)")
    parser.add_argument(
        "--steps",
        type=int,
        default=TEACHER_STEPS,
        help=f"optimizer steps (default {TEACHER_STEPS})",
    )
    parser.add_argument("--batch-size", type=int, default=12, help="crops per step (default 12)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run already in --out")
    group = parser.add_argument_group("self-training on unlabeled tissue")
    group.add_argument(
        "--unlabeled",
        action="append",
        default=[],
        metavar="SLIDES",
        help="slide file or folder of H&E without labels (repeatable)",
    )
    group.add_argument(
        "--pseudo-teacher",
        metavar="SPEC",
        help="nuclei teacher that answers the unlabeled tiles (default builtin)",
    )
    group.add_argument(
        "--pseudo-share",
        type=share,
        help="share of training crops taken from the unlabeled tiles (default 0.3)",
    )
    group.add_argument(
        "--pseudo-tiles",
        type=positive_int,
        help="unlabeled tiles drawn and answered once (default 1500)",
    )
    add_pixel_size_arguments(group, "unlabeled slides")


# Options of self-training; given without --unlabeled they would do nothing, so they are refused.
PSEUDO_OPTIONS = ("pseudo_teacher", "pseudo_share", "pseudo_tiles", "slide_mpp", "mpp_table")


def run(args: argparse.Namespace) -> int:
    pseudo = {n: getattr(args, n) for n in PSEUDO_OPTIONS if getattr(args, n) is not None}
    if pseudo and not args.unlabeled:
        flags = ", ".join("--" + name.replace("_", "-") for name in pseudo)
        raise RckdError(f"{flags} only apply with --unlabeled SLIDES; add it or leave them out")
    if "pseudo_teacher" in pseudo:
        checks.teacher_spec(args.pseudo_teacher, "--pseudo-teacher")
    from napari_rckd.training import TqdmProgress
    from napari_rckd.training.data.sampling import read_mpp_table
    from napari_rckd.training.teacher import train_teacher

    if args.mpp_table:
        pseudo["mpp_table"] = read_mpp_table(args.mpp_table)
    with stop_on_signals() as stop:
        result = train_teacher(
            args.data,
            args.out,
            holdout=args.holdout,
            backbone=args.backbone,
            decoder=args.decoder,
            mpp=args.mpp,
            tile_size=args.tile_size,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            device=args.device,
            workers=args.workers,
            seed=args.seed,
            resume=args.resume,
            unlabeled=args.unlabeled,
            **pseudo,
            callbacks=[TqdmProgress()],
            stop_event=stop,
        )
    print(summary(result))
    return 0
