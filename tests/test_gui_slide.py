"""In a real viewer: zooming changes the displayed level, and the widest view reads no level-0 tile."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path

pytestmark = pytest.mark.gui


class _CountingLevel:
    """Array-like wrapper that counts the reads napari makes from one level."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype, self.ndim, self.size = (
            array.shape,
            array.dtype,
            array.ndim,
            array.size,
        )
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return self._array[key]

    def __array__(self, dtype=None, copy=None):
        self.reads += 1
        return np.asarray(self._array, dtype=dtype)


def test_zoom_switches_levels_and_wide_view_skips_level_0(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)  # level choice happens when the canvas draws
    path = shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif")
    viewer.open(str(path), plugin="napari-rckd")
    layer = viewer.layers[0]
    assert layer.multiscale and layer.metadata["mpp"] == pytest.approx(0.499)
    counting = [_CountingLevel(level) for level in layer.data]
    layer.data = counting
    viewer.window._qt_window.resize(600, 600)

    viewer.reset_view()
    viewer.camera.zoom = viewer.camera.zoom / 4  # whole slide, smaller than the canvas
    qtbot.wait(300)  # let the canvas draw, which is when napari picks the level
    counting[0].reads = 0
    layer.refresh()
    qtbot.wait(300)
    zoomed_out_level = layer.data_level
    assert zoomed_out_level == len(counting) - 1
    assert counting[0].reads == 0 and counting[-1].reads > 0

    viewer.camera.center = (1400 * 0.499, 1100 * 0.499)
    viewer.camera.zoom = 4 / 0.499  # 4 screen pixels per level-0 pixel
    qtbot.wait(300)
    layer.refresh()
    qtbot.wait(300)
    assert layer.data_level == 0
    assert counting[0].reads > 0
    layer.metadata["slide"].close()
