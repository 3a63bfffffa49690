"""Nuclei metrics against cases computed by hand and a plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest

from napari_rckd.metrics.nuclei import aggregated_jaccard_index, panoptic_quality, pixel_dice

TRUTH = np.array([[1, 1, 0, 2, 2, 0], [1, 1, 0, 2, 2, 0]])
PRED = np.array([[1, 1, 1, 0, 3, 3], [1, 1, 1, 0, 0, 0]])


def test_hand_computed_case():
    # t1∩p1 = 4 px (IoU 4/6), t2∩p3 = 1 px (IoU 1/5); foregrounds 8 and 8 overlap in 5 px.
    assert pixel_dice(TRUTH, PRED) == pytest.approx(10 / 16)
    assert aggregated_jaccard_index(TRUTH, PRED) == pytest.approx((4 + 1) / (6 + 5))
    pq = panoptic_quality(TRUTH, PRED)
    assert (pq.tp, pq.fp, pq.fn) == (1, 1, 1)
    assert pq.sq == pytest.approx(4 / 6)
    assert pq.dq == pytest.approx(0.5)
    assert pq.pq == pytest.approx(1 / 3)


def test_unpaired_prediction_adds_to_the_aji_union():
    pred = PRED.copy()
    pred[1, 5] = 9  # a one-pixel false positive, no overlap with any true nucleus
    assert aggregated_jaccard_index(TRUTH, pred) == pytest.approx(5 / 12)


def test_under_segmentation_is_penalised():
    truth = np.array([[1, 1, 2, 2]])
    pred = np.array([[5, 5, 5, 5]])
    assert aggregated_jaccard_index(truth, pred) == pytest.approx(4 / 8)
    assert panoptic_quality(truth, pred).pq == 0.0  # IoU 0.5 is not a match (> 0.5 needed)
    assert pixel_dice(truth, pred) == 1.0


def test_ids_do_not_matter_and_identity_is_perfect():
    relabelled = np.where(PRED > 0, PRED * 1000 + 7, 0)
    assert aggregated_jaccard_index(TRUTH, relabelled) == aggregated_jaccard_index(TRUTH, PRED)
    assert panoptic_quality(TRUTH, relabelled) == panoptic_quality(TRUTH, PRED)
    for metric in (pixel_dice, aggregated_jaccard_index):
        assert metric(TRUTH, TRUTH) == 1.0
    assert panoptic_quality(TRUTH, TRUTH).pq == 1.0


def test_empty_maps():
    empty = np.zeros((4, 4), int)
    assert pixel_dice(empty, empty) == 1.0
    assert aggregated_jaccard_index(empty, empty) == 1.0
    assert panoptic_quality(empty, empty).pq == 1.0
    full = np.ones((4, 4), int)
    assert pixel_dice(empty, full) == 0.0
    assert aggregated_jaccard_index(full, empty) == 0.0
    assert panoptic_quality(full, empty).pq == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        aggregated_jaccard_index(TRUTH, PRED[:, :4])


def reference_aji(truth, pred):
    """Kumar et al.'s algorithm written as loops over instances."""
    pred_ids = [p for p in np.unique(pred) if p]
    used, inter, union = set(), 0, 0
    for t in (t for t in np.unique(truth) if t):
        tmask = truth == t
        best, best_iou = None, 0.0
        for p in pred_ids:
            pmask = pred == p
            iou = (tmask & pmask).sum() / (tmask | pmask).sum()
            if iou > best_iou:
                best, best_iou = p, iou
        if best is None:
            union += tmask.sum()
        else:
            inter += (tmask & (pred == best)).sum()
            union += (tmask | (pred == best)).sum()
            used.add(best)
    union += sum((pred == p).sum() for p in pred_ids if p not in used)
    return inter / union


def reference_pq(truth, pred):
    matches, iou_sum = 0, 0.0
    t_ids = [t for t in np.unique(truth) if t]
    p_ids = [p for p in np.unique(pred) if p]
    for t in t_ids:
        for p in p_ids:
            iou = ((truth == t) & (pred == p)).sum() / ((truth == t) | (pred == p)).sum()
            if iou > 0.5:
                matches, iou_sum = matches + 1, iou_sum + iou
    return iou_sum / (matches + 0.5 * (len(p_ids) - matches) + 0.5 * (len(t_ids) - matches))


@pytest.mark.parametrize("seed", range(5))
def test_matches_loop_reference_on_random_blobs(seed):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)

    def blobs():
        noise = ndi.gaussian_filter(rng.random((48, 48)), 2)
        return ndi.label(noise > np.quantile(noise, 0.6))[0]

    truth, pred = blobs(), blobs()
    assert aggregated_jaccard_index(truth, pred) == pytest.approx(reference_aji(truth, pred))
    assert panoptic_quality(truth, pred).pq == pytest.approx(reference_pq(truth, pred))
