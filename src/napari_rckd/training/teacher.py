"""Training a learned nuclei teacher on ground truth: the model shipped as ``learned``.

A dense network with two outputs, the nuclear pixel logit and the nuclear-contour logit (the
TorchScript teacher contract of docs/teachers.md), trained with the stage-1 objective on hard
targets. Instances come from contour-separated cores grown over the nuclei
(`napari_rckd.teachers.instances.instances_from_probability`). ``holdout`` leaves sources out, so
the same command makes the leave-one-source-out models and the shipped one. ``unlabeled``
slides, answered by ``pseudo_teacher``, replace a share of the crops (self-training,
`napari_rckd.training.data.mixed`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from napari_rckd.defaults import TEACHER_BACKBONE, TEACHER_MPP, TEACHER_STEPS
from napari_rckd.errors import RckdError
from napari_rckd.training.callbacks import Callback
from napari_rckd.training.config import FitResult
from napari_rckd.training.run_notes import (
    model_line,
    run_log,
    slide_mpp_line,
    split_line,
    teacher_line,
    tell,
)

log = logging.getLogger(__name__)

OUTPUT_NAMES = ["nuclei", "boundary"]


def train_teacher(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    holdout: Sequence[str] = (),
    backbone: str = TEACHER_BACKBONE,
    decoder: str = "standard",
    mpp: float = TEACHER_MPP,
    tile_size: int = 192,
    steps: int = TEACHER_STEPS,
    batch_size: int = 12,
    lr: float = 2e-3,
    val_fraction: float = 0.15,
    device: str = "auto",
    workers: int = 2,
    seed: int = 0,
    resume: bool = False,
    unlabeled: Sequence[str | os.PathLike] = (),
    pseudo_teacher: str = "builtin",
    pseudo_share: float = 0.3,
    pseudo_tiles: int = 1500,
    slide_mpp: float | None = None,
    mpp_table: dict[str, float] | None = None,
    cache_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
) -> FitResult:
    """Train a nuclei teacher on the labelled images under ``data`` except ``holdout`` sources.

    A share of the training images (``val_fraction``, whole images) validates the run and
    picks ``best.safetensors``; held-out sources are never read. With ``unlabeled``,
    ``pseudo_tiles`` tissue tiles of them are answered once by ``pseudo_teacher`` (cached in
    ``cache_dir``, default ``out_dir/teacher-cache``) and make up ``pseudo_share`` of the crops.
    """
    from napari_rckd.models import ModelConfig, create_model
    from napari_rckd.training.data.augment import Augment
    from napari_rckd.training.data.nuclei import NucleiCropDataset, find_nuclei_images
    from napari_rckd.training.data.splits import split_by_group
    from napari_rckd.training.loop import fit
    from napari_rckd.training.recipes import check_out_dir, stage_fit_config
    from napari_rckd.training.tasks import DistillationTask

    out_dir = Path(out_dir)
    if not mpp > 0 or tile_size < 64 or tile_size % 32:
        raise RckdError(
            f"--mpp ({mpp}) must be > 0 and --tile-size ({tile_size}) a multiple of 32 from 64"
        )
    check_out_dir(out_dir, resume)
    with run_log(out_dir):
        images = find_nuclei_images(data, holdout)
        if unlabeled:  # checked before the labelled images load: a typo answers at once
            slides, answering = _check_unlabeled(unlabeled, pseudo_teacher, slide_mpp, mpp_table)
        tell(f"start weights: random (a new {backbone} teacher)")
        train_idx, val_idx = split_by_group(
            [str(i.image_path) for i in images], None, val_fraction, seed
        )
        tell(
            split_line(
                [str(i.image_path) for i in images], train_idx, val_idx,
                "whole images, each its own group", "images", singletons=False,
            )
        )  # fmt: skip
        mpps = sorted({i.mpp for i in images})
        tell(
            f"pixel size: images at {mpps[0]:g}-{mpps[-1]:g} µm/px (from manifest.csv), "
            f"resampled once to the model's {mpp:g} µm/px"
        )
        train_images = [images[i] for i in train_idx]
        val_images = [images[i] for i in val_idx]
        log.info(
            "teacher: %d training and %d validation images from %s",
            len(train_images),
            len(val_images),
            ", ".join(sorted({i.source for i in images})),
        )
        augment = Augment(scale=0.2, hed=0.05, brightness=0.15, contrast=0.15, saturation=0.15)
        train = NucleiCropDataset(train_images, tile_size, mpp, steps * batch_size, seed, augment)
        pseudo = {}
        if unlabeled:
            tell(teacher_line(pseudo_teacher, answering, role="pseudo-labels of --unlabeled"))
            tell(slide_mpp_line(slides, mpp, slide_mpp, mpp_table, what="unlabeled tiles"))
            train, pseudo = _with_pseudo_labels(
                train,
                slides,
                answering,
                pseudo_share,
                Path(cache_dir) if cache_dir is not None else out_dir / "teacher-cache",
                dict(count=pseudo_tiles, size=tile_size, mpp=mpp, seed=seed, augment=augment),
                slide_mpp,
                mpp_table,
            )
        val = NucleiCropDataset(val_images, tile_size, mpp, max(batch_size, 96), seed + 1)

        config = ModelConfig(
            task="dense",
            backbone=backbone,
            decoder=decoder,
            num_outputs=2,
            class_names=OUTPUT_NAMES,
            input_mpp=mpp,
            tile_size=tile_size,
        )
        fit_config = stage_fit_config(
            steps,
            None,
            steps,
            batch_size=batch_size,
            lr=lr,
            device=device,
            num_workers=workers,
            seed=seed,
            provenance={
                "stage": "nuclei-teacher",
                "sources": sorted({i.source for i in images}),
                "holdout": list(holdout),
                "train_images": [i.image_path.name for i in train_images],
                "val_images": [i.image_path.name for i in val_images],
                "mpp": mpp,
                "tile_size": tile_size,
                **pseudo,
            },
        )
        # The contour channel is thin and rare: weigh it like the nuclei so it is learned at all.
        task = DistillationTask(create_model(config), channel_weights=(1.0, 1.0))
        result = fit(task, train, val, fit_config, out_dir, callbacks, stop_event)
        if int(os.environ.get("RANK", "0")) == 0:
            tell(model_line(result))
    return result


def _check_unlabeled(unlabeled, teacher_spec, slide_mpp, mpp_table) -> tuple:
    """The unlabeled slide files, each with a known pixel size, and the teacher that answers."""
    from napari_rckd.io import find_slides
    from napari_rckd.teachers import get_teacher
    from napari_rckd.training.recipes import check_slides_have_mpp

    paths = find_slides(unlabeled)
    check_slides_have_mpp(paths, slide_mpp, mpp_table)
    return paths, get_teacher(teacher_spec)


def _with_pseudo_labels(
    train, paths, teacher, share, cache_dir, tiles, slide_mpp, mpp_table
) -> tuple:
    """``train`` mixed with tissue tiles of ``paths`` answered by ``teacher``, and the
    provenance that says so."""
    from napari_rckd.training.data.mixed import MixedDataset
    from napari_rckd.training.data.stage1 import TissueTileDataset
    from napari_rckd.training.recipes import fill_cache

    pseudo = TissueTileDataset(
        paths,
        teacher,
        cache_dir,
        slide_mpp=slide_mpp,
        mpp_table=mpp_table,
        boundaries=True,
        **tiles,
    )
    fill_cache([pseudo])
    provenance = {
        "pseudo_teacher": teacher.identity,
        "pseudo_share": share,
        "pseudo_tiles": len(pseudo),
        "unlabeled": sorted({p.name for p in paths}),
    }
    return MixedDataset(train, pseudo, share, tiles["seed"]), provenance
