"""RCKD stage 1: distil a nuclei teacher into a student on unlabeled tissue tiles.

Random tissue tiles are cut from the slides at --mpp; the teacher (`builtin` by default: the
shipped learned nuclei teacher averaged with the classical detector) answers each tile once, its answers are cached in
OUT/teacher-cache, and the student learns to reproduce them (BCE + soft Dice). OUT ends up
with best.safetensors (best Dice against the teacher on held-out tiles), last.safetensors,
last.state.pt (for --resume) and run.log (what the run printed about its start, teacher, split
and pixel size). The student is itself a nuclei model: use it with
`napari-rckd evaluate nuclei --teacher OUT/best.safetensors` or as stage 2's --init.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from napari_rckd import zoo
from napari_rckd.commands import checks
from napari_rckd.commands.arguments import (
    add_decoder_argument,
    add_pixel_size_arguments,
    learning_rate,
    positive_float,
    positive_int,
)
from napari_rckd.defaults import PRETRAIN_STEPS
from napari_rckd.training.recipes.stage1 import AUGMENTS, TARGETS, Stage1Recipe

EPILOG = """examples:
  # a first student with the defaults (1,000 tiles, 300 steps: minutes on a CPU)
  napari-rckd pretrain slides/ --out runs/stage1

  # a longer run from a folder of slides (CSAT, 256-px tiles at 0.5 µm/px)
  napari-rckd pretrain slides/ --out runs/stage1 --tiles 2000 --epochs 10

  # a quick look on a CPU: small tiles, few steps
  napari-rckd pretrain slide.svs --out runs/try --tile-size 128 --tiles 64 --steps 50 --batch-size 8

  # a slide whose file does not say its pixel size (scanned at 20x)
  napari-rckd pretrain old_scan.svs --slide-mpp 0.5 --out runs/stage1 --steps 2000

  # continue an interrupted run (Ctrl-C checkpoints; same arguments plus --resume)
  napari-rckd pretrain slides/ --out runs/stage1 --tiles 2000 --epochs 10 --resume

  # four GPUs (--batch-size is per process)
  torchrun --standalone --nproc-per-node 4 -m napari_rckd.cli pretrain slides/ --out runs/stage1 --epochs 10
"""


def add_shared_training_arguments(
    parser: argparse.ArgumentParser, recipe, steps: int | None
) -> None:
    """Flags every training command shares (budget, optimiser, device, resume), with the
    defaults of ``recipe``, the command's recipe as built with no options (`Stage1Recipe`,
    `Stage2Recipe`, `TeacherRecipe`): each default is written once.

    A recipe with epochs gets --steps or --epochs, and ``steps`` is what `default_budget` fills
    in when neither is given; one without (the teacher's) gets --steps with its own default.
    """
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints)")
    backbone = recipe.backbone or "the --init checkpoint's"
    parser.add_argument(
        "--backbone",
        default=recipe.backbone,
        help=f"timm backbone (default {backbone}; e.g. resnet18)",
    )
    add_decoder_argument(parser)
    parser.add_argument(
        "--mpp",
        type=positive_float,
        default=recipe.mpp,
        help=f"µm per pixel the model works at (default {recipe.mpp:g})",
    )
    parser.add_argument(
        "--tile-size",
        type=positive_int,
        default=recipe.tile_size,
        help=f"tile side in px (default {recipe.tile_size})",
    )
    add_budget_arguments(parser, recipe, steps)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=recipe.batch_size,
        help=f"tiles per step and process (default {recipe.batch_size})",
    )
    parser.add_argument(
        "--lr",
        type=learning_rate,
        default=recipe.lr,
        help=f"peak learning rate (default {recipe.lr:g})",
    )
    parser.add_argument(
        "--device",
        default=recipe.device,
        help=f"auto (GPU when there is one), cpu, cuda, cuda:N, mps (default {recipe.device})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=recipe.workers,
        help=f"data-loading processes (default {recipe.workers}); each augments with one torch "
        "thread",
    )
    parser.add_argument(
        "--seed", type=int, default=recipe.seed, help=f"random seed (default {recipe.seed})"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run already in --out")


def add_budget_arguments(parser: argparse.ArgumentParser, recipe, steps: int | None) -> None:
    """--steps, and --epochs where the recipe has them (see `add_shared_training_arguments`)."""
    if not hasattr(recipe, "epochs"):
        parser.add_argument(
            "--steps",
            type=positive_int,
            default=recipe.steps,
            help=f"optimizer steps (default {recipe.steps})",
        )
        return
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps",
        type=positive_int,
        help=f"optimizer steps in all (default {steps}: a useful model after about ten "
        "minutes of training on a quiet 2-core CPU at the default sizes, far less on a GPU; "
        "more steps train a better one)",
    )
    budget.add_argument(
        "--epochs", type=positive_int, help="passes over the training tiles (instead of --steps)"
    )
    parser.set_defaults(default_steps=steps)


def default_budget(args: argparse.Namespace) -> None:
    """Neither --steps nor --epochs given: the command's default number of steps."""
    if args.steps is None and args.epochs is None:
        args.steps = args.default_steps


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM sets the event: `fit` checkpoints and returns "cancelled".

    A second Ctrl-C interrupts at once (the last checkpoint on disk stays as it was).
    """
    stop = threading.Event()

    def handle(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be caught on the main thread (e.g. not under a GUI worker)
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "slides", nargs="+", metavar="SLIDE_OR_FOLDER", help="unlabeled slides or folders of them"
    )
    defaults = Stage1Recipe()
    parser.add_argument(
        "--teacher",
        default=defaults.teacher,
        help=f"{', '.join(zoo.names())} (default {defaults.teacher}: the learned teacher averaged with "
        "the classical detector), a TorchScript file or a student .safetensors checkpoint "
        "(+classical averages a network with the classical detector)",
    )
    add_shared_training_arguments(parser, defaults, steps=PRETRAIN_STEPS)
    parser.add_argument(
        "--tiles",
        type=positive_int,
        default=defaults.tiles,
        help=f"training tiles drawn from the tissue (default {defaults.tiles})",
    )
    parser.add_argument(
        "--val-tiles", type=int, help="held-out validation tiles (default 10%% of --tiles)"
    )
    add_pixel_size_arguments(parser)
    parser.add_argument(
        "--boundaries",
        action="store_true",
        help="also learn the teacher's instance boundaries (a second output channel)",
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENTS,
        default=defaults.augment,
        help=f"training-tile jitter (default {defaults.augment}; strong: the teacher's zoom and "
        "about 1.5x the stain, brightness, contrast and saturation jitter; stain: each stain's "
        "density scaled by up to ±25 %%, so faint nuclei are still nuclei)",
    )
    parser.add_argument(
        "--targets",
        choices=TARGETS,
        default=defaults.targets,
        help=f"what the student copies (default {defaults.targets}: the teacher's nuclear "
        "probability; decision: its nuclei, probability > 0.5, so it inherits no hesitation)",
    )
    parser.add_argument(
        "--cache", metavar="DIR", help="teacher-response cache (default OUT/teacher-cache)"
    )
    parser.add_argument(
        "--init",
        metavar="SPEC",
        help="start the student from this nuclei model's weights instead of random ones (csat, "
        "or a pretrain --boundaries .safetensors) to distil it further; its backbone and µm/px "
        "must be the run's, and a standard decoder may grow into --decoder detail",
    )


def run(args: argparse.Namespace) -> int:
    checks.pretrain(args)  # before torch loads: a typo answers at once
    checks.model_file(args.init, "--init")
    from napari_rckd.devices import launch

    default_budget(args)
    from napari_rckd.training import TqdmProgress
    from napari_rckd.training.data.sampling import read_mpp_table
    from napari_rckd.training.recipes.stage1 import pretrain
    from napari_rckd.training.run_notes import model_line

    with stop_on_signals() as stop:
        result = pretrain(
            args.slides,
            args.out,
            Stage1Recipe.split(vars(args))[0],
            resume=args.resume,
            slide_mpp=args.slide_mpp,
            mpp_table=read_mpp_table(args.mpp_table) if args.mpp_table else None,
            cache_dir=args.cache,
            callbacks=[TqdmProgress()],
            stop_event=stop,
        )
    if launch().rank == 0:
        print(model_line(result))
    return 0
