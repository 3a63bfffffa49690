"""In a real viewer: a slide with a damaged tile shows it hatched, warns once, raises nothing."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import tifffile

from conftest import shared_path
from napari_rckd.io.levels import DamagedSlideWarning

pytestmark = pytest.mark.gui


def test_damaged_tile_is_hatched_in_the_viewer(make_napari_viewer, qtbot, tmp_path):
    path = tmp_path / "damaged.ome.tif"
    shutil.copy(shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif"), path)
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[-1].pages[0]  # the coarsest level, shown when zoomed out
        offset, count = page.dataoffsets[1], page.databytecounts[1]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00garbage" * (count // 8))
    viewer = make_napari_viewer(show=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer.open(str(path), plugin="napari-rckd")
        layer = viewer.layers[0]
        viewer.reset_view()
        viewer.camera.zoom = viewer.camera.zoom / 4  # whole slide: the coarsest level
        qtbot.wait(300)
        layer.refresh()
        qtbot.wait(300)
    assert layer.data_level == len(layer.data) - 1
    shown = np.asarray(layer.data[-1][:256, 256:])  # tile 1 of the coarsest level
    assert set(np.unique(shown)) == {200, 235}
    damage = [w for w in caught if issubclass(w.category, DamagedSlideWarning)]
    assert len(damage) == 1 and "damaged.ome.tif is damaged: level 3 tile 1" in str(
        damage[0].message
    )
