"""RCKD stage 2 recipe: labelled data + an initialisation -> a classifier or segmenter via `fit`.

Data comes from tile folders (labels from folder or file name), class-named regions of a
GeoJSON annotation on a slide, or a label mask of a slide. It is split by group (slide,
case, region or block of tiles) so nothing leaks from training into validation; the best
checkpoint by the task's primary metric is kept, with its validation metrics recorded in
the checkpoint's provenance.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from napari_rckd.errors import RckdError
from napari_rckd.training.callbacks import Callback
from napari_rckd.training.config import FitResult
from napari_rckd.training.recipes import (
    check_out_dir,
    rank,
    schedule,
    stage_fit_config,
    world_size,
)

log = logging.getLogger(__name__)

TASKS = ("classify", "segment")


def finetune(
    data: Sequence[str | os.PathLike] = (),
    out_dir: str | os.PathLike = "runs/stage2",
    *,
    task: str = "classify",
    init: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    label_from: str = "auto",
    data_mpp: float | None = None,
    annotations: str | os.PathLike | None = None,
    slide: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    slide_mpp: float | None = None,
    backbone: str | None = None,
    mpp: float = 0.5,
    tile_size: int = 224,
    val_fraction: float = 0.2,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    patience: int | None = None,
    device: str = "auto",
    workers: int = 0,
    seed: int = 0,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
) -> FitResult:
    """Fine-tune for ``task`` ("classify" or "segment") and return how the run ended.

    ``init`` is a stage-1 (or any napari-rckd) checkpoint whose backbone starts the model,
    ``"imagenet"`` for timm's ImageNet weights, or None/``"none"`` for random weights.
    ``backbone`` defaults to the init checkpoint's, else ``rckd_csat``.
    """
    from napari_rckd.models import ModelConfig, create_model, load_backbone
    from napari_rckd.training.data.augment import Augment
    from napari_rckd.training.data.splits import split_by_group
    from napari_rckd.training.loop import fit
    from napari_rckd.training.tasks import ClassificationTask, SegmentationTask

    if task not in TASKS:
        raise RckdError(f"--task {task!r} is unknown; use classify or segment")
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume)
    init_path, backbone = _initialisation(init, backbone)

    augment = Augment()
    dataset = _dataset(
        task, data, classes, label_from, data_mpp, annotations, slide, masks, slide_mpp,
        tile_size, mpp, seed, augment,
    )  # fmt: skip
    class_names = list(dataset.classes)
    labels = getattr(dataset, "labels", None)
    train_index, val_index = split_by_group(dataset.groups, labels, val_fraction, seed)
    train, val = _split(dataset, train_index, val_index)
    log.info("%d training and %d validation tiles", len(train_index), len(val_index))

    total_steps = schedule(steps, epochs, len(train_index), batch_size, world_size())
    model_task = "classify" if task == "classify" else "dense"
    config = ModelConfig(
        task=model_task,
        backbone=backbone,
        num_outputs=len(class_names),
        class_names=class_names,
        input_mpp=mpp,
        tile_size=tile_size,
    )
    model = create_model(config, pretrained=init == "imagenet")
    provenance = {
        "stage": "rckd-stage2",
        "task": task,
        "init": str(init_path.name) if init_path else (init or "none"),
        "data": [Path(p).name for p in data]
        + [Path(p).name for p in (annotations, slide, masks) if p],
        "train_tiles": len(train_index),
        "val_tiles": len(val_index),
    }
    if init_path is not None:
        source = load_backbone(model, init_path)
        provenance["init_provenance"] = source.get("provenance", {})
    objective = (
        ClassificationTask(model, len(class_names), class_names)
        if task == "classify"
        else SegmentationTask(model, len(class_names), class_names)
    )
    fit_config = stage_fit_config(
        steps,
        epochs,
        total_steps,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        device=device,
        num_workers=workers,
        seed=seed,
        provenance=provenance,
    )
    result = fit(objective, train, val, fit_config, out_dir, callbacks, stop_event)
    if rank() == 0:
        record_best_metrics(result)
    return result


def _initialisation(init, backbone: str | None) -> tuple[Path | None, str]:
    """The init checkpoint (None for imagenet/none) and the backbone to build."""
    if init in (None, "none", "imagenet"):
        return None, backbone or "rckd_csat"
    from napari_rckd.models.weights import read_weights

    path = Path(init)
    _, metadata = read_weights(path)
    if metadata is None or "config" not in metadata:
        raise RckdError(
            f"--init {path} is not a napari-rckd checkpoint; give a stage-1 .safetensors "
            "from `napari-rckd pretrain`, 'imagenet' or 'none'"
        )
    trained = metadata["config"]["backbone"]
    if backbone is not None and backbone != trained:
        raise RckdError(
            f"--init {path.name} holds a {trained!r} backbone but --backbone is {backbone!r}; "
            f"drop --backbone or pass --backbone {trained}"
        )
    return path, trained


def _dataset(task, data, classes, label_from, data_mpp, annotations, slide, masks, slide_mpp,
             tile_size, mpp, seed, augment):  # fmt: skip
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
    tiles = scan_tile_folders(data, label_from=label_from, mpp=data_mpp)
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


def format_metrics(metrics: dict) -> str:
    """Metrics as aligned lines: overall scores first, then one line per class."""
    overall = [k for k in metrics if "/" not in k and k != "step"]
    per_class = [k for k in metrics if "/" in k]
    lines = [f"  {k:<18} {metrics[k]:.4f}" for k in overall]
    lines += [f"  {k:<18} {metrics[k]:.4f}" for k in per_class]
    return "\n".join(lines)


def evaluate_tiles(
    checkpoint: str | os.PathLike,
    folders: Sequence[str | os.PathLike],
    label_from: str = "auto",
    data_mpp: float | None = None,
    batch_size: int = 16,
    skip_unknown: bool = False,
) -> dict[str, float]:
    """A classifier checkpoint's metrics on labelled tile folders (its own class names).

    Tiles of classes the model does not know are refused, or with ``skip_unknown`` left out
    and counted as ``skipped/<class>``.
    """
    import torch
    from torch.utils.data import DataLoader

    from napari_rckd.models import load_checkpoint
    from napari_rckd.training.data.labelled import TileFolderDataset, scan_tile_folders
    from napari_rckd.training.tasks import ClassificationTask

    model, _ = load_checkpoint(checkpoint)
    config = model.config
    if config.task != "classify":
        raise RckdError(
            f"{Path(checkpoint).name} is a {config.task} model, not a classifier; give a "
            "checkpoint from `napari-rckd finetune --task classify`"
        )
    tiles = scan_tile_folders(folders, label_from=label_from, mpp=data_mpp)
    unknown = sorted({t.label for t in tiles} - set(config.class_names))
    if unknown and not skip_unknown:
        raise RckdError(
            f"the tiles have labels {', '.join(unknown)} that {Path(checkpoint).name} does not "
            f"know (its classes: {', '.join(config.class_names)}); remove those tiles or pass "
            "--skip-unknown"
        )
    skipped = {f"skipped/{name}": float(sum(t.label == name for t in tiles)) for name in unknown}
    tiles = [t for t in tiles if t.label not in unknown]
    if not tiles:
        raise RckdError(
            f"no tile has a class {Path(checkpoint).name} knows ({', '.join(config.class_names)})"
            "; check --label-from"
        )
    dataset = TileFolderDataset(tiles, config.class_names, config.tile_size, config.input_mpp)
    task = ClassificationTask(model, config.num_outputs, config.class_names)
    with torch.inference_mode():
        metrics = task.evaluate(DataLoader(dataset, batch_size=batch_size))
    metrics["tiles"] = float(len(dataset))
    return {**metrics, **skipped}
