"""Correct nuclei here, in the real viewer on real tissue: the view (or a drawn rectangle) opens
as an editable layer of the live model's nuclei over the slide; new nucleus, split, merge, save,
the list of saved regions and reopening work from the panel's public methods."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.gui

MPP = 0.499  # CMU-1-Small-Region


@pytest.fixture
def analyze(make_napari_viewer, crop_path, tmp_path, monkeypatch):
    from napari_rckd._reader import slide_layer_data
    from napari_rckd.io import open_slide

    monkeypatch.setenv("NAPARI_RCKD_CONFIG", str(tmp_path / "config"))
    path = tmp_path / "crop.tif"
    shutil.copy(crop_path, path)
    viewer = make_napari_viewer(show=True)
    slide = open_slide(path, mpp=MPP)
    data, kwargs, _ = slide_layer_data(slide)
    viewer.add_image(data, **kwargs)
    viewer.scene.camera.center = (192, 192)
    viewer.scene.camera.zoom = 2 / MPP
    _, widget = viewer.window.add_plugin_dock_widget("napari-rckd", "Analyze slide")
    widget.set_model("nuclei", "classical")
    yield widget
    widget._stop_live()
    slide.close()


def test_correct_save_list_and_reopen(analyze, qtbot):
    panel, viewer = analyze.correct, analyze.viewer
    worker = panel.correct_here()
    assert worker is not None, panel.status.text()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=30000)
    layer = viewer.layers["crop corrections"]
    draft = panel.draft
    assert layer.data.shape == draft.image.shape[:2] and draft.answer.max() > 0
    assert layer.scale[-1] == pytest.approx(0.5) and layer.mode == "paint"
    assert layer.selected_label == draft.answer.max() + 1  # "new nucleus" is ready
    # the region lies under the camera
    centre = np.asarray(layer.translate) + np.asarray(layer.data.shape) * 0.5 / 2
    assert np.allclose(centre, viewer.scene.camera.center[-2:], atol=20)

    data = np.asarray(layer.data).copy()
    data[2:12, 2:12] = layer.selected_label  # paint a nucleus
    first = int(np.unique(data)[1])
    data[data == first] = 0  # erase one
    layer.data = data
    layer.selected_label = int(np.unique(data)[1])
    panel.split_picked()
    assert len(np.unique(layer.data)) == len(np.unique(data)) + 1
    panel.picked = [int(np.unique(data)[1]), int(layer.data.max())]
    panel.merge_picked()
    np.testing.assert_array_equal(layer.data, data)
    region = panel.save_corrections()
    assert region is not None and region.id == 1, panel.status.text()
    assert region.changes.added == 1 and region.changes.removed == 1
    assert panel.list.count() == 1 and "+1 added" in panel.list.item(0).text()
    assert (analyze._slide()[1].path.with_name("crop.tif.corrections") / "manifest.csv").is_file()

    # a rectangle drawn in a Shapes layer is corrected instead of the view
    shapes = viewer.add_shapes([[[10, 10], [10, 60], [60, 60], [60, 10]]], shape_type="rectangle")
    viewer.layers.selection.active = shapes
    panel.correct_here(sync=True)
    assert panel.draft.bounds["height"] == pytest.approx(50 / MPP, abs=2)
    assert panel.draft.region is None
    panel.save_corrections()
    assert panel.list.count() == 2

    panel.list.setCurrentRow(0)
    panel.reopen_selected()
    np.testing.assert_array_equal(viewer.layers["crop corrections"].data, data)
    assert panel.draft.region == 1


def test_a_model_fine_tuned_on_the_corrections_goes_live(analyze, qtbot):
    """Train's end (TRAINED.model_ready) makes the new model the live nuclei model: the live
    layers are rebuilt on it and the corrections panel answers with it."""
    from napari_rckd._widgets.train_job import TRAINED
    from napari_rckd.training.nuclei_finetune import NucleiRecipe, finetune_nuclei

    panel = analyze.correct
    for centre in ((100, 100), (250, 250)):
        analyze.viewer.scene.camera.center = centre
        panel.correct_here(sync=True)
        panel.save_corrections()
    sidecar = analyze._slide()[1].path.with_name("crop.tif.corrections")
    recipe = NucleiRecipe(steps=1, batch_size=2, tile_size=64, device="cpu", replay_tiles=2)
    result = finetune_nuclei([sidecar], sidecar.parent / "run", recipe)
    analyze.live_box.setChecked(True)
    TRAINED.model_ready.emit(result.spec, "nuclei")
    # the default start is builtin, so the new model keeps its classical half
    assert analyze.models["nuclei"].currentData() == f"{result.model.resolve()}+classical"
    live = analyze.live
    assert live is not None and live.enabled
    assert result.model.parent.name in live.predictor.sources["nuclei"].identity
    qtbot.waitUntil(lambda: bool(live.predictor.tiles_done("nuclei")), timeout=60000)
    panel.correct_here(sync=True)
    assert panel.session.teacher.path == result.model


def test_suggest_regions_lists_and_jumps(analyze, qtbot):
    panel, viewer = analyze.correct, analyze.viewer
    panel.suggest_area.setCurrentIndex(1)  # the whole (768² px) crop
    panel.second.setChecked(False)  # the unsure share alone (builtin is slow on a CPU)
    worker = panel.suggest_regions(top=4)
    assert worker is not None, panel.status.text()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)
    shapes = viewer.layers["crop suggested regions"]
    assert 1 <= len(shapes.data) == panel.suggestions.count() <= 4
    scores = [s.score for s in panel.found]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    panel.suggestions.setCurrentRow(0)
    cy, cx = panel.found[0].centre
    assert np.allclose(viewer.scene.camera.center[-2:], (cy * MPP, cx * MPP))
    panel.suggest_area.setCurrentIndex(0)
    panel.suggest_regions(sync=True, top=2)  # the view (zoomed onto the first suggestion)
    assert panel.suggestions.count() >= 1
