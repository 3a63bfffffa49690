"""TileArray, the numpy mirror napari slices: every index napari or numpy users give it reads
exactly what a dense array written the same way holds."""

from __future__ import annotations

import numpy as np
import pytest

from napari_rckd.inference.tile_array import TileArray


@pytest.mark.parametrize("lead", [(), (2,)])
def test_reads_equal_a_dense_array_written_the_same_way(lead):
    rng = np.random.default_rng(0)
    shape = (*lead, 37, 53)
    dense, tiled = np.zeros(shape, np.int32), TileArray(shape, np.int32, 8)
    for _ in range(20):  # overlapping writes across tile borders, later ones win
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        h, w = min(rng.integers(1, 10), 37 - y), min(rng.integers(1, 10), 53 - x)
        data = rng.integers(1, 100, (*lead, h, w)).astype(np.int32)
        dense[..., y : y + h, x : x + w] = data
        tiled.put(y, x, data)
    keys = [np.s_[...], np.s_[..., 3:20, 5:40], np.s_[..., ::3, 1:50:4], np.s_[..., 5, :]]
    keys += [np.s_[..., -1, -2], np.s_[..., 30:10:-2, :], np.s_[..., 40:50, :]]
    if lead:
        keys += [np.s_[1, 2:9, ::2], np.s_[0]]
    for key in keys:
        np.testing.assert_array_equal(tiled[key], dense[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(tiled), dense)
    assert tiled.nbytes < dense.nbytes * 2  # only touched tiles exist
    with pytest.raises(IndexError):
        tiled[..., 37, 0]
    tiled[..., 30:40, 50:60] = 3  # a rectangle, clipped at the edge, like a numpy slice
    dense[..., 30:40, 50:60] = 3
    np.testing.assert_array_equal(np.asarray(tiled), dense)
    with pytest.raises(IndexError, match="rectangles"):
        tiled[..., ::2, :] = 1


def test_untouched_tiles_are_not_allocated():
    tiled = TileArray((100_000, 100_000), np.uint32, 256)
    tiled.put(50_000, 50_000, np.ones((10, 10), np.uint32))
    assert tiled.nbytes == 256 * 256 * 4
    assert tiled[49_990:50_020, 49_990:50_020].sum() == 100
