"""Where to correct next: tiles of a slide ranked by how unsure the nuclei model is.

Two signals, measured by ``napari-rckd bench suggest`` on the labelled nuclei sources (see
docs/correct.md): the model's *unsure share*, the share of a tile's pixels whose nuclear
probability lies between 0.2 and 0.8, where it hesitates between nucleus and not; and, with a
second model (``other``), their *disagreement*, 1 − F1 of the two models' nuclei matched at
IoU > 0.5. With both, a tile's score is the mean of its two percentile ranks among the tiles
scored so far (the combination that did best over both definitions of "a tile has an error");
alone, the unsure share. Qt-free: the Analyze widget draws the top tiles as a Shapes layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from napari_rckd.errors import RckdError

UNSURE = (0.2, 0.8)
SUGGEST_TILE_PX = 256  # a suggested region, in the model's pixels (128 µm at 0.5 µm/px)
MAX_TILES = 300  # tiles scored per request; a larger area is sampled on a regular sub-grid
GLASS = 215  # a tile whose mean RGB is brighter than this (and flat) is background


def unsure_share(prob: np.ndarray) -> float:
    """Share of pixels with a nuclear probability between 0.2 and 0.8."""
    prob = np.asarray(prob)
    return float(np.mean((prob > UNSURE[0]) & (prob < UNSURE[1]))) if prob.size else 0.0


def disagreement(labels: np.ndarray, other: np.ndarray) -> float:
    """1 − F1 of two instance maps' nuclei matched one to one at IoU > 0.5 (0: same nuclei)."""
    from napari_rckd.metrics.nuclei import overlaps

    table = overlaps(labels, other)
    n_a, n_b = table.intersection.shape
    if n_a + n_b == 0:
        return 0.0
    matched = int((table.iou > 0.5).sum())
    return 1.0 - 2 * matched / (n_a + n_b)


def unmatched(truth: np.ndarray, labels: np.ndarray) -> int:
    """Missed plus false nuclei of ``labels`` against ``truth`` (IoU > 0.5 matching)."""
    from napari_rckd.metrics.nuclei import overlaps

    table = overlaps(truth, labels)
    n_t, n_p = table.intersection.shape
    matched = int((table.iou > 0.5).sum())
    return (n_t - matched) + (n_p - matched)


@dataclass(frozen=True)
class Suggestion:
    """A tile to correct: level-0 bounds, its score and what it is made of."""

    y: int
    x: int
    height: int
    width: int
    score: float
    unsure: float
    disagree: float | None = None

    @property
    def centre(self) -> tuple[float, float]:
        return self.y + self.height / 2, self.x + self.width / 2

    def bounds(self) -> dict:
        return dict(y=self.y, x=self.x, height=self.height, width=self.width)


def tile_boxes(box, slide_shape, size_l0: float, limit: int = MAX_TILES) -> list[tuple[int, int]]:
    """Top-left corners (level 0) of ``size_l0`` tiles covering ``box`` (y0, x0, y1, x1), at
    most ``limit`` of them (a regular sub-grid when there are more)."""
    y0, x0, y1, x1 = (float(v) for v in box)
    y0, x0 = max(0.0, y0), max(0.0, x0)
    y1, x1 = min(float(slide_shape[0]), y1), min(float(slide_shape[1]), x1)
    if y1 - y0 < size_l0 / 2 or x1 - x0 < size_l0 / 2:
        raise RckdError("the area is smaller than half a suggested region; zoom out first")
    ys = np.arange(y0, max(y0 + 1, y1 - size_l0 / 2), size_l0)
    xs = np.arange(x0, max(x0 + 1, x1 - size_l0 / 2), size_l0)
    corners = [(int(y), int(x)) for y in ys for x in xs]
    if len(corners) > limit:
        step = len(corners) / limit
        corners = [corners[int(i * step)] for i in range(limit)]
    return corners


def suggest(
    slide,
    teacher,
    box,
    top: int = 10,
    other=None,
    tile_px: int = SUGGEST_TILE_PX,
    limit: int = MAX_TILES,
    stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, int, list[Suggestion]]]:
    """Score the tissue tiles of the level-0 ``box`` with ``teacher``; yields (done, total,
    best ``top`` so far) after each tile, so a GUI shows progress and can stop early."""
    if slide.mpp is None:
        raise RckdError(f"{slide.path.name} does not record its pixel size; set its µm / pixel")
    size_l0 = tile_px * teacher.mpp / slide.mpp
    corners = tile_boxes(box, slide.shape, size_l0, limit)
    scored: list[Suggestion] = []
    side = int(round(size_l0))
    for done, (y, x) in enumerate(corners, 1):
        if stop is not None and stop():
            break
        tile = slide.read_at_mpp(y, x, tile_px, teacher.mpp)
        if not (tile.mean() > GLASS and tile.std() < 20):
            output = teacher.predict(tile, teacher.mpp)
            unsure = unsure_share(output.prob)
            disagree = None
            if other is not None:
                disagree = disagreement(output.labels, other.predict(tile, teacher.mpp).labels)
            scored.append(Suggestion(y, x, side, side, unsure, unsure, disagree))
        yield done, len(corners), ranked(scored)[:top]


def ranked(scored: list[Suggestion]) -> list[Suggestion]:
    """``scored`` best first: by the mean percentile rank of unsure share and disagreement
    when there is a second model, else by unsure share."""
    from dataclasses import replace

    if not scored or scored[0].disagree is None:
        return sorted(scored, key=lambda s: -s.unsure)
    from scipy.stats import rankdata

    count = len(scored)
    unsure = rankdata([s.unsure for s in scored]) / count
    disagree = rankdata([s.disagree for s in scored]) / count
    scores = (unsure + disagree) / 2
    order = np.argsort(-scores, kind="stable")
    return [replace(scored[i], score=float(scores[i])) for i in order]
