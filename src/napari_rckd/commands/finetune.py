"""RCKD stage 2: fine-tune a (stage-1 pretrained) student for tissue classification or segmentation.

Classification learns from labelled tiles: folders (one per class, --label-from folder), file
names (CRC-style `TUM-xxxx.png`, --label-from prefix; BRACS-style `1238_adh_10.png`,
--label-from field:1), or class-named regions of a GeoJSON/QuPath annotation on a slide.
Segmentation learns from a label mask of a slide (0 = unlabelled and ignored, k = class k).
Tiles are split into training and validation by source, stratified by class, so no source
is on both sides: the `group` of a groups.csv (columns class,group,file; `file` relative to
the tile folder) beside the tiles or given with --groups, else the slide, case or region,
else each file on its own. OUT ends up with best.safetensors (best balanced accuracy or mIoU, its
validation metrics and the training tiles' fingerprints in the checkpoint), last.safetensors,
last.state.pt (for --resume) and run.log (the start weights with their provenance, the split,
the pixel size and where the model went, as printed).
"""

from __future__ import annotations

import argparse

from napari_rckd.commands import checks
from napari_rckd.commands.arguments import positive_int, share
from napari_rckd.commands.pretrain import (
    add_shared_training_arguments,
    default_budget,
    stop_on_signals,
)
from napari_rckd.defaults import FINETUNE_STEPS, HEADS
from napari_rckd.errors import RckdError
from napari_rckd.training.recipes.stage2 import TASKS, Stage2Data, Stage2Recipe

EPILOG = """examples:
  # tissue classes from sub-folder names, with the defaults (200 steps: minutes on a CPU)
  napari-rckd finetune tiles/lung/ --out runs/lung

  # tissue classes from file-name prefixes, starting from the shipped RCKD-CSAT student
  napari-rckd finetune tiles/crc/ --out runs/crc --label-from prefix --epochs 30 --patience 5

  # ... or from your own stage-1 student
  napari-rckd finetune tiles/crc/ --out runs/crc-own --init runs/stage1/best.safetensors --epochs 30

  # the same from random weights, or from timm's ImageNet weights (needs the download)
  napari-rckd finetune tiles/crc/ --out runs/crc-random --init none --epochs 30
  napari-rckd finetune tiles/crc/ --out runs/crc-imagenet --init imagenet --backbone resnet18 --epochs 30

  # regions drawn in QuPath or napari and exported as GeoJSON (names = classes)
  napari-rckd finetune --annotations regions.geojson --slide case1.svs --out runs/regions --epochs 20

  # cancer-region segmentation from a painted mask (1 = normal, 2 = tumour)
  napari-rckd finetune --task segment --slide case1.svs --masks case1_mask.tif \\
      --classes normal,tumour --out runs/seg --epochs 20

  # nuclei: teach the nuclei model your corrections (saved by Analyze slide beside the slide)
  napari-rckd finetune case1.svs.corrections --task nuclei --init csat --out runs/nuclei-case1

  # two GPUs
  torchrun --standalone --nproc-per-node 2 -m napari_rckd.cli finetune tiles/crc/ --out runs/crc --epochs 30
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "data",
        nargs="*",
        metavar="TILE_FOLDER|CORRECTIONS",
        help="folders of labelled tiles (classify), or nuclei folders (--task nuclei): a "
        "slide's .corrections folder or any X.tif beside X_label.tif with a manifest.csv",
    )
    parser.add_argument(
        "--task",
        choices=(*TASKS, "nuclei"),
        default=Stage2Recipe.task,
        help=f"default {Stage2Recipe.task}; nuclei: fine-tune a nuclei model on corrections "
        "(docs/correct.md)",
    )
    parser.add_argument(
        "--init",
        help="where to start: 'csat' (the shipped RCKD-CSAT student; the default for "
        "rckd_csat), a stage-1 checkpoint (.safetensors), 'imagenet' or 'none' (random; the "
        "default for other backbones); with --task nuclei: builtin (the default), csat, learned "
        "or a nuclei checkpoint",
    )
    parser.add_argument("--classes", help="class names, comma-separated (default: from the data)")
    parser.add_argument(
        "--label-from",
        default=Stage2Data.label_from,
        help=f"folder, prefix, field:N or auto: where a tile's class is written (default "
        f"{Stage2Data.label_from})",
    )
    parser.add_argument(
        "--data-mpp",
        type=float,
        help="µm per pixel of the tiles, when known (resampled to --mpp); without it the "
        "µm/px estimated from their nuclei, or their own pixels when the estimate is unsure "
        "(the run says which)",
    )
    parser.add_argument(
        "--groups",
        metavar="FILE",
        help="CSV class,group,file naming each tile's source (default: groups.csv beside the "
        "tiles, if any); tiles of one group stay on one side of the split",
    )
    parser.add_argument("--annotations", metavar="FILE", help="GeoJSON regions named by class")
    parser.add_argument("--slide", metavar="SLIDE", help="slide of --annotations or --masks")
    parser.add_argument("--masks", metavar="FILE", help="label mask of --slide (segment)")
    parser.add_argument(
        "--slide-mpp", type=float, help="µm per pixel of --slide when its file does not say"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=Stage2Data.val_fraction,
        help=f"share of sources held out for validation (default {Stage2Data.val_fraction})",
    )
    parser.add_argument(
        "--patience", type=int, help="stop after this many validations without improvement"
    )
    add_recipe_arguments(parser)
    # Stage 2 starts from the init checkpoint's backbone unless told otherwise (None).
    add_shared_training_arguments(parser, Stage2Recipe(), steps=FINETUNE_STEPS)
    add_nuclei_arguments(parser)
    # --task nuclei has defaults of its own: these are filled in by `task_defaults`
    parser.set_defaults(tile_size=None, batch_size=None, lr=None, workers=None)


def add_nuclei_arguments(parser: argparse.ArgumentParser) -> None:
    from napari_rckd.training.nuclei_finetune import (
        HOLDOUT_SHARE,
        NUCLEI_FINETUNE_BATCH,
        NUCLEI_FINETUNE_LR,
        NUCLEI_FINETUNE_STEPS,
        NUCLEI_FINETUNE_TILE,
        REPLAY_SHARE,
        REPLAY_TILES,
    )

    group = parser.add_argument_group(
        "--task nuclei (teach a nuclei model your tissue)",
        f"--init csat (default), learned, builtin or a nuclei checkpoint; defaults --steps "
        f"{NUCLEI_FINETUNE_STEPS}, --batch-size {NUCLEI_FINETUNE_BATCH}, --tile-size "
        f"{NUCLEI_FINETUNE_TILE} at the model's own µm/px, --lr {NUCLEI_FINETUNE_LR:g}, "
        "--workers 0",
    )
    group.add_argument(
        "--replay",
        type=share_or_zero,
        default=REPLAY_SHARE,
        metavar="SHARE",
        help=f"share of crops replaying what the model knew (default {REPLAY_SHARE}; 0: none)",
    )
    group.add_argument(
        "--replay-data",
        action="append",
        default=[],
        metavar="PATH",
        help="more replay: a labelled nuclei folder (its ground truth), or slides / images the "
        "starting model answers (repeatable); the corrections' context crops and slides are "
        "always used when present",
    )
    group.add_argument(
        "--replay-tiles",
        type=positive_int,
        default=REPLAY_TILES,
        help=f"tissue tiles of replay slides answered once (default {REPLAY_TILES})",
    )
    group.add_argument(
        "--no-slide-replay",
        action="store_true",
        help="leave out the slides the corrections came from",
    )
    group.add_argument(
        "--holdout",
        type=share_or_zero,
        default=HOLDOUT_SHARE,
        metavar="SHARE",
        help=f"share of corrected regions held out, by region, for the before → after scores "
        f"(default {HOLDOUT_SHARE})",
    )
    group.add_argument(
        "--train-encoder",
        action="store_true",
        help="train the whole network, not only its decoder (slower; more to forget)",
    )


def share_or_zero(text: str) -> float:
    return 0.0 if float(text) == 0 else share(text)


STAGE2_DEFAULTS = ("tile_size", "batch_size", "lr", "workers")


def task_defaults(args: argparse.Namespace) -> None:
    """The options the user left out, at their task's defaults."""
    if args.task == "nuclei":
        from napari_rckd.training import nuclei_finetune as nf

        defaults = dict(tile_size=nf.NUCLEI_FINETUNE_TILE, batch_size=nf.NUCLEI_FINETUNE_BATCH,
                        lr=nf.NUCLEI_FINETUNE_LR, workers=0, steps=nf.NUCLEI_FINETUNE_STEPS)  # fmt: skip
        if args.epochs is not None:
            raise RckdError("--task nuclei counts --steps, not --epochs; give --steps N")
    else:
        recipe = Stage2Recipe()
        defaults = {name: getattr(recipe, name) for name in STAGE2_DEFAULTS}
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Stage-2 recipe flags shared with `bench transfer`, so it trains what users train."""
    defaults = Stage2Recipe()
    parser.add_argument(
        "--head",
        choices=HEADS,
        default=defaults.head,
        help="classifier on the deepest stage's features (last) or on every stage's (pyramid); "
        f"default {defaults.head}",
    )
    parser.add_argument(
        "--pretrained-backbone-lr",
        type=float,
        default=defaults.pretrained_backbone_lr,
        metavar="SCALE",
        help="a pretrained backbone learns at --lr × SCALE, the new head at --lr (default "
        f"{defaults.pretrained_backbone_lr}; random backbones always 1)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training step: each batch shape compiles once (~30 s on a "
        "CPU), then steps run faster; pays on long runs",
    )


def run(args: argparse.Namespace) -> int:
    task_defaults(args)
    if args.task == "nuclei":
        return run_nuclei(args)
    checks.finetune(args)  # before torch loads: a typo answers at once
    from napari_rckd.devices import launch

    default_budget(args)
    from napari_rckd.training import TqdmProgress
    from napari_rckd.training.recipes.stage2 import finetune
    from napari_rckd.training.run_notes import model_line
    from napari_rckd.training.tile_evaluation import format_metrics

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    data, _ = Stage2Data.split({**vars(args), "classes": classes})
    with stop_on_signals() as stop:
        result = finetune(
            data,
            args.out,
            Stage2Recipe.split(vars(args))[0],
            init=args.init,
            resume=args.resume,
            callbacks=[TqdmProgress()],
            stop_event=stop,
        )
    if launch().rank == 0:
        print(model_line(result))
        best = next((h for h in result.history if h["step"] == result.best_step), None)
        if best is not None:
            print(f"validation metrics of the best checkpoint (step {result.best_step}):")
            print(format_metrics(best))
    return 0


def run_nuclei(args: argparse.Namespace) -> int:
    """``--task nuclei``: fine-tune a nuclei model on corrections (nuclei folders)."""
    if not args.data:
        raise RckdError(
            "--task nuclei needs CORRECTIONS: a slide's .corrections folder or a nuclei folder"
        )
    for flag in ("annotations", "masks", "classes", "groups", "data_mpp"):
        if getattr(args, flag) is not None:
            name = "--" + flag.replace("_", "-")
            raise RckdError(f"{name} does not apply to --task nuclei; leave it out")
    checks.existing(args.data, "corrections folder", folder=True)
    from napari_rckd.training import TqdmProgress
    from napari_rckd.training.nuclei_finetune import (
        DEFAULT_START,
        NucleiRecipe,
        finetune_nuclei,
        scores_line,
    )

    with stop_on_signals() as stop:
        recipe = NucleiRecipe(
            init=args.init or DEFAULT_START,
            replay_share=args.replay,
            replay_tiles=args.replay_tiles,
            slide_replay=not args.no_slide_replay,
            holdout_share=args.holdout,
            steps=args.steps,
            batch_size=args.batch_size,
            tile_size=args.tile_size,
            lr=args.lr,
            train_encoder=args.train_encoder,
            device=args.device,
            workers=args.workers,
            seed=args.seed,
        )
        result = finetune_nuclei(
            args.data,
            args.out,
            recipe,
            replay=args.replay_data,
            resume=args.resume,
            slide_mpp=args.slide_mpp,
            callbacks=[TqdmProgress()],
            stop_event=stop,
        )
    print(f"run {result.fit.status} at step {result.fit.step}")
    if result.scores:
        print(scores_line(result.scores))
    if result.spec:
        print(f"nuclei model: {result.spec}  (give it to --nuclei, --teacher or Analyze slide)")
    return 0
