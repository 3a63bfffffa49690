"""Tile grids: cores partition the image, windows carry the halo, level-0 mapping is exact."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.inference.tiling import Box, TileGrid


def test_cores_partition_the_image_and_windows_are_full_size():
    grid = TileGrid(shape=(300, 530), tile=128, halo=16)
    assert (grid.rows, grid.cols, len(grid)) == (3, 5, 15)
    cover = np.zeros(grid.shape, np.int32)
    for row in range(grid.rows):
        for col in range(grid.cols):
            cover[grid.core(row, col).slices()] += 1
            window = grid.window(row, col)
            assert (window.height, window.width) == (160, 160)
    assert (cover == 1).all()
    assert grid.core(2, 4) == Box(256, 512, 300, 530)  # clipped at the bottom-right
    assert grid.window(0, 0) == Box(-16, -16, 144, 144)
    assert grid.index(2, 4) == 14


def test_crop_core_drops_the_halo():
    grid = TileGrid(shape=(300, 300), tile=128, halo=16)
    window = np.arange(160 * 160).reshape(160, 160)
    core = grid.crop_core(window, 0, 0)
    assert core.shape == (128, 128) and core[0, 0] == window[16, 16]
    edge = grid.crop_core(np.zeros((2, 160, 160)), 2, 2)  # channels first, clipped core
    assert edge.shape == (2, 300 - 256, 300 - 256)


def test_tiles_in_box_and_bad_parameters():
    grid = TileGrid(shape=(1000, 1000), tile=100)
    assert grid.tiles_in(Box(150, 250, 260, 301)) == [(r, c) for r in (1, 2) for c in (2, 3)]
    assert grid.tiles_in(Box(-50, -50, 0, 0)) == []
    assert grid.tiles_in(Box(950, 950, 5000, 5000)) == [(9, 9)]
    with pytest.raises(RckdError, match="halo"):
        TileGrid(shape=(10, 10), tile=0)
    with pytest.raises(RckdError, match="outside"):
        grid.core(10, 0)
    with pytest.raises(RckdError, match="mpp"):
        TileGrid.for_slide((100, 100), None, 0.5, 64)


def test_grid_windows_read_from_a_real_slide_match_the_level0_pixels():
    from napari_rckd.io import open_slide

    path = shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif")
    with open_slide(path) as slide:
        grid = TileGrid.for_slide(slide.shape, slide.mpp, slide.mpp, tile=256, halo=32)
        assert grid.shape == slide.shape and grid.level0_per_px == pytest.approx(1.0)
        y, x = grid.window_level0(1, 2)
        assert (y, x) == (256 - 32, 512 - 32)
        window = slide.read_at_mpp(y, x, grid.window_size, slide.mpp)
        direct = slide.read_region(0, 256, 512, 256, 256)
        np.testing.assert_array_equal(
            grid.crop_core(window.transpose(2, 0, 1), 1, 2), direct.transpose(2, 0, 1)
        )
        # the same slide tiled for a 1 µm/px model: half as many pixels each way
        coarse = TileGrid.for_slide(slide.shape, slide.mpp, 2 * slide.mpp, tile=256)
        assert coarse.shape == (-(-slide.shape[0] // 2), -(-slide.shape[1] // 2))
        assert coarse.to_level0(coarse.core(0, 0)) == Box(0, 0, 512, 512)
