"""RCKD stage 1 by its recipe: distil a nuclei teacher into a dense student on unlabeled tissue.

`Stage1Recipe` holds the choices (teacher, student, scale, budget, optimiser); `pretrain` takes
it with the slides and a run folder. The command line (`napari-rckd pretrain`), the Train
widget's stage 1 and the shipped recipe all build a `Stage1Recipe`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_rckd.devices import launch
from napari_rckd.errors import RckdError
from napari_rckd.training.callbacks import Callback
from napari_rckd.training.config import FitResult
from napari_rckd.training.initial import load_nuclei_weights, nuclei_start
from napari_rckd.training.recipes.common import (
    RecipeOptions,
    check_out_dir,
    check_slides_have_mpp,
    data_sha256,
    fill_cache,
    provenance,
    schedule,
    stage_fit_config,
)
from napari_rckd.training.run_notes import (
    init_line,
    model_line,
    run_log,
    slide_mpp_line,
    teacher_line,
    tell,
)

log = logging.getLogger(__name__)

AUGMENTS = ("light", "strong", "stain")
# What the student learns in channel 0: the teacher's nuclear probability (its response, soft
# where it hesitates), or its decisions (probability > 0.5: the nuclei it draws), which leaves
# the student no hesitation to inherit and lose on tissue it never saw (docs/teachers.md).
TARGETS = ("probability", "decision")


@dataclass
class Stage1Recipe(RecipeOptions):
    """How stage 1 trains: ``tiles`` random tissue tiles (plus ``val_tiles`` held out, None:
    10%) at ``mpp`` answered once by ``teacher``, for ``steps`` or ``epochs``."""

    teacher: str = "builtin"
    backbone: str = "rckd_csat"
    decoder: str = "standard"
    mpp: float = 0.5
    tile_size: int = 256
    tiles: int = 1000
    val_tiles: int | None = None
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    device: str = "auto"
    # Data-loading processes. They matter here: in the main process the augmentation's small
    # tensor ops share torch's thread pool with the model and ran ~20x slower
    # (docs/performance.md).
    workers: int = 2
    seed: int = 0
    boundaries: bool = False  # also learn the teacher's instance boundaries (a 2nd channel)
    # "light" jitter, "strong" (`Augment.strong`, the teacher's: zoom and about 1.5x the colour
    # jitter) or "stain" (`Augment.stain`: stain densities ±25 %) for a student that must hold
    # on stains it never saw
    augment: str = "light"
    targets: str = "probability"  # one of TARGETS
    # a nuclei model (zoo name or checkpoint) whose weights the student starts from, e.g. the
    # shipped csat to distil further or to grow a detail decoder on; None: random
    init: str | None = None


def pretrain(
    slides: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    recipe: Stage1Recipe | None = None,
    *,
    resume: bool = False,
    slide_mpp: float | None = None,
    mpp_table: dict[str, float] | None = None,
    cache_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
) -> FitResult:
    """RCKD stage 1: train a dense student to reproduce the recipe's teacher on tissue tiles.

    The tiles are drawn once from ``slides`` (pixel size from the files, ``mpp_table`` or
    ``slide_mpp``); the teacher answers each once into ``cache_dir`` (default
    ``out_dir/teacher-cache``), so later epochs only train the student. The best student by
    validation Dice against the teacher is ``out_dir/best.safetensors``: a nuclei model that
    `napari_rckd.teachers.get_teacher` accepts.
    """
    from napari_rckd.io import find_slides
    from napari_rckd.models import ModelConfig, create_model
    from napari_rckd.teachers import get_teacher
    from napari_rckd.training.data.sampling import SlidePool
    from napari_rckd.training.data.stage1 import TissueTileDataset
    from napari_rckd.training.loop import fit
    from napari_rckd.training.tasks import DistillationTask

    r = recipe or Stage1Recipe()
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume)
    if r.tiles < 1 or r.tile_size < 32 or not r.mpp > 0:
        raise RckdError(
            f"--tiles ({r.tiles}) must be >= 1, --tile-size ({r.tile_size}) >= 32 and --mpp "
            f"({r.mpp}) > 0"
        )
    augment = _augment(r)
    if r.targets not in TARGETS:
        raise RckdError(f"--targets {r.targets!r} is not one of {', '.join(TARGETS)}")
    paths = find_slides(slides)
    check_slides_have_mpp(paths, slide_mpp, mpp_table)
    total_steps = schedule(r.steps, r.epochs, r.tiles, r.batch_size, launch().world_size)
    with run_log(out_dir):
        the_teacher = get_teacher(r.teacher)
        start = _check_init(r)
        tell(teacher_line(r.teacher, the_teacher))
        tell(slide_mpp_line(paths, r.mpp, slide_mpp, mpp_table))
        cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "teacher-cache"
        val_tiles = (
            r.val_tiles if r.val_tiles is not None else max(launch().world_size, r.tiles // 10)
        )
        common = dict(size=r.tile_size, mpp=r.mpp, boundaries=r.boundaries)
        train = TissueTileDataset(
            SlidePool(paths, slide_mpp, mpp_table), the_teacher, cache_dir, count=r.tiles,
            seed=r.seed, augment=augment, **common,
        )  # fmt: skip
        # Another seed draws other locations: held-out teacher responses for validation. They may
        # overlap training tiles in area (`avoid=` cannot be honoured once training tiles cover a
        # small slide), so they measure agreement with the teacher, not generalisation.
        val = TissueTileDataset(
            SlidePool(paths, slide_mpp, mpp_table), the_teacher, cache_dir, count=val_tiles,
            seed=r.seed + 1, **common,
        )  # fmt: skip
        tell(
            f"validation: {val_tiles} more tissue tiles drawn with another seed from the same "
            f"slides, not split by slide: stage 1 has no labels, and the check is agreement with "
            f"the teacher, not generalisation ({r.tiles} training tiles)"
        )
        fill_cache([train, val])

        channels = 2 if r.boundaries else 1
        config = ModelConfig(
            task="dense",
            backbone=r.backbone,
            decoder=r.decoder,
            num_outputs=channels,
            class_names=["nuclei", "boundary"][:channels],
            input_mpp=r.mpp,
            tile_size=r.tile_size,
        )
        record = provenance(
            "rckd-stage1", r, teacher=the_teacher.identity, val_tiles=val_tiles,
            init=start.identity() if start else None,
            slides=[p.name for p in paths], data_sha256=data_sha256(paths),
        )  # fmt: skip
        fit_config = stage_fit_config(r, total_steps, record)
        model = create_model(config)
        if start is not None:
            load_nuclei_weights(model, start)
        task = DistillationTask(model, decisions=r.targets == "decision")
        result = fit(task, train, val, fit_config, out_dir, callbacks, stop_event)
        if launch().rank == 0:
            tell(model_line(result))

    return result


def _augment(r: Stage1Recipe):
    """The training tiles' augmentation named by ``r.augment``."""
    from napari_rckd.training.data.augment import Augment

    if r.augment not in AUGMENTS:
        raise RckdError(f"--augment {r.augment!r} is not one of {', '.join(AUGMENTS)}")
    return {"light": Augment, "strong": Augment.strong, "stain": Augment.stain}[r.augment]()


def _check_init(r: Stage1Recipe):
    """The student's start, told before any data loads: random, or ``r.init``'s weights (which
    need the contour output: ``boundaries``)."""
    if r.init is None:
        tell(f"start weights: random (stage 1 trains a new {r.backbone} student)")
        return None
    if not r.boundaries:
        raise RckdError(f"--init {r.init} starts a student with a contour output; add --boundaries")
    start = nuclei_start(r.init, r.backbone, r.decoder, r.mpp, grow_detail=True)
    tell(init_line(start))
    return start
