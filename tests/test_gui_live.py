"""Live analysis in a real viewer on a real slide: layers fill in while the event loop runs,
pans drop stale requests, live mode off stops submissions, zoomed-out views explain themselves."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path

pytestmark = pytest.mark.gui

MPP = 0.499  # CMU-1-Small-Region
SMALL_CORE = 128  # smaller nuclei tiles than the default 256 keep the test quick on a CPU


@pytest.fixture
def slide():
    from napari_rckd.io import open_slide

    with open_slide(shared_path("slides/cmu-1-small-region.svs")) as slide:
        yield slide


def small_nuclei():
    from napari_rckd.inference.sources import NucleiSource

    source = NucleiSource("classical")
    source.core = SMALL_CORE
    return source


@pytest.fixture
def live(make_napari_viewer, slide, qtbot):
    from napari_rckd._reader import slide_layer_data
    from napari_rckd._widgets.live import LiveAnalysis
    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.io.tissue import detect_tissue

    viewer = make_napari_viewer(show=True)  # corner_pixels are updated when the canvas draws
    viewer.window._qt_window.resize(700, 600)
    data, kwargs, _ = slide_layer_data(slide)
    layer = viewer.add_image(data, **kwargs)
    look_at(viewer, qtbot, (1100, 800))
    predictor = Predictor(
        slide, [small_nuclei()], tissue=detect_tissue(slide), batch_size=1, memory_budget=2**28
    )
    messages = []
    live = LiveAnalysis(viewer, layer, predictor, on_status=messages.append, debounce_ms=30)
    live.messages = messages
    yield live
    live.close(remove_layers=True)


def look_at(viewer, qtbot, center_um, screen_px_per_slide_px=1.0):
    viewer.scene.camera.center = center_um
    viewer.scene.camera.zoom = screen_px_per_slide_px / MPP
    qtbot.wait(100)  # the canvas draws, which updates the layer's corner_pixels


def visible_labels(live) -> np.ndarray:
    """The nuclei labels (level 0) under the current view."""
    view, _ = live.current_view()
    store = live.predictor.stores["nuclei_labels"]
    return store.read(live.predictor.grids["nuclei"].to_grid(view))


def test_nuclei_fill_in_while_the_event_loop_runs(live, qtbot):
    from qtpy.QtCore import QTimer

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    live.set_enabled(True)
    plan = live.last_plan
    assert plan.requests and {r.model for r in plan.requests} == {"nuclei"}
    first = plan.requests[0]
    qtbot.waitUntil(lambda: live.predictor.is_done("nuclei", first.row, first.col), timeout=20000)
    qtbot.waitUntil(lambda: (visible_labels(live) > 0).any(), timeout=20000)
    # the layer napari draws holds the same instances the store does
    layer = live.layers["nuclei_labels"]
    assert layer.data[0] is live.predictor.stores["nuclei_labels"].levels[0]
    np.testing.assert_array_equal(layer.scale, [0.5, 0.5])
    assert layer.translate[0] == pytest.approx(0.5 * (0.5 - MPP))
    qtbot.waitUntil(lambda: live.predictor.wait_idle(0), timeout=60000)
    labels = visible_labels(live)
    assert len(np.unique(labels)) > 20  # many nuclei on this tissue
    timer.stop()
    assert len(ticks) > 10  # the UI thread kept running while the worker computed
    assert any("tiles/s" in message for message in live.messages)  # while it worked
    # once the work is done the status says so instead of keeping the last rate
    qtbot.waitUntil(lambda: live.messages[-1].startswith("idle"), timeout=5000)
    assert "cache" in live.messages[-1] and "tiles/s" not in live.messages[-1]
    assert "layers " in live.messages[-1] and "/256 MB" in live.messages[-1]  # the live budget


def test_pan_drops_stale_requests_and_computes_the_new_view(live, qtbot):
    live.set_enabled(True)
    first_plan = live.last_plan
    first_tiles = {(r.row, r.col) for r in first_plan.requests}
    assert len(first_tiles) >= 12
    qtbot.waitUntil(lambda: bool(live.predictor.tiles_done("nuclei")), timeout=20000)

    submitted = live.submitted
    look_at(live.viewer, qtbot, (300, 600))
    qtbot.waitUntil(lambda: live.submitted > submitted, timeout=5000)  # the camera event planned
    second_plan = live.last_plan
    second_tiles = {(r.row, r.col) for r in second_plan.requests}
    assert second_tiles and not second_tiles & first_tiles
    assert all(r.generation == second_plan.generation for r in second_plan.requests)
    qtbot.waitUntil(lambda: second_tiles <= set(live.predictor.tiles_done("nuclei")), timeout=60000)
    qtbot.waitUntil(lambda: live.predictor.wait_idle(0), timeout=10000)
    done = set(live.predictor.tiles_done("nuclei"))
    assert done <= first_tiles | second_tiles
    assert first_tiles - done, "the first view's remaining tiles should have been dropped"
    assert (visible_labels(live) > 0).any()


def test_live_off_stops_submissions(live, qtbot):
    live.set_enabled(True)
    qtbot.waitUntil(lambda: bool(live.predictor.tiles_done("nuclei")), timeout=20000)
    live.set_enabled(False)
    assert live.messages[-1].startswith("live off")
    submitted = live.submitted
    qtbot.waitUntil(lambda: live.predictor.wait_idle(0), timeout=10000)
    done = len(live.predictor.tiles_done("nuclei"))
    look_at(live.viewer, qtbot, (300, 600))
    qtbot.wait(300)
    assert live.submitted == submitted
    assert len(live.predictor.tiles_done("nuclei")) == done
    assert live.predictor.wait_idle(0)


def test_zoomed_out_says_why_no_nuclei(live, qtbot):
    look_at(live.viewer, qtbot, (740, 550), screen_px_per_slide_px=0.2)
    live.set_enabled(True)
    assert live.last_plan.requests == []
    assert "zoom in to see nuclei" in live.message
    assert "zoom in to see nuclei" in live.messages[-1]


def test_layer_toggle_hides_and_stops_a_source(live, qtbot):
    live.set_active("nuclei", False)
    assert not live.layers["nuclei_labels"].visible
    live.set_enabled(True)
    assert live.last_plan.requests == []
    live.set_active("nuclei", True)
    assert live.layers["nuclei_labels"].visible and live.last_plan.requests
