"""The one rule for the scale stage-2 data is read at (`finetune`, `bench transfer`, the Train
widget and `evaluate tiles` all call `read_scale`).

1. **Recorded**: the data's mpp is known (the slide's file, ``--slide-mpp``, ``--data-mpp``):
   it is resampled from there to the model's mpp.
2. **Estimated**: none is recorded, so it is estimated from the size of the nuclei in a few
   of its images (`napari_rckd.io.nuclei_scale`); when the estimate is sure, the data is
   read as if scanned at it, i.e. resampled to the model's mpp from there.
3. **Own pixels**: the estimate is unsure, so the pixels are taken as they are (one image
   pixel per model pixel), which is right for data scanned near the model's mpp and never
   squashes a tile into the model's tile size.

Each choice comes with one line for the run's output: what was read at which mpp, and why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ESTIMATE_IMAGES = 16  # images per data set the estimate looks at


@dataclass(frozen=True)
class ReadScale:
    """The µm/px a data set is read at, how it was chosen (recorded, estimated, own pixels)
    and the sentence that says so."""

    mpp: float
    how: str  # "recorded", "estimated" or "own pixels"
    line: str


def read_scale(
    name: str,
    recorded: float | None,
    images: Callable[[], Iterable[np.ndarray]],
    model_mpp: float,
    recorded_from: str = "--data-mpp",
    option: str = "--data-mpp",
) -> ReadScale:
    """The mpp to read data set ``name`` at: ``recorded`` when given (``recorded_from`` says
    where it came from), else the nuclei estimate on ``images()`` when sure, else the model's
    own mpp (its pixels as they are). ``option`` is what a user passes to set it."""
    from napari_rckd.io.nuclei_scale import estimate_mpp

    if recorded is not None:
        return ReadScale(
            recorded,
            "recorded",
            f"pixel size: {name} read at {recorded:.4g} µm/px ({recorded_from}), resampled to "
            f"the model's {model_mpp:g} µm/px",
        )
    estimate = estimate_mpp(images())
    if estimate.sure:
        return ReadScale(
            estimate.mpp,
            "estimated",
            f"pixel size: {name} records no µm/px; read at {estimate.mpp:.3g} µm/px, "
            f"estimated from the size of {estimate.evidence()}, resampled to the model's "
            f"{model_mpp:g} µm/px; {option} with the real value overrides it",
        )
    return ReadScale(
        model_mpp,
        "own pixels",
        f"pixel size: {name} records no µm/px and the nuclei estimate is unsure "
        f"({estimate.describe()}); read at its own pixels, as the model's {model_mpp:g} "
        f"µm/px, not resized; {option} with the real value resamples it",
    )


def spread_pick(items: Sequence, count: int = ESTIMATE_IMAGES) -> list:
    """Up to ``count`` items evenly spread over ``items`` (in their order), deterministic."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).astype(int)]


def tile_scales(
    tiles: Sequence,
    folders: Sequence[str | os.PathLike],
    data_mpp: float | None,
    model_mpp: float,
) -> tuple[list, list[str]]:
    """`read_scale` per tile folder: the tiles with their ``mpp`` set, and one line a folder.

    A tile keeps an mpp it already has; ``data_mpp`` (``--data-mpp``) is recorded for all."""
    from napari_rckd.training.data.labelled import read_rgb

    roots = [Path(f) for f in folders]
    by_root: dict[int, list[int]] = {}
    for index, tile in enumerate(tiles):
        root = next((i for i, r in enumerate(roots) if r in tile.path.parents), 0)
        by_root.setdefault(root, []).append(index)
    out, lines = list(tiles), []
    for root, indices in by_root.items():
        members = [tiles[i] for i in indices]
        known = {t.mpp for t in members if t.mpp is not None}
        recorded = data_mpp if data_mpp is not None else (known.pop() if len(known) == 1 else None)
        chosen = read_scale(
            roots[root].name if roots else "the tiles",
            recorded,
            lambda members=members: (read_rgb(t.path) for t in spread_pick(members)),
            model_mpp,
        )
        lines.append(chosen.line)
        for i in indices:
            if tiles[i].mpp is None:
                out[i] = replace(tiles[i], mpp=chosen.mpp)
    return out, lines
