"""The Qt-free correction session: region from a view, the model's answer, save, reopen, and the
label edits (new id, merge, split); on the real CMU-1 slide."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.inference.corrections import (
    CorrectionSession,
    merge_labels,
    next_label,
    split_label,
)


@pytest.fixture
def slide(tmp_path):
    import shutil

    from napari_rckd.io import open_slide

    # a copy of the real slide: the sidecar goes beside it, never into the shared data
    path = tmp_path / "cmu-1-small-region.svs"
    shutil.copy(shared_path("slides/cmu-1-small-region.svs"), path)
    with open_slide(path) as opened:
        yield opened


def test_correct_a_region_of_a_real_slide(slide):
    from napari_rckd.teachers import get_teacher

    session = CorrectionSession(slide, get_teacher("classical"), region_px=128)
    bounds = session.bounds_from_box(1000, 800, 2000, 1800)  # larger than 128 model px
    factor = session.mpp / slide.mpp
    assert bounds["height"] == bounds["width"] == round(128 * factor)
    assert abs(bounds["y"] + bounds["height"] / 2 - 1500) <= 1
    draft = session.open(bounds)
    assert draft.image.shape == (128, 128, 3) and draft.labels.shape == (128, 128)
    assert draft.answer.max() > 0, "the classical detector finds nuclei in CMU-1 tissue"
    assert draft.context.shape[0] > 128
    place = draft.placement(slide.mpp)
    assert place["scale"] == (session.mpp, session.mpp)
    assert place["translate"][0] == pytest.approx(slide.mpp * (bounds["y"] - 0.5) + session.mpp / 2)

    fresh = next_label(draft.labels)
    draft.labels[5:15, 5:15] = fresh  # a painted nucleus
    largest = np.bincount(draft.labels.ravel())[1:].argmax() + 1
    draft.labels[draft.labels == largest] = 0  # an erased one
    region = session.save(draft)
    assert region.id == 1 and region.changes.removed >= 1 and region.changes.added >= 1
    assert draft.region == 1
    again = session.reopen(1)
    np.testing.assert_array_equal(again.labels, draft.labels)
    np.testing.assert_array_equal(again.answer, draft.answer)
    again.labels[again.labels == fresh] = 0
    assert session.save(again).id == 1  # reopened: updated, not duplicated
    assert [r.id for r in session.regions()] == [1]
    assert session.open(bounds).region is None
    with pytest.raises(RckdError, match="too small"):
        session.bounds_from_box(0, 0, 10, 10)


def test_merge_and_split():
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 5:25] = 3
    labels[10:30, 35:55] = 3  # two blobs drawn with one id
    labels[0:5, 0:5] = 9
    split = split_label(labels, 3)
    ids = set(np.unique(split[10:30, 5:55])) - {0}
    assert len(ids) == 2 and 3 in ids and 10 in ids  # the new piece gets the next free id
    assert set(np.unique(split[10:30, 5:25])) == {3} or set(np.unique(split[10:30, 35:55])) == {3}
    merged = merge_labels(split, [10, 3])
    np.testing.assert_array_equal(merged, labels)
    with pytest.raises(RckdError, match="at least two"):
        merge_labels(labels, [3])
    with pytest.raises(RckdError, match="no nucleus 4"):
        split_label(labels, 4)
    assert next_label(labels) == 10
