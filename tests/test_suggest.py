"""Suggest regions: the signals, the ranking's precision against random tiles, and the tiles of a
real slide ranked by the model's unsure share."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.inference.suggest import disagreement, suggest, unmatched, unsure_share


def test_signals():
    prob = np.array([[0.0, 0.5], [0.7, 0.95]])
    assert unsure_share(prob) == 0.5
    a = np.zeros((20, 20), np.int32)
    a[2:8, 2:8], a[12:18, 12:18] = 1, 2
    b = a.copy()
    assert disagreement(a, b) == 0.0 and unmatched(a, b) == 0
    b[b == 2] = 0  # one nucleus missed
    b[12:18, 2:8] = 5  # one invented
    assert unmatched(a, b) == 2 and disagreement(a, b) == pytest.approx(0.5)
    assert disagreement(np.zeros((4, 4), int), np.zeros((4, 4), int)) == 0.0


def test_rank_scores_against_the_base_rate():
    from napari_rckd.bench.suggest import rank_scores

    rows = [{"unsure": u, "errors": e} for u, e in [(0.9, 5), (0.8, 4), (0.1, 0), (0.2, 3)] * 5]
    scores = rank_scores(rows, "unsure", threshold=3)
    assert scores["base_rate"] == 0.75 and scores["precision_top10"] == 1.0
    assert scores["lift_top10"] == pytest.approx(1 / 0.75) and scores["spearman"] > 0.5


def test_suggest_on_a_real_slide():
    from napari_rckd.io import open_slide
    from napari_rckd.teachers import get_teacher

    teacher = get_teacher("classical")
    with open_slide(shared_path("slides/cmu-1-small-region.svs")) as slide:
        steps = list(suggest(slide, teacher, (800, 600, 1300, 1100), top=3, tile_px=128))
        done, total, found = steps[-1]
        assert done == total == len(steps) == 16  # 500 px: 4 × 4 tiles of 128 px at 0.5 µm/px
        assert 1 <= len(found) <= 3 and found[0].score >= found[-1].score
        assert found[0].height == round(128 * 0.5 / slide.mpp)
        assert all(0 <= s.unsure <= 1 for s in found)
        # with a second opinion: ranked by the mean percentile rank of both signals
        steps = list(suggest(slide, teacher, (800, 600, 1300, 1100), top=16, tile_px=128,
                             other=get_teacher("otsu")))  # fmt: skip
        both = steps[-1][2]
        assert all(s.disagree is not None for s in both) and 2 <= len(both) <= 16
        assert [s.score for s in both] == sorted((s.score for s in both), reverse=True)
        from scipy.stats import rankdata

        n = len(both)  # glass tiles are not scored
        ranks = (rankdata([s.unsure for s in both]) + rankdata([s.disagree for s in both])) / (
            2 * n
        )
        assert [s.score for s in both] == pytest.approx(list(ranks))
        with pytest.raises(RckdError, match="smaller than half"):
            list(suggest(slide, teacher, (0, 0, 10, 10)))
