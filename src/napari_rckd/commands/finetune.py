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
from napari_rckd.commands.pretrain import (
    add_shared_training_arguments,
    default_budget,
    stop_on_signals,
)
from napari_rckd.defaults import FINETUNE_STEPS, HEADS
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

  # two GPUs
  torchrun --standalone --nproc-per-node 2 -m napari_rckd.cli finetune tiles/crc/ --out runs/crc --epochs 30
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "data", nargs="*", metavar="TILE_FOLDER", help="folders of labelled tiles (classify)"
    )
    parser.add_argument(
        "--task", choices=TASKS, default=Stage2Recipe.task, help=f"default {Stage2Recipe.task}"
    )
    parser.add_argument(
        "--init",
        help="where to start: 'csat' (the shipped RCKD-CSAT student; the default for "
        "rckd_csat), a stage-1 checkpoint (.safetensors), 'imagenet' or 'none' (random; the "
        "default for other backbones)",
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
