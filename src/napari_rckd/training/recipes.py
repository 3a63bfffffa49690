"""Recipes: user-level choices (slides, teacher, backbone, budget) -> datasets, model, task, `fit`.

The CLI commands and, later, the GUI call these, so both train exactly the same way.
``pretrain`` is RCKD stage 1 (distil a nuclei teacher into a dense student on unlabeled
tissue); ``finetune`` (in `napari_rckd.training.finetune`) is stage 2.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from napari_rckd.devices import launch
from napari_rckd.errors import RckdError
from napari_rckd.training.callbacks import Callback
from napari_rckd.training.config import FitConfig, FitResult
from napari_rckd.training.run_notes import (
    model_line,
    run_log,
    slide_mpp_line,
    teacher_line,
    tell,
)

log = logging.getLogger(__name__)

# Validation and checkpoints this many times per run unless the caller says otherwise.
CHECKS_PER_RUN = 4


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse to train over an existing run unless resuming: nothing trained is ever lost."""
    if resume or not out_dir.exists():
        return
    existing = sorted(p.name for p in out_dir.glob("*.safetensors"))
    existing += sorted(p.name for p in out_dir.glob("*.state.pt"))
    if existing:
        raise RckdError(
            f"{out_dir} already holds a trained model ({', '.join(existing)}); pass --resume to "
            "continue that run, or choose another --out"
        )


def check_slides_have_mpp(
    paths: Sequence[Path], slide_mpp: float | None, mpp_table: dict[str, float] | None = None
) -> None:
    """Tiles are cut at a physical resolution, so every slide needs a pixel size."""
    if slide_mpp is not None:
        if not slide_mpp > 0:
            raise RckdError(f"--slide-mpp must be a positive µm/px value, got {slide_mpp}")
        return
    from napari_rckd.io import open_slide

    for path in paths:
        if str(Path(path).resolve()) in (mpp_table or {}):
            continue
        with open_slide(path) as slide:
            if slide.mpp is None:
                raise RckdError(
                    f"slide {path.name} does not say its pixel size (µm/px); pass --slide-mpp "
                    "with the scanner's value (about 0.25 at 40x, 0.5 at 20x) or leave it out"
                )


def schedule(
    steps: int | None, epochs: int | None, samples: int, batch_size: int, world_size: int
) -> int:
    """Optimizer steps the run will take (needed to space validations and checkpoints)."""
    if steps is None and epochs is None:
        raise RckdError("say how long to train: give --steps or --epochs")
    if steps is not None:
        return steps
    per_epoch = samples // (batch_size * world_size)
    if per_epoch == 0:
        raise RckdError(
            f"only {samples} training samples, fewer than one batch of {batch_size} per process; "
            "lower --batch-size or add data"
        )
    return epochs * per_epoch


def pretrain(
    slides: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    teacher: str = "builtin",
    backbone: str = "rckd_csat",
    decoder: str = "standard",
    mpp: float = 0.5,
    tile_size: int = 256,
    tiles: int = 1000,
    val_tiles: int | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    device: str = "auto",
    resume: bool = False,
    slide_mpp: float | None = None,
    mpp_table: dict[str, float] | None = None,
    workers: int = 0,
    seed: int = 0,
    boundaries: bool = False,
    cache_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
) -> FitResult:
    """RCKD stage 1: train a dense ``backbone`` student to reproduce ``teacher`` on tissue tiles.

    ``tiles`` random tissue tiles (plus ``val_tiles`` held-out ones, default 10%) are drawn
    once from the slides; the teacher answers each once into ``cache_dir`` (default
    ``out_dir/teacher-cache``), so later epochs only train the student. The best student by
    validation Dice against the teacher is ``out_dir/best.safetensors``: a nuclei model that
    `napari_rckd.teachers.get_teacher` accepts.
    """
    from napari_rckd.io import find_slides
    from napari_rckd.models import ModelConfig, create_model
    from napari_rckd.teachers import get_teacher
    from napari_rckd.training.data.augment import Augment
    from napari_rckd.training.data.stage1 import TissueTileDataset
    from napari_rckd.training.loop import fit
    from napari_rckd.training.tasks import DistillationTask

    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume)
    if tiles < 1 or tile_size < 32 or not mpp > 0:
        raise RckdError(
            f"--tiles ({tiles}) must be >= 1, --tile-size ({tile_size}) >= 32 and --mpp ({mpp}) > 0"
        )
    paths = find_slides(slides)
    check_slides_have_mpp(paths, slide_mpp, mpp_table)
    total_steps = schedule(steps, epochs, tiles, batch_size, launch().world_size)
    with run_log(out_dir):
        the_teacher = get_teacher(teacher)
        tell(f"start weights: random (stage 1 trains a new {backbone} student)")
        tell(teacher_line(teacher, the_teacher))
        tell(slide_mpp_line(paths, mpp, slide_mpp, mpp_table))
        cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "teacher-cache"
        val_tiles = val_tiles if val_tiles is not None else max(launch().world_size, tiles // 10)
        common = dict(
            size=tile_size, mpp=mpp, slide_mpp=slide_mpp, mpp_table=mpp_table, boundaries=boundaries
        )
        train = TissueTileDataset(
            paths, the_teacher, cache_dir, count=tiles, seed=seed, augment=Augment(), **common
        )
        # Another seed draws other locations: held-out teacher responses for validation. They may
        # overlap training tiles in area (`avoid=` cannot be honoured once training tiles cover a
        # small slide), so they measure agreement with the teacher, not generalisation.
        val = TissueTileDataset(
            paths, the_teacher, cache_dir, count=val_tiles, seed=seed + 1, **common
        )
        tell(
            f"validation: {val_tiles} more tissue tiles drawn with another seed from the same "
            f"slides, not split by slide: stage 1 has no labels, and the check is agreement with "
            f"the teacher, not generalisation ({tiles} training tiles)"
        )
        fill_cache([train, val])

        channels = 2 if boundaries else 1
        names = ["nuclei", "boundary"][:channels]
        config = ModelConfig(
            task="dense",
            backbone=backbone,
            decoder=decoder,
            num_outputs=channels,
            class_names=names,
            input_mpp=mpp,
            tile_size=tile_size,
        )
        model = create_model(config)
        fit_config = stage_fit_config(
            steps,
            epochs,
            total_steps,
            batch_size=batch_size,
            lr=lr,
            device=device,
            num_workers=workers,
            seed=seed,
            provenance={
                "stage": "rckd-stage1",
                "teacher": the_teacher.identity,
                "slides": [p.name for p in paths],
                "tiles": tiles,
                "val_tiles": val_tiles,
                "mpp": mpp,
                "tile_size": tile_size,
            },
        )
        result = fit(
            DistillationTask(model), train, val, fit_config, out_dir, callbacks, stop_event
        )
        if launch().rank == 0:
            tell(model_line(result))

    return result


def fill_cache(datasets: Sequence) -> None:
    """Run the teacher on every planned tile once; under torchrun each rank fills its share."""
    total = sum(len(d) for d in datasets)
    done = 0
    place = launch()
    for dataset in datasets:
        for index in range(place.rank, len(dataset), place.world_size):
            dataset.tile(index)
            done += place.world_size
            if done % 100 < place.world_size:
                log.info("teacher responses: %d of %d tiles", min(done, total), total)
    damaged = sum(len(d.damaged) for d in datasets)
    share = -(-total // place.world_size)  # this rank's share of the tiles
    if damaged > share // 2:
        slides = {d.pool.paths[int(d.plan[i][0])].name for d in datasets for i in d.damaged}
        raise RckdError(
            f"{damaged} of {share} training tiles could not be decoded "
            f"({', '.join(sorted(slides))}); the slides are damaged, so copy or export them "
            "again, or leave them out."
        )
    if damaged:
        log.warning("%d of %d tiles could not be decoded and were learnt as glass", damaged, share)


def stage_fit_config(steps, epochs, total_steps: int, **options) -> FitConfig:
    """The `FitConfig` of a stage: validate and checkpoint CHECKS_PER_RUN times a run.

    ``resume=True`` is safe here: `check_out_dir` already refused to reuse a run folder
    that the user did not ask to resume.
    """
    every = max(1, total_steps // CHECKS_PER_RUN)
    return FitConfig(
        steps=steps,
        epochs=None if steps is not None else epochs,
        val_every=every,
        checkpoint_every=every,
        resume=True,
        **options,
    )
