"""What every recipe shares: option handling, the run-folder and slide checks, the schedule, the
`FitConfig` of a stage, the teacher-response cache and the provenance a checkpoint records."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from napari_rckd.devices import launch
from napari_rckd.errors import RckdError
from napari_rckd.training.config import FitConfig

log = logging.getLogger(__name__)

# Validation and checkpoints this many times per run unless the caller says otherwise.
CHECKS_PER_RUN = 4


class RecipeOptions:
    """Mixin of the recipe dataclasses: build one from flat options (argparse's, a job's)."""

    @classmethod
    def split(cls, options: dict) -> tuple:
        """Flat keyword options -> the recipe (its fields) and the rest (the run's inputs)."""
        names = {f.name for f in dataclasses.fields(cls)}
        recipe = cls(**{k: v for k, v in options.items() if k in names})
        return recipe, {k: v for k, v in options.items() if k not in names}


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


def stage_fit_config(recipe, total_steps: int, provenance: dict, **options) -> FitConfig:
    """The `FitConfig` of a stage run by ``recipe`` (its budget, batch, lr, device, workers,
    seed and compile): validate and checkpoint CHECKS_PER_RUN times a run. ``options`` are
    the other `FitConfig` fields a stage sets (patience, backbone_lr_scale).

    ``resume=True`` is safe here: `check_out_dir` already refused to reuse a run folder
    that the user did not ask to resume.
    """
    every = max(1, total_steps // CHECKS_PER_RUN)
    epochs = getattr(recipe, "epochs", None)
    return FitConfig(
        steps=recipe.steps,
        epochs=None if recipe.steps is not None else epochs,
        val_every=every,
        checkpoint_every=every,
        resume=True,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        device=recipe.device,
        num_workers=recipe.workers,
        seed=recipe.seed,
        compile=getattr(recipe, "compile", False),
        provenance=provenance,
        **options,
    )


def provenance(stage: str, recipe, **data) -> dict:
    """What a stage's checkpoints record: the stage, every option of ``recipe`` and what it
    read (``data``: names, counts and `data_sha256`), the later entries winning."""
    return {"stage": stage, **dataclasses.asdict(recipe), **data}


def data_sha256(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """File name -> sha256 prefix of each file a run read: which data, not just its names."""
    return {Path(p).name: _sha256(Path(p)) for p in paths}


def _sha256(path: Path) -> str:
    """A file's sha256 prefix; a folder's (a DICOM slide) over its files' names and hashes."""
    from napari_rckd.files import HASH_CHARS, sha256_prefix

    if not path.is_dir():
        return sha256_prefix(path)
    digest = hashlib.sha256()
    for file in sorted(f for f in path.rglob("*") if f.is_file()):
        digest.update(f"{file.relative_to(path)}:{sha256_prefix(file, 64)}\n".encode())
    return digest.hexdigest()[:HASH_CHARS]
