"""Group splits: deterministic, stratified, and never leaking a source across sides."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.training.data.labelled import scan_tile_folders
from napari_rckd.training.data.splits import split_by_group


def test_no_group_on_both_sides_and_every_class_validated():
    rng = np.random.default_rng(0)
    groups = [f"slide{g}" for g in rng.integers(0, 30, 600)]
    labels = [int(g[5:]) % 3 for g in groups]  # a class per slide
    train, val = split_by_group(groups, labels, val_fraction=0.25, seed=1)
    assert len(train) + len(val) == 600 and not set(train) & set(val)
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert {labels[i] for i in val} == {0, 1, 2} == {labels[i] for i in train}
    assert 0.1 < len(val) / 600 < 0.4
    again = split_by_group(groups, labels, val_fraction=0.25, seed=1)
    np.testing.assert_array_equal(again[1], val)
    other = split_by_group(groups, labels, val_fraction=0.25, seed=2)
    assert not np.array_equal(other[1], val)


def test_real_tcga_tiles_of_one_case_stay_together():
    tiles = scan_tile_folders(
        [shared_path("tiles/tcga-chol"), shared_path("tiles/tcga-coad")], label_from="folder"
    )
    groups = [t.group for t in tiles]
    labels = [t.label == "tcga-coad" for t in tiles]
    for seed in range(5):
        train, val = split_by_group(groups, labels, seed=seed)
        coad = {i for i, t in enumerate(tiles) if t.label == "tcga-coad"}
        assert coad <= set(train) or coad <= set(val)  # the patient's 3 tiles never split


def test_one_source_is_a_clear_error():
    with pytest.raises(RckdError, match="one source \\(case-1\\)"):
        split_by_group(["case-1"] * 5)
    with pytest.raises(RckdError, match="val_fraction"):
        split_by_group(["a", "b"], val_fraction=1.5)
