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
from napari_rckd.commands.pretrain import stop_on_signals
from napari_rckd.errors import RckdError
from napari_rckd.training.recipes.teacher import TeacherRecipe

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
    defaults = TeacherRecipe()  # each option's default is the recipe's
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
        "--backbone", default=defaults.backbone, help=f"timm backbone (default {defaults.backbone})"
    )
    add_decoder_argument(parser)
    parser.add_argument(
        "--mpp",
        type=float,
        default=defaults.mpp,
        help=f"µm/px of the model (default {defaults.mpp})",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        default=defaults.tile_size,
        help=f"crop side in px (default {defaults.tile_size})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=defaults.steps,
        help=f"optimizer steps (default {defaults.steps})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"crops per step (default {defaults.batch_size})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=defaults.lr,
        help=f"peak learning rate (default {defaults.lr:g})",
    )
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help=f"data-loading processes (default {defaults.workers})",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})"
    )
    parser.add_argument(
        "--init",
        metavar="SPEC",
        help="start from this nuclei model's weights instead of random ones: learned, csat or a "
        "two-output .safetensors (train-teacher, or pretrain --boundaries); its backbone, "
        "decoder and µm/px must be the run's",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run already in --out")
    group = parser.add_argument_group("self-training on unlabeled tissue")
    group.add_argument(
        "--unlabeled",
        action="append",
        default=[],
        metavar="SLIDES",
        help="slide file or folder of H&E without labels (repeatable)",
    )
    # No defaults here (None: not given), so they can be refused without --unlabeled.
    group.add_argument(
        "--pseudo-teacher",
        metavar="SPEC",
        help=f"nuclei teacher that answers the unlabeled tiles (default {defaults.pseudo_teacher})",
    )
    group.add_argument(
        "--pseudo-share",
        type=share,
        help="share of training crops taken from the unlabeled tiles (default "
        f"{defaults.pseudo_share})",
    )
    group.add_argument(
        "--pseudo-tiles",
        type=positive_int,
        help=f"unlabeled tiles drawn and answered once (default {defaults.pseudo_tiles})",
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
    checks.model_file(args.init, "--init")
    from napari_rckd.training import TqdmProgress
    from napari_rckd.training.data.sampling import read_mpp_table
    from napari_rckd.training.recipes.teacher import train_teacher
    from napari_rckd.training.run_notes import model_line

    given = {k: v for k, v in vars(args).items() if v is not None}  # the rest: the recipe's
    with stop_on_signals() as stop:
        result = train_teacher(
            args.data,
            args.out,
            TeacherRecipe.split(given)[0],
            resume=args.resume,
            unlabeled=args.unlabeled,
            slide_mpp=args.slide_mpp,
            mpp_table=read_mpp_table(args.mpp_table) if args.mpp_table else None,
            callbacks=[TqdmProgress()],
            stop_event=stop,
        )
    print(model_line(result))
    return 0
