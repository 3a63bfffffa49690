"""Nuclei segmentation metrics: pixel Dice, AJI (Kumar et al. 2017) and PQ (Kirillov et al. 2019).

All three work on instance label maps (0 = background, any positive ids, not necessarily
consecutive). The instance metrics share one contingency table of pixel overlaps, built with a
single ``bincount``, so an image with hundreds of nuclei costs one pass over its pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Overlaps(NamedTuple):
    """Pixel overlaps between every true and predicted instance (background excluded)."""

    intersection: np.ndarray  # (n_true, n_pred) pixel counts
    true_area: np.ndarray  # (n_true,)
    pred_area: np.ndarray  # (n_pred,)

    @property
    def union(self) -> np.ndarray:
        return self.true_area[:, None] + self.pred_area[None, :] - self.intersection

    @property
    def iou(self) -> np.ndarray:
        union = self.union
        return np.divide(
            self.intersection, union, out=np.zeros(union.shape, float), where=union > 0
        )


def _check_pair(truth: np.ndarray, pred: np.ndarray) -> None:
    if truth.shape != pred.shape:
        raise ValueError(
            f"label maps differ in shape: truth {truth.shape}, prediction {pred.shape}"
        )


def _consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel to 0..n keeping 0 as background; returns the flat map and n."""
    ids, inverse = np.unique(labels.ravel(), return_inverse=True)
    if ids[0] != 0:  # no background pixel: shift so that id 0 stays unused
        inverse = inverse + 1
        return inverse, len(ids)
    return inverse, len(ids) - 1


def overlaps(truth: np.ndarray, pred: np.ndarray) -> Overlaps:
    """The contingency table of two instance maps."""
    _check_pair(truth, pred)
    t, n_true = _consecutive(truth)
    p, n_pred = _consecutive(pred)
    table = np.bincount(t * (n_pred + 1) + p, minlength=(n_true + 1) * (n_pred + 1))
    table = table.reshape(n_true + 1, n_pred + 1)
    return Overlaps(
        intersection=table[1:, 1:],
        true_area=table[1:, :].sum(axis=1),
        pred_area=table[:, 1:].sum(axis=0),
    )


def pixel_dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dice of the foregrounds (any nucleus vs background); 1.0 when both are empty."""
    _check_pair(truth, pred)
    a, b = truth > 0, pred > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def aggregated_jaccard_index(truth: np.ndarray, pred: np.ndarray) -> float:
    """AJI: each true nucleus is paired with the prediction of highest IoU; the paired
    intersections over the paired unions plus every unpaired true and predicted area.

    A prediction may pair with several true nuclei (as in Kumar et al.), which is what
    penalises under-segmentation; 1.0 when both maps are empty.
    """
    table = overlaps(truth, pred)
    n_true, n_pred = table.intersection.shape
    if n_true == 0 and n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    iou = table.iou
    best = iou.argmax(axis=1)
    rows = np.flatnonzero(iou[np.arange(n_true), best] > 0)
    cols = best[rows]
    inter = table.intersection[rows, cols].sum()
    union = table.union[rows, cols].sum()
    unpaired_true = np.ones(n_true, bool)
    unpaired_true[rows] = False
    unpaired_pred = np.ones(n_pred, bool)
    unpaired_pred[cols] = False
    union += table.true_area[unpaired_true].sum() + table.pred_area[unpaired_pred].sum()
    return float(inter / union)


class PanopticQuality(NamedTuple):
    pq: float  # sq * dq
    sq: float  # mean IoU of the matched pairs
    dq: float  # F1 of the detection at IoU > 0.5
    tp: int
    fp: int
    fn: int


def panoptic_quality(truth: np.ndarray, pred: np.ndarray) -> PanopticQuality:
    """PQ with matches at IoU > 0.5, which makes every match unique (Kirillov et al.).

    Both maps empty counts as perfect (1.0).
    """
    table = overlaps(truth, pred)
    n_true, n_pred = table.intersection.shape
    if n_true == 0 and n_pred == 0:
        return PanopticQuality(1.0, 1.0, 1.0, 0, 0, 0)
    iou = table.iou
    matched = iou > 0.5
    tp = int(matched.sum())
    fp, fn = n_pred - tp, n_true - tp
    sq = float(iou[matched].sum() / tp) if tp else 0.0
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return PanopticQuality(sq * dq, sq, dq, tp, fp, fn)
