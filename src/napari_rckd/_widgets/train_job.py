"""What the "Train student" widget hands to the child process, and who hears when it ends.

`prepare_job` turns the form's settings and the annotation layers into a `TrainingJob`
(annotations handed over as files, never as pickled layers). When a run ends with weights,
`TRAINED.model_ready` emits ``(checkpoint_path, kind)`` with kind "nuclei" (stage 1 only),
"subtype" (classify) or "region" (segment), for the Analyze widget to put the model to work.
No Qt here: the job is tested without a display.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from psygnal import Signal

from napari_rckd._widgets.annotation_session import (
    DEFAULT_CLASSES,
    save_annotations,
    shapes_to_regions,
)
from napari_rckd.errors import RckdError
from napari_rckd.io.slide_annotations import write_region_mask
from napari_rckd.training.nuclei_finetune import (
    DEFAULT_START,
    NUCLEI_FINETUNE_BATCH,
    NUCLEI_FINETUNE_STEPS,
    NUCLEI_FINETUNE_TILE,
    REPLAY_SHARE,
    verdict,
)
from napari_rckd.training.recipes.stage1 import Stage1Recipe
from napari_rckd.training.recipes.stage2 import Stage2Recipe
from napari_rckd.training.subprocess_runner import TrainingJob


class TrainingEvents:
    """Signals other widgets listen to."""

    model_ready = Signal(str, str)  # checkpoint path, kind ("nuclei", "subtype", "region")


TRAINED = TrainingEvents()


@dataclass
class TrainSettings:
    """Everything the form says, as plain values."""

    out_dir: str
    slides: list[str] = field(default_factory=list)
    stage1: bool = True
    stage2: bool = False
    # The form's defaults are stage 1's recipe's (stage 2 shares its scale, batch and device).
    teacher: str = Stage1Recipe.teacher
    backbone: str = Stage1Recipe.backbone
    tile_size: int = Stage1Recipe.tile_size
    mpp: float = Stage1Recipe.mpp
    budget: int = 1000
    unit: str = "steps"  # or "epochs"
    tiles: int = Stage1Recipe.tiles
    batch_size: int = Stage1Recipe.batch_size
    device: str = Stage1Recipe.device
    task: str = "classify"  # stage 2: classify (regions) or segment (cancer-region mask)
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    stage2_budget: int = 500
    compare_random: bool = False  # stage 2 also from random weights, scores side by side
    threads: int | None = None
    nuclei: bool = False  # nuclei from my corrections (instead of stages 1 and 2)
    corrections: list[str] = field(default_factory=list)  # nuclei folders (.corrections)
    nuclei_init: str = DEFAULT_START
    replay: float = REPLAY_SHARE
    nuclei_steps: int = NUCLEI_FINETUNE_STEPS
    nuclei_tile: int = NUCLEI_FINETUNE_TILE
    nuclei_batch: int = NUCLEI_FINETUNE_BATCH
    # µm/px of the open slides (path -> mpp), as set in Analyze slide: stage 2 reads a slide
    # whose file records none at it instead of estimating one again.
    slide_mpps: dict[str, float] = field(default_factory=dict)


def _budget(amount: int, unit: str) -> dict:
    return {"steps": amount, "epochs": None} if unit == "steps" else {"epochs": amount}


def prepare_job(settings: TrainSettings, shapes=None, labels=None) -> TrainingJob:
    """Check the settings, write the annotation layers into the run folder, build the job."""
    if settings.nuclei:
        return nuclei_job(settings)
    if not (settings.stage1 or settings.stage2):
        raise RckdError("tick stage 1, stage 2 or both before pressing Start")
    out = Path(settings.out_dir)
    common = dict(tile_size=settings.tile_size, mpp=settings.mpp, batch_size=settings.batch_size,
                  device=settings.device)  # fmt: skip
    stage1 = stage2 = None
    if settings.stage1:
        if not settings.slides:
            raise RckdError("stage 1 needs unlabeled slides: tick open slides or add files")
        # workers=0: the child loads its tiles itself, beside napari, as it always has
        recipe = Stage1Recipe(teacher=settings.teacher, backbone=settings.backbone,
                              tiles=settings.tiles, workers=0, **common,
                              **_budget(settings.budget, settings.unit))  # fmt: skip
        stage1 = dict(slides=list(settings.slides), **asdict(recipe))
    if settings.stage2:
        # Stage 2 starts from stage 1's backbone when there is one (None: the init's).
        backbone = settings.backbone if stage1 is None else None
        recipe = Stage2Recipe(task=settings.task, backbone=backbone, **common,
                              **_budget(settings.stage2_budget, settings.unit))  # fmt: skip
        stage2 = dict(asdict(recipe), **_stage2_inputs(settings, shapes, labels, out / "inputs"))
    compare = settings.compare_random and stage2 is not None
    return TrainingJob(
        str(out), stage1=stage1, stage2=stage2, threads=settings.threads, compare_random=compare
    )


def nuclei_job(settings: TrainSettings) -> TrainingJob:
    """Nuclei from my corrections: fine-tune the chosen nuclei model on the saved regions."""
    if not settings.corrections:
        raise RckdError(
            "no corrections to learn from: correct nuclei in Analyze slide (Correct nuclei "
            "here, then Save corrections) or add a nuclei folder"
        )
    nuclei = dict(
        corrections=list(settings.corrections),
        init=settings.nuclei_init or DEFAULT_START,
        replay_share=settings.replay,
        steps=settings.nuclei_steps,
        tile_size=settings.nuclei_tile,
        batch_size=settings.nuclei_batch,
        device=settings.device,
    )
    return TrainingJob(settings.out_dir, nuclei=nuclei, threads=settings.threads)


def scores_text(event: dict) -> str:
    """The ``scores`` event in one line: before → after on the held-out corrected regions."""
    before, after = event["before"], event["after"]
    parts = [f"{k.upper() if k != 'dice' else 'Dice'} {before[k]:.3f} → {after[k]:.3f}"
             for k in ("dice", "aji", "pq")]  # fmt: skip
    return (
        f"On {len(event['regions'])} corrected region(s) held out from training: "
        + ", ".join(parts)
        + f" (before → after): {verdict(event)}."
    )


def _stage2_inputs(settings: TrainSettings, shapes, labels, folder: Path) -> dict:
    """Annotation layers -> files in the run folder (atomically), and the finetune arguments."""
    if settings.task == "classify":
        if shapes is None or len(shapes.data) == 0:
            raise RckdError(
                "stage 2 has no annotations: draw class-labelled regions (Annotate slide) and "
                "pick that layer under 'Regions'"
            )
        names = {str(n) for n in shapes.features.get("class", []) if n == n and n is not None}
        if len(names) < 2:
            raise RckdError(
                f"the regions all have one class ({', '.join(names) or 'none'}); draw regions "
                "of at least two classes"
            )
        save_annotations(shapes)  # keep the user's work next to the slide too
        from napari_rckd.io.annotations import write_annotations

        path = folder / "annotations.geojson"
        write_annotations(path, shapes_to_regions(shapes))
        classes = [c for c in settings.classes if c in names] + sorted(
            names - set(settings.classes)
        )
        slide = shapes.metadata["slide_path"]
        return dict(annotations=str(path), slide=slide, classes=classes,
                    slide_mpp=settings.slide_mpps.get(str(slide)))  # fmt: skip
    if labels is None or int(np.count_nonzero(np.unique(np.asarray(labels.data)))) < 2:
        raise RckdError(
            "stage 2 (segment) needs a cancer-region mask painted with at least two classes "
            "(1 = normal, 2 = tumour)"
        )
    path = folder / "cancer-region.tif"
    meta = labels.metadata
    write_region_mask(path, np.asarray(labels.data), meta["mask_downsample"], meta["classes"])
    slide = meta["slide_path"]
    return dict(slide=slide, masks=str(path), classes=list(meta["classes"]),
                slide_mpp=settings.slide_mpps.get(str(slide)))  # fmt: skip


def comparison_text(event: dict) -> str:
    """One line for the ``comparison`` event: the run's best validation score beside the
    same training from random weights."""
    metric = event["metric"].replace("_", " ")
    trained, random = event["trained"], event["random"]
    if trained is None or random is None:
        return f"No {metric} to compare: a run kept no validation score."
    gain = 100 * (trained - random)
    return (
        f"Best validation {metric}: {trained:.3f} from this start vs {random:.3f} from random "
        f"weights ({gain:+.1f} points; one run each on your annotations, so small gaps are noise)."
    )


def format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
