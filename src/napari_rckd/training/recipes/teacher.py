"""Training a learned nuclei teacher on ground truth: the model shipped as ``learned``.

A dense network with two outputs, the nuclear pixel logit and the nuclear-contour logit (the
TorchScript teacher contract of docs/teachers.md), trained with the stage-1 objective on hard
targets. Instances come from contour-separated cores grown over the nuclei
(`napari_rckd.teachers.instances.instances_from_probability`). ``holdout`` leaves sources out, so
the same command makes the leave-one-source-out models and the shipped one. ``unlabeled``
slides, answered by ``pseudo_teacher``, replace a share of the crops (self-training,
`napari_rckd.training.data.mixed`). `TeacherRecipe` holds the choices; the command line
(`napari-rckd train-teacher`) and the shipped recipe build one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from napari_rckd.defaults import TEACHER_BACKBONE, TEACHER_MPP, TEACHER_STEPS
from napari_rckd.devices import launch
from napari_rckd.errors import RckdError
from napari_rckd.training.callbacks import Callback
from napari_rckd.training.config import FitResult
from napari_rckd.training.initial import nuclei_start
from napari_rckd.training.recipes.common import (
    RecipeOptions,
    check_out_dir,
    check_slides_have_mpp,
    data_sha256,
    fill_cache,
    provenance,
    stage_fit_config,
)
from napari_rckd.training.run_notes import (
    init_line,
    model_line,
    run_log,
    slide_mpp_line,
    split_line,
    teacher_line,
    tell,
)

log = logging.getLogger(__name__)

OUTPUT_NAMES = ["nuclei", "boundary"]


@dataclass
class TeacherRecipe(RecipeOptions):
    """How a nuclei teacher trains: sources left out (``holdout``), network, scale, budget,
    optimiser and, with unlabeled slides, the self-training share and its teacher."""

    holdout: list[str] = field(default_factory=list)  # source prefixes never read
    backbone: str = TEACHER_BACKBONE
    decoder: str = "standard"
    mpp: float = TEACHER_MPP
    tile_size: int = 192
    steps: int = TEACHER_STEPS
    batch_size: int = 12
    lr: float = 2e-3
    val_fraction: float = 0.15  # share of the training images (whole images) that validate
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    pseudo_teacher: str = "builtin"  # answers the unlabeled tiles
    pseudo_share: float = 0.3  # of the training crops, from the unlabeled tiles
    pseudo_tiles: int = 1500  # unlabeled tiles drawn and answered once
    # Start from these weights instead of random ones: a zoo name with shipped weights
    # (``learned``, ``csat``) or a two-output nuclei checkpoint (`train_teacher`, `pretrain` with
    # boundaries). Its backbone, decoder and µm/px must be the recipe's: a fine-tune, not a
    # new architecture. None: random weights.
    init: str | None = None


def train_teacher(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    recipe: TeacherRecipe | None = None,
    *,
    resume: bool = False,
    unlabeled: Sequence[str | os.PathLike] = (),
    slide_mpp: float | None = None,
    mpp_table: dict[str, float] | None = None,
    cache_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
) -> FitResult:
    """Train a nuclei teacher by ``recipe`` on the labelled images under ``data`` except the
    recipe's ``holdout`` sources.

    A share of the training images (``val_fraction``, whole images) validates the run and
    picks ``best.safetensors``; held-out sources are never read. With ``unlabeled`` slides,
    ``pseudo_tiles`` tissue tiles of them are answered once by ``pseudo_teacher`` (cached in
    ``cache_dir``, default ``out_dir/teacher-cache``) and make up ``pseudo_share`` of the crops.
    """
    from napari_rckd.training.data.nuclei import find_nuclei_images
    from napari_rckd.training.data.splits import split_by_group
    from napari_rckd.training.loop import fit
    from napari_rckd.training.tasks import DistillationTask

    r = recipe or TeacherRecipe()
    out_dir = Path(out_dir)
    if not r.mpp > 0 or r.tile_size < 64 or r.tile_size % 32:
        raise RckdError(
            f"--mpp ({r.mpp}) must be > 0 and --tile-size ({r.tile_size}) a multiple of 32 from 64"
        )
    check_out_dir(out_dir, resume)
    with run_log(out_dir):
        images = find_nuclei_images(data, r.holdout)
        if unlabeled:  # checked before the labelled images load: a typo answers at once
            slides, answering = _check_unlabeled(unlabeled, r.pseudo_teacher, slide_mpp, mpp_table)
        start = check_init(r)
        names = [str(i.image_path) for i in images]
        train_idx, val_idx = split_by_group(names, None, r.val_fraction, r.seed)
        tell(
            split_line(
                names, train_idx, val_idx, "whole images, each its own group", "images",
                singletons=False,
            )
        )  # fmt: skip
        mpps = sorted({i.mpp for i in images})
        tell(
            f"pixel size: images at {mpps[0]:g}-{mpps[-1]:g} µm/px (from manifest.csv), "
            f"resampled once to the model's {r.mpp:g} µm/px"
        )
        train_images = [images[i] for i in train_idx]
        val_images = [images[i] for i in val_idx]
        log.info(
            "teacher: %d training and %d validation images from %s",
            len(train_images),
            len(val_images),
            ", ".join(sorted({i.source for i in images})),
        )
        train, val, pseudo = _datasets(r, train_images, val_images)
        if unlabeled:
            tell(teacher_line(r.pseudo_teacher, answering, role="pseudo-labels of --unlabeled"))
            tell(slide_mpp_line(slides, r.mpp, slide_mpp, mpp_table, what="unlabeled tiles"))
            cache = Path(cache_dir) if cache_dir is not None else out_dir / "teacher-cache"
            train, pseudo = _with_pseudo_labels(
                train, slides, answering, r, cache, slide_mpp, mpp_table
            )
        record = provenance(
            "nuclei-teacher", r, init=start.identity() if start else None,
            sources=sorted({i.source for i in images}),
            train_images=[i.image_path.name for i in train_images],
            val_images=[i.image_path.name for i in val_images],
            data_sha256=data_sha256(i.image_path for i in train_images + val_images),
            **pseudo,
        )  # fmt: skip
        fit_config = stage_fit_config(r, r.steps, record)
        # The contour channel is thin and rare: weigh it like the nuclei so it is learned at all.
        task = DistillationTask(build_model(r, start), channel_weights=(1.0, 1.0))
        result = fit(task, train, val, fit_config, out_dir, callbacks, stop_event)
        if launch().rank == 0:
            tell(model_line(result))
    return result


def _datasets(r: TeacherRecipe, train_images, val_images) -> tuple:
    """Augmented training crops and plain validation crops; no pseudo-labels yet."""
    from napari_rckd.training.data.augment import Augment
    from napari_rckd.training.data.nuclei import NucleiCropDataset

    augment = Augment.strong()
    train = NucleiCropDataset(
        train_images, r.tile_size, r.mpp, r.steps * r.batch_size, r.seed, augment
    )
    val = NucleiCropDataset(val_images, r.tile_size, r.mpp, max(r.batch_size, 96), r.seed + 1)
    return train, val, {"unlabeled": []}


def check_init(r: TeacherRecipe):
    """Where the run starts, told and checked before any data loads: None (random weights) or
    ``r.init`` as an `Init` of the recipe's backbone, decoder and µm/px."""
    if r.init is None:
        tell(f"start weights: random (a new {r.backbone} teacher)")
        return None
    start = nuclei_start(r.init, r.backbone, r.decoder, r.mpp)
    tell(init_line(start))
    return start


def build_model(r: TeacherRecipe, start):
    """The two-output network (nuclei, contour): new, or ``start``'s with all its weights."""
    import dataclasses

    from napari_rckd.models import ModelConfig, create_model, load_checkpoint

    if start is None:
        config = ModelConfig(
            task="dense", backbone=r.backbone, decoder=r.decoder, num_outputs=2,
            class_names=OUTPUT_NAMES, input_mpp=r.mpp, tile_size=r.tile_size,
        )  # fmt: skip
        return create_model(config)
    model, _ = load_checkpoint(start.path)
    model.config = dataclasses.replace(model.config, tile_size=r.tile_size)  # the crops it saw
    return model


def _check_unlabeled(unlabeled, teacher_spec, slide_mpp, mpp_table) -> tuple:
    """The unlabeled slide files, each with a known pixel size, and the teacher that answers."""
    from napari_rckd.io import find_slides
    from napari_rckd.teachers import get_teacher

    paths = find_slides(unlabeled)
    check_slides_have_mpp(paths, slide_mpp, mpp_table)
    return paths, get_teacher(teacher_spec)


def _with_pseudo_labels(
    train, paths, teacher, r: TeacherRecipe, cache_dir: Path, slide_mpp, mpp_table
) -> tuple:
    """``train`` mixed with ``r.pseudo_tiles`` tissue tiles of ``paths`` answered by
    ``teacher`` (augmented like ``train``), and the provenance that says so."""
    from napari_rckd.training.data.mixed import MixedDataset
    from napari_rckd.training.data.sampling import SlidePool
    from napari_rckd.training.data.stage1 import TissueTileDataset

    pseudo = TissueTileDataset(
        SlidePool(paths, slide_mpp, mpp_table), teacher, cache_dir, count=r.pseudo_tiles,
        size=r.tile_size, mpp=r.mpp, seed=r.seed, boundaries=True, augment=train.augment,
    )  # fmt: skip
    fill_cache([pseudo])
    record = {
        "pseudo_teacher": teacher.identity,
        "pseudo_tiles": len(pseudo),
        "unlabeled": sorted({p.name for p in paths}),
        "unlabeled_sha256": data_sha256(paths),
    }
    return MixedDataset(train, pseudo, r.pseudo_share, r.seed), record
