"""Fine-tuning a nuclei model on a user's corrections: "teach the nuclei model your tissue".

``finetune_nuclei(CORRECTIONS, OUT, NucleiRecipe(init="builtin"))`` continues training the
starting model (``builtin``, the default: ``learned`` with the classical prior kept; ``csat``,
``learned`` or a nuclei checkpoint file) on nuclei folders: the corrections sidecars that
Analyze slide writes, or any labelled nuclei set. So that the model does not forget what it
knew, a share of the crops (``replay_share``) is *replay*:

* the starting model's own answers on unlabelled tissue: the context crops saved around each
  corrected region, the slides the corrections came from (when they are beside their
  sidecars), and any slide or image folder given in ``replay``;
* ground truth of any labelled nuclei folder given in ``replay`` (e.g. the original sources).

The encoder stays frozen unless ``train_encoder``: a few regions retune the decoder, which
on a 2-core CPU trains 4-5× faster than the whole network and keeps the features the model
learned elsewhere. With no replay at all (a nuclei folder alone) it trains on the corrections alone, and says so.
A share of the corrected regions (``holdout_share``, whole regions) is held out: the model is
scored on them before and after (Dice, AJI, PQ, `napari_rckd.teachers.evaluation`), written to
``OUT/scores.json`` and into the new checkpoint's provenance. The model is
``OUT/last.safetensors``, usable wherever a nuclei model is named (``spec`` adds
``+classical`` when the start had the prior).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_rckd.defaults import PRIOR_SUFFIX
from napari_rckd.errors import RckdError
from napari_rckd.training.callbacks import Callback
from napari_rckd.training.config import FitResult
from napari_rckd.training.recipes.common import RecipeOptions
from napari_rckd.training.run_notes import run_log, tell

log = logging.getLogger(__name__)

# Defaults sized for "3 corrected 512² regions, Train to a new layer in ≤ 5 minutes on a
# 2-core CPU" (docs/correct.md measures it). The lr and the replay share were chosen on a source
# the start never saw and on CMU-1 corrected by hand (docs/correct.md): at 5e-4 and 0.3 the
# model forgot more elsewhere and, taught mostly erasures, dropped more real nuclei.
NUCLEI_FINETUNE_STEPS = 100
NUCLEI_FINETUNE_BATCH = 8
NUCLEI_FINETUNE_TILE = 192
NUCLEI_FINETUNE_LR = 2e-4
REPLAY_SHARE = 0.5
HOLDOUT_SHARE = 0.25
REPLAY_TILES = 48  # tissue tiles of the corrections' slides answered by the starting model
SCORES_FILE = "scores.json"
# Where a fine-tune starts unless told. Held out on CPM-15, three corrected images took
# `builtin` from 0.605 to 0.626 AJI on the other images, every seed up, and the shipped `csat`
# (which copies decisions) from 0.536 to 0.529: the corrected model is best when it starts from
# the most exact one, and its 100 steps take as long. Its classical half does not train, so
# erasures of dark non-nuclei (ink, fibres) barely change it: for those, learned or csat.
DEFAULT_START = "builtin"


@dataclass
class NucleiRecipe(RecipeOptions):
    """The choices of a nuclei fine-tune, as `recipes` records them: a checkpoint's provenance
    is this recipe (`dataclasses.asdict`) plus what the run read."""

    init: str = DEFAULT_START
    replay_share: float = REPLAY_SHARE
    replay_tiles: int = REPLAY_TILES
    slide_replay: bool = True
    holdout_share: float = HOLDOUT_SHARE
    steps: int = NUCLEI_FINETUNE_STEPS
    batch_size: int = NUCLEI_FINETUNE_BATCH
    tile_size: int = NUCLEI_FINETUNE_TILE
    lr: float = NUCLEI_FINETUNE_LR
    train_encoder: bool = False
    device: str = "auto"
    workers: int = 0
    seed: int = 0


@dataclass
class Start:
    """The model a fine-tune starts from."""

    given: str  # what the user typed
    path: Path  # its weights
    prior: bool  # the classical detector's probability is averaged in (builtin)

    def spec(self, path: Path | None = None) -> str:
        """The nuclei-model spec of these weights (or of ``path``, the fine-tuned ones)."""
        return f"{path or self.path}{PRIOR_SUFFIX if self.prior else ''}"


@dataclass
class NucleiFinetuneResult:
    fit: FitResult
    model: Path | None  # the new weights
    spec: str | None  # what to give --nuclei / --teacher / Analyze slide
    scores: dict | None  # before -> after on the held-out corrected regions


def resolve_start(init: str) -> Start:
    """``csat``, ``learned``, ``builtin`` or a nuclei ``.safetensors`` (optionally
    ``+classical``) -> its weights file; anything else is refused in one sentence."""
    from napari_rckd import zoo
    from napari_rckd.files import check_readable
    from napari_rckd.models.shipped import shipped_weights

    given = str(init).strip()
    prior = given.lower().endswith(PRIOR_SUFFIX)
    name = given[: -len(PRIOR_SUFFIX)] if prior else given
    model = zoo.find(name)
    if model is not None:
        if model.kind != zoo.NETWORK:
            raise RckdError(
                f"--init {given}: {model.name} has no weights to fine-tune; start from csat, "
                "learned, builtin or a nuclei checkpoint (.safetensors)"
            )
        weights = "learned" if model.classical_prior else model.name
        return Start(given, shipped_weights(weights), prior or model.classical_prior)
    path = Path(name).expanduser()
    if path.suffix != ".safetensors":
        raise RckdError(
            f"--init {given} is neither csat, learned, builtin nor a nuclei checkpoint "
            "(.safetensors) made by pretrain, train-teacher or finetune --task nuclei"
        )
    check_readable(path, "--init checkpoint")
    return Start(given, path, prior)


def finetune_nuclei(
    corrections: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    recipe: NucleiRecipe | None = None,
    *,
    replay: Sequence[str | os.PathLike] = (),
    resume: bool = False,
    slide_mpp: float | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
) -> NucleiFinetuneResult:
    """Fine-tune the recipe's ``init`` nuclei model on ``corrections`` (nuclei folders) into
    ``out_dir``, mixed with ``replay`` (labelled or unlabelled folders)."""
    from napari_rckd.models import load_checkpoint
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.network import has_contour_channel
    from napari_rckd.training.data.corrections import (
        find_corrections,
        sidecar_slides,
        split_regions,
        training_data,
    )
    from napari_rckd.training.loop import fit
    from napari_rckd.training.recipes.common import check_out_dir, stage_fit_config
    from napari_rckd.training.recipes.common import provenance as recipe_provenance
    from napari_rckd.training.tasks import DistillationTask

    r = recipe or NucleiRecipe()
    out_dir = Path(out_dir)
    if not 0 <= r.replay_share < 1:
        raise RckdError(f"--replay must be a share from 0 to below 1, got {r.replay_share}")
    if r.tile_size < 64 or r.tile_size % 32:
        raise RckdError(f"--tile-size ({r.tile_size}) must be a multiple of 32 from 64")
    start = resolve_start(r.init)
    images, context = find_corrections(corrections)
    check_out_dir(out_dir, resume)
    with run_log(out_dir):
        model, metadata = load_checkpoint(start.path)
        config = model.config
        if config.task != "dense" or not has_contour_channel(config):
            raise RckdError(
                f"--init {start.given} is not a nuclei model (a dense checkpoint with nuclei and "
                "boundary outputs, as csat, learned and train-teacher make)"
            )
        mpp = float(config.input_mpp)
        if not r.train_encoder:  # a few corrections retune the decoder; 4-5x faster on a CPU
            model.freeze_encoder()
        answer_on = None if r.device == "auto" else r.device
        starting = get_teacher(start.spec(), device=answer_on)
        tell(f"start weights: {start.given} ({starting.identity}), at {mpp:g} µm/px")
        train_idx, held_idx = split_regions(len(images), r.holdout_share, r.seed)
        train_images = [images[i] for i in train_idx]
        held = [images[i] for i in held_idx]
        tell(
            f"corrections: {len(images)} regions from {len(corrections)} folder(s); "
            f"{len(train_images)} train, {len(held)} held out by region for before → after"
            + ("" if held else " (none: fewer than two regions or --holdout 0)")
        )
        slides = sidecar_slides(corrections, slide_mpp) if r.slide_replay else []
        crops = dict(size=r.tile_size, mpp=mpp, count=r.replay_tiles, seed=r.seed)
        train, share, replay_note = training_data(
            train_images, context, replay, slides, starting, r.replay_share, crops,
            r.steps * r.batch_size, out_dir / "replay-cache", slide_mpp,
        )  # fmt: skip
        tell(f"replay: {share:.0%} of the crops; {replay_note}")
        started = (metadata or {}).get("provenance", {}).get("recipe")
        provenance = recipe_provenance(
            "nuclei-finetune",
            r,
            start={"given": start.given, "identity": starting.identity, "recipe": started},
            regions=[_region_entry(i) for i in train_images],
            held_out=[_region_entry(i) for i in held],
            replay_share=share,  # the share used: 0 when there was nothing to replay
            replay=replay_note,
            mpp=mpp,
            classical_prior=start.prior,
            encoder="trained" if r.train_encoder else "frozen",
        )
        fit_config = stage_fit_config(r, r.steps, provenance, tensorboard=False)
        task = DistillationTask(model, channel_weights=(1.0, 1.0))
        result = fit(task, train, None, fit_config, out_dir, callbacks, stop_event)
        weights = result.last_checkpoint
        scores = None
        if result.status == "completed" and weights is not None and held:
            scores = before_after(start.spec(), start.spec(weights), held, answer_on)
            _record_scores(out_dir, weights, scores)
            tell(scores_line(scores))
        tell(f"model: {start.spec(weights)} (run {result.status} at step {result.step})")
    spec = start.spec(weights) if weights is not None else None
    return NucleiFinetuneResult(result, weights, spec, scores)


def _region_entry(item) -> dict:
    from napari_rckd.files import sha256_prefix

    return {
        "source": item.source,
        "image": item.image_path.name,
        "image_sha256_16": sha256_prefix(item.image_path),
        "labels_sha256_16": sha256_prefix(item.label_path),
        "mpp": item.mpp,
    }


def before_after(before: str, after: str, held, device: str | None = None) -> dict:
    """Dice, AJI and PQ of both models on the held-out regions: means over regions, paired."""
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.evaluation import evaluate_teacher

    scores = {"regions": [i.image_path.name for i in held]}
    for when, spec in (("before", before), ("after", after)):
        per_image: list[dict] = []
        evaluate_teacher(get_teacher(spec, device=device), held, per_image)
        scores[when] = {k: float(np.mean([p[k] for p in per_image])) for k in ("dice", "aji", "pq")}
        scores[f"{when}_per_region"] = per_image
    return scores


# AJI change on the held-out regions that a verdict calls better or worse; smaller is noise
# with a few regions (docs/correct.md: single regions moved by about this much between seeds).
VERDICT_AJI = 0.02


def verdict(scores: dict) -> str:
    """What the held-out regions say, in words a user acts on."""
    gain = scores["after"]["aji"] - scores["before"]["aji"]
    if gain <= -VERDICT_AJI:
        return (
            "worse on your held-out corrections: keep the previous nuclei model, or also correct "
            "regions where the model was right (confirm real nuclei) and train again"
        )
    if gain >= VERDICT_AJI:
        return "better on your held-out corrections"
    return "about the same on your held-out corrections"


def scores_line(scores: dict) -> str:
    b, a = scores["before"], scores["after"]
    parts = [f"{k} {b[k]:.3f} → {a[k]:.3f}" for k in ("dice", "aji", "pq")]
    return (
        f"held-out corrected regions ({len(scores['regions'])}): "
        + ", ".join(parts)
        + f"; {verdict(scores)}"
    )


def _record_scores(out_dir: Path, weights: Path, scores: dict) -> None:
    """scores.json beside the model, and the scores in its provenance."""
    from napari_rckd.atomic import write_json_atomic
    from napari_rckd.models.weights import read_weights, write_checkpoint_file

    write_json_atomic(out_dir / SCORES_FILE, scores)
    tensors, metadata = read_weights(weights)
    metadata["provenance"]["held_out_scores"] = {
        k: scores[k] for k in ("regions", "before", "after")
    }
    write_checkpoint_file(weights, tensors, metadata)
