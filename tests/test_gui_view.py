"""`napari-rckd view`: the slide opens in µm with every plugin widget docked, in a window that
fills the screen (no window manager under Xvfb: the test sees what such a user sees), the
slide fitted to the canvas, Analyze slide in front and a µm scale bar."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path

pytestmark = pytest.mark.gui


def test_view_opens_the_slide_with_the_widgets_docked(monkeypatch, make_napari_viewer):
    import napari

    from napari_rckd._widgets.viewer import DOCKED_WIDGETS, scale_bar
    from napari_rckd.cli import main

    path = shared_path("slides/cmu-1-small-region.svs")
    viewers = []

    def test_viewer(**kwargs):  # napari's fixture viewer: isolated plugin registry, closed after
        viewers.append(make_napari_viewer(**kwargs))
        return viewers[-1]

    monkeypatch.setattr(napari, "Viewer", test_viewer)
    monkeypatch.setattr(napari, "run", lambda: None)  # return instead of entering the event loop
    assert main(["view", str(path)]) == 0
    (viewer,) = viewers
    (layer,) = viewer.layers
    assert layer.name == "cmu-1-small-region" and layer.multiscale
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    docked = set(viewer.window.dock_widgets)
    assert all(any(name in title for title in docked) for name in DOCKED_WIDGETS), docked
    assert viewer.window._qt_window.isMaximized()
    assert scale_bar(viewer).visible and tuple(map(str, layer.units)) == ("micrometer",) * 2
    assert front_tab(viewer).startswith("Analyze slide")
    # the window fills the screen, with or without a window manager (Xvfb has none) ...
    window = viewer.window._qt_window
    screen = window.screen().availableGeometry()
    assert screen.contains(window.frameGeometry()), (window.frameGeometry(), screen)
    assert window.width() >= 0.95 * screen.width() and window.height() >= 0.95 * screen.height()
    # ... and the canvas keeps a good part of it beside the docks
    height, width = canvas_size(viewer)
    assert width >= screen.width() / 3 and height >= screen.height() / 2, (height, width)
    # the whole slide is in view and fills the canvas in one direction
    zoom = viewer.camera.zoom
    extent = np.subtract(*layer.extent.world[::-1])[-2:] * zoom  # slide (h, w) in screen px
    assert (extent <= np.array([height, width]) + 1).all()
    assert (extent / np.array([height, width])).max() >= 0.85, (extent, height, width)
    centre = np.mean(layer.extent.world, axis=0)[-2:]
    assert np.allclose(viewer.camera.center[-2:], centre, atol=0.02 * extent.max() / zoom)
    viewer.fit_to_view()  # fitted to the canvas as it is now: fitting again changes nothing
    assert viewer.camera.zoom == pytest.approx(zoom, rel=0.01)


def canvas_size(viewer) -> tuple[int, int]:
    """(height, width) of the canvas in screen pixels (napari 0.9 moved it to the viewer)."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is None:
        canvas = viewer.window._qt_viewer.canvas
    return tuple(int(v) for v in canvas.size)


def front_tab(viewer) -> str:
    """The title of the tab in front among the plugin's tabified docks."""
    from qtpy.QtWidgets import QApplication, QTabBar

    QApplication.processEvents()
    for bar in viewer.window._qt_window.findChildren(QTabBar):
        titles = [bar.tabText(i) for i in range(bar.count())]
        if any("Train student" in title for title in titles):
            return titles[bar.currentIndex()]
    raise AssertionError("the plugin's widgets are not tabified")


def test_view_of_a_missing_slide_is_one_sentence_and_no_window(capsys):
    from napari_rckd.cli import main

    assert main(["view", "no-such-slide.svs"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no-such-slide.svs" in error and error.count("\n") == 0
