"""RCKD stage 2 recipe: labelled data + an initialisation -> a classifier or segmenter via `fit`.

Data comes from tile folders (labels from folder or file name), class-named regions of a
GeoJSON annotation on a slide, or a label mask of a slide. It is split by group (a
``groups.csv``'s source, slide, case, region or block of tiles), stratified by class, so
nothing leaks from training into validation; the best checkpoint by the task's primary
metric is kept, with its validation metrics recorded in the checkpoint's provenance.
`train_stage2` is the training itself on data already split, shared with `bench transfer`.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari_rckd.defaults import PRETRAINED_BACKBONE_LR, STAGE2_HEAD
from napari_rckd.devices import launch
from napari_rckd.errors import RckdError
from napari_rckd.training.callbacks import Callback
from napari_rckd.training.config import FitResult
from napari_rckd.training.in_sample import tile_fingerprints
from napari_rckd.training.initial import Init, resolve_init
from napari_rckd.training.recipes.common import (
    RecipeOptions,
    check_out_dir,
    data_sha256,
    provenance,
    schedule,
    stage_fit_config,
)
from napari_rckd.training.run_notes import (
    Stage2Inputs,
    init_line,
    model_line,
    run_log,
    split_line,
    tell,
)

if TYPE_CHECKING:
    from torch.utils.data import Dataset

log = logging.getLogger(__name__)

TASKS = ("classify", "segment")
# DataLoader workers unless told otherwise; `napari-rckd finetune --workers` has the same
# default (a test holds them together). Two overlap decoding and augmentation with the
# model on a GPU node; on a 2-core CPU pass 0 (see docs/performance.md).
DEFAULT_WORKERS = 2


@dataclass
class Stage2Recipe(RecipeOptions):
    """How stage 2 trains, whatever the data: `finetune` and `bench transfer` share it so
    a benchmark measures exactly what users run. ``backbone`` None: the init's."""

    task: str = "classify"
    backbone: str | None = None
    mpp: float = 0.5
    tile_size: int = 224
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    patience: int | None = None
    device: str = "auto"
    workers: int = DEFAULT_WORKERS
    seed: int = 0
    head: str = STAGE2_HEAD  # classify: ModelConfig.head
    decoder: str = "standard"  # segment: ModelConfig.decoder
    pretrained_backbone_lr: float = PRETRAINED_BACKBONE_LR  # lr scale of a pretrained backbone
    compile: bool = False  # torch.compile the training step


def finetune(
    data: Sequence[str | os.PathLike] = (),
    out_dir: str | os.PathLike = "runs/stage2",
    *,
    recipe: Stage2Recipe | None = None,
    init: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    label_from: str = "auto",
    data_mpp: float | None = None,
    groups: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
    slide: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    slide_mpp: float | None = None,
    val_fraction: float = 0.2,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
) -> FitResult:
    """Fine-tune by ``recipe`` (task, backbone, budget, optimiser: `Stage2Recipe`) on ``data`` tile
    folders, or ``annotations`` / ``masks`` of a ``slide``, and return how the run ended.

    ``init`` is a stage-1 (or any napari-rckd) checkpoint whose backbone starts the model,
    ``"csat"`` for the shipped RCKD-CSAT student, ``"imagenet"`` for timm's ImageNet
    weights, ``"none"`` for random weights, or None for `default_init` (``csat`` for
    ``rckd_csat``). The recipe's backbone defaults to the init checkpoint's. Tile folders are
    grouped by ``groups`` (a CSV ``class,group,file``) or a ``groups.csv`` beside the tiles.
    """
    from napari_rckd.training.data.augment import Augment
    from napari_rckd.training.data.labelled import TileFolderDataset
    from napari_rckd.training.data.splits import split_by_group

    recipe = recipe or Stage2Recipe()
    if recipe.task not in TASKS:
        raise RckdError(f"--task {recipe.task!r} is unknown; use classify or segment")
    task, backbone, seed = recipe.task, recipe.backbone, recipe.seed
    tile_size, mpp = recipe.tile_size, recipe.mpp
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume)
    with run_log(out_dir):
        start = resolve_init(init, backbone)
        tell(init_line(start))
        dataset = _dataset(
            task, data, classes, label_from, data_mpp, groups, annotations, slide, masks,
            slide_mpp, tile_size, mpp, seed, Augment(),
        )  # fmt: skip
        inputs = Stage2Inputs(data, groups, annotations, slide, slide_mpp, data_mpp)
        mpp_line, fingerprints = inputs.mpp_line(recipe), {}
        if isinstance(dataset, TileFolderDataset):  # check what the folders cannot show
            _check_tile_folders(dataset.tiles, data, groups)
            note = scale_note(dataset.tiles, start, recipe)
            mpp_line = f"pixel size: {note}" if note else mpp_line
        tell(mpp_line)
        labels = getattr(dataset, "labels", None)
        train_index, val_index = split_by_group(dataset.groups, labels, val_fraction, seed)
        tell(split_line(dataset.groups, train_index, val_index, inputs.group_source(task)))
        if isinstance(dataset, TileFolderDataset):  # lets `evaluate` see tiles it trained on
            fingerprints = tile_fingerprints(dataset.tiles, train_index, val_index)
        train, val = _split(dataset, train_index, val_index)
        files = [p for p in (annotations, slide, masks) if isinstance(p, (str, os.PathLike))]
        names = [Path(p).name for p in data] + [Path(p).name for p in files]
        fingerprints["data_sha256"] = data_sha256(files)
        result = train_stage2(
            train, val, list(dataset.classes), start, recipe, out_dir, names, callbacks,
            stop_event, fingerprints,
        )  # fmt: skip
        if launch().rank == 0:
            warn_if_saturated(result)
            tell(model_line(result))
    return result


def train_stage2(
    train: Dataset,
    val: Dataset | None,
    class_names: list[str],
    start: Init,
    recipe: Stage2Recipe,
    out_dir: Path,
    data_names: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
    extra_provenance: dict | None = None,
) -> FitResult:
    """Build the model from ``start``, train it on already-split data through `fit` and
    record the best validation's metrics; the one training path of stage 2.

    ``extra_provenance`` joins what the checkpoint records (e.g. the tiles' fingerprints)."""
    import torch

    from napari_rckd.models import ModelConfig, create_model
    from napari_rckd.training.loop import fit
    from napari_rckd.training.tasks import ClassificationTask, SegmentationTask

    total_steps = schedule(
        recipe.steps, recipe.epochs, len(train), recipe.batch_size, launch().world_size
    )
    config = ModelConfig(
        task="classify" if recipe.task == "classify" else "dense",
        backbone=start.backbone,
        num_outputs=len(class_names),
        class_names=class_names,
        input_mpp=recipe.mpp,
        tile_size=recipe.tile_size,
        head=recipe.head if recipe.task == "classify" else "last",
        decoder="standard" if recipe.task == "classify" else recipe.decoder,
    )
    torch.manual_seed(recipe.seed)  # the new head's weights: the same for every init
    model = create_model(config, pretrained=start.imagenet)
    start.load_into(model)
    record = provenance(
        "rckd-stage2", recipe, init=start.identity(), data=list(data_names),
        train_tiles=len(train), val_tiles=len(val) if val is not None else 0,
        **(extra_provenance or {}),
    )  # fmt: skip
    kind = ClassificationTask if recipe.task == "classify" else SegmentationTask
    objective = kind(model, len(class_names), class_names)
    fit_config = stage_fit_config(
        recipe, total_steps, record, patience=recipe.patience,
        backbone_lr_scale=recipe.pretrained_backbone_lr if start.name != "none" else 1.0,
    )  # fmt: skip
    result = fit(objective, train, val, fit_config, out_dir, callbacks, stop_event)
    if launch().rank == 0:
        record_best_metrics(result)
    return result


def _check_tile_folders(tiles, data, groups) -> None:
    """Say once when ungrouped tiles look like copies."""
    from napari_rckd.training.data.duplicates import warn_about_copies
    from napari_rckd.training.data.groups import groups_file

    if groups is None and not any(groups_file(Path(d)) for d in data):
        warn_about_copies(tiles)


def scale_note(tiles, start: Init, recipe: Stage2Recipe) -> str | None:
    """One line stating the scale assumed for tiles without an mpp, when the init was
    trained at a known one (the model then sees them at a scale nobody chose)."""
    from PIL import Image

    if not tiles or tiles[0].mpp is not None or start.trained_mpp is None:
        return None
    with Image.open(tiles[0].path) as image:
        width = image.width
    as_if = recipe.mpp * recipe.tile_size / width
    return (
        f"the tiles record no µm per pixel: each ({width} px wide, like {tiles[0].path.name}) "
        f"is resized to {recipe.tile_size} px and read as {recipe.mpp} µm/px, as if scanned "
        f"at {as_if:.3g} µm/px (the init was trained at {start.trained_mpp} µm/px); pass "
        "--data-mpp with their real µm/px to resample them instead"
    )


def warn_if_saturated(result: FitResult) -> bool:
    """Warn when every validation scored a perfect primary metric: on real data that is
    almost always copies of training images in validation, not a perfect model."""
    values = [h.get(result.primary_metric) for h in result.history]
    if not values or any(v is None or v < 1.0 for v in values):
        return False
    log.warning(
        "all %d validations scored %s = 1.0: the validation split is probably leaking "
        "(copies of training images among the validation tiles); give a groups.csv "
        "(class,group,file) beside the tiles or --groups FILE",
        len(values),
        result.primary_metric,
    )
    return True


def _dataset(task, data, classes, label_from, data_mpp, groups, annotations, slide, masks,
             slide_mpp, tile_size, mpp, seed, augment):  # fmt: skip
    from napari_rckd.training.data.labelled import TileFolderDataset, scan_tile_folders
    from napari_rckd.training.data.regions import MaskTileDataset, RegionTileDataset

    if task == "segment":
        if slide is None or masks is None or not classes:
            raise RckdError(
                "--task segment needs --slide IMAGE, --masks MASK (0 = unlabelled, k = class k) "
                "and --classes A,B,..."
            )
        return MaskTileDataset(
            slide, masks, classes, size=tile_size, mpp=mpp, image_mpp=slide_mpp, augment=augment
        )
    if annotations is not None:
        if slide is None:
            raise RckdError("--annotations needs --slide: the slide the regions were drawn on")
        return RegionTileDataset(
            slide, annotations, classes, size=tile_size, mpp=mpp, slide_mpp=slide_mpp,
            seed=seed, augment=augment,
        )  # fmt: skip
    if not data:
        raise RckdError("give labelled tile folders, or --annotations with --slide")
    tiles = scan_tile_folders(data, label_from=label_from, mpp=data_mpp, groups=groups)
    return TileFolderDataset(tiles, classes, size=tile_size, mpp=mpp, train=True, augment=augment)


def _split(dataset, train_index, val_index):
    """Training and validation subsets; validation sees the tiles unaugmented and uncropped."""
    from torch.utils.data import Subset

    plain = copy.copy(dataset)
    plain.augment = None
    if hasattr(plain, "train"):
        plain.train = False
    return Subset(dataset, train_index.tolist()), Subset(plain, val_index.tolist())


def record_best_metrics(result: FitResult) -> None:
    """Write the best validation's full metrics into the best checkpoint's provenance."""
    from napari_rckd.models import load_checkpoint, save_checkpoint

    if result.best_checkpoint is None:
        return
    metrics = next((h for h in result.history if h["step"] == result.best_step), None)
    if metrics is None:
        return
    model, metadata = load_checkpoint(result.best_checkpoint)
    provenance = {**metadata.get("provenance", {}), "validation": metrics}
    save_checkpoint(result.best_checkpoint, model, provenance)
