"""Measuring a classifier checkpoint on labelled tile folders (`napari-rckd evaluate tiles`),
and the metrics as the commands print them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from napari_rckd.errors import RckdError
from napari_rckd.training.in_sample import tiles_seen

log = logging.getLogger(__name__)


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
    track: Callable[[Iterable, int], Iterable] | None = None,
) -> dict[str, float]:
    """A classifier checkpoint's metrics on labelled tile folders (its own class names).

    Tiles of classes the model does not know are refused, or with ``skip_unknown`` left out
    and counted as ``skipped/<class>``. A warning says when test tiles are ones the model
    was trained or validated on (`in_sample.tiles_seen`). ``track(batches, count)`` may wrap
    the batches (a progress bar).
    """
    import torch
    from torch.utils.data import DataLoader

    from napari_rckd.models import load_checkpoint
    from napari_rckd.training.data.labelled import TileFolderDataset, scan_tile_folders
    from napari_rckd.training.tasks import ClassificationTask

    model, metadata = load_checkpoint(checkpoint)
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
    warning = tiles_seen(
        metadata.get("provenance", {}), [t.path for t in tiles], folders, Path(checkpoint).name
    )
    if warning:
        log.warning(warning)
    dataset = TileFolderDataset(tiles, config.class_names, config.tile_size, config.input_mpp)
    task = ClassificationTask(model, config.num_outputs, config.class_names)
    loader = DataLoader(dataset, batch_size=batch_size)
    with torch.inference_mode():
        metrics = task.evaluate(loader if track is None else track(loader, len(loader)))
    metrics["tiles"] = float(len(dataset))
    return {**metrics, **skipped}
