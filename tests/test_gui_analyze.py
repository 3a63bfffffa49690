"""The "Analyze slide" widget on real tissue: callbacks called directly drive live analysis, model
choices and toggles; whole-slide runs report progress, cancel and add layers; exports write
files; wrong or broken models and slides without mpp end as a message, not a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_predict import tiny_checkpoint

pytestmark = pytest.mark.gui

MPP = 0.499  # CMU-1-Small-Region


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    broken = folder / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    return dict(
        subtype=tiny_checkpoint(
            folder / "subtype.safetensors", "classify", 3, 2.0, names=["tumour", "stroma", "fat"]
        ),
        region=tiny_checkpoint(
            folder / "region.safetensors", "dense", 2, 2.0, names=["other", "cancer"]
        ),
        broken=broken,
    )


@pytest.fixture
def widget(make_napari_viewer, crop_path, qtbot, tmp_path, monkeypatch):
    from napari_rckd._reader import slide_layer_data
    from napari_rckd.io import open_slide

    monkeypatch.setenv("NAPARI_RCKD_CONFIG", str(tmp_path / "config"))
    viewer = make_napari_viewer(show=True)
    slide = open_slide(crop_path, mpp=MPP)
    data, kwargs, _ = slide_layer_data(slide)
    viewer.add_image(data, **kwargs)
    viewer.scene.camera.center = (192, 192)
    viewer.scene.camera.zoom = 1 / MPP
    _, widget = viewer.window.add_plugin_dock_widget("napari-rckd", "Analyze slide")
    yield widget
    widget._stop_live()
    if widget.worker is not None:
        widget._on_cancel_clicked()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    slide.close()


def test_widget_is_registered_and_lists_slide_layers(widget):
    from napari_rckd._widgets.analyze import AnalyzeWidget
    from napari_rckd._widgets.viewer import DOCKED_WIDGETS

    assert isinstance(widget, AnalyzeWidget)
    assert "Analyze slide" in DOCKED_WIDGETS
    assert widget.image.currentText() == "crop"
    assert widget.models["nuclei"].currentData() == "auto"
    assert widget.models["subtype"].currentData() == "<none>"
    assert widget.chosen_models() == {"nuclei": "auto", "subtype": None, "region": None}
    assert widget.device.itemData(0) == "auto" and widget.device.findData("cpu") >= 0


def test_live_callbacks_fill_layers_and_toggle(widget, checkpoints, qtbot):
    widget.live_box.setChecked(True)  # the toggled signal calls _on_live_toggled(True)
    live = widget.live
    assert live is not None and live.enabled
    assert "(learned + classical), chosen for the CPU" in widget.status.toolTip()  # auto on CPU
    assert "csat shows first" in widget.status.toolTip()  # builtin is slow: csat previews it
    preview, nuclei = live.layers["preview_labels"], live.layers["nuclei_labels"]
    layers = list(widget.viewer.layers)
    assert layers.index(preview) < layers.index(nuclei) and preview.opacity < nuclei.opacity
    qtbot.waitUntil(lambda: bool(live.predictor.tiles_done("nuclei")), timeout=20000)
    qtbot.waitUntil(lambda: "tiles/s" in widget.status.text(), timeout=5000)
    assert widget.status.text().startswith("auto")

    widget.set_model("subtype", str(checkpoints["subtype"]))
    live = widget.live
    assert set(live.predictor.sources) == {"nuclei", "nuclei_preview", "subtype"}
    subtype = live.layers["subtype_class"]
    assert subtype.metadata["class_names"] == ["tumour", "stroma", "fat"]
    assert list(subtype.features["class"]) == ["", "tumour", "stroma", "fat"]
    qtbot.waitUntil(lambda: bool(live.predictor.tiles_done("subtype")), timeout=20000)
    classes = np.asarray(live.predictor.stores["subtype_class"].levels[0])
    assert set(np.unique(classes)) - {0} <= {1, 2, 3} and classes.any()
    assert widget.recent.get("subtype") == [str(checkpoints["subtype"].resolve())]

    widget._on_layer_toggled("nuclei", False)
    assert not live.layers["nuclei_labels"].visible and "nuclei" not in live.active
    assert not live.layers["preview_labels"].visible  # the preview goes with its nuclei
    assert {r.model for r in live.update_view().requests} <= {"subtype"}
    widget.preview_box.setChecked(False)  # live again, without the preview layer
    assert widget.live is not live and set(widget.live.predictor.sources) == {"nuclei", "subtype"}
    live = widget.live
    widget._on_live_toggled(False)
    assert not live.enabled


def test_region_model_adds_probability_and_outline(widget, checkpoints, qtbot):
    widget.set_model("nuclei", None)
    widget.set_model("region", str(checkpoints["region"]))
    widget._on_live_toggled(True)
    live = widget.live
    assert set(live.predictor.sources) == {"region"}
    probability, outline = live.layers["region_prob"], live.layers["region_mask"]
    assert probability.name == "crop cancer probability" and outline.contour == 2
    store = live.predictor.stores["region_prob"]
    assert probability.scale[0] == pytest.approx(store.scale_um(0))
    qtbot.waitUntil(lambda: bool(live.predictor.tiles_done("region")), timeout=20000)
    live.predictor.wait_idle()  # the worker may still be writing the next tile: compare at rest
    shown = np.asarray(probability.data[0][:, :])
    np.testing.assert_allclose(shown, np.asarray(store.levels[0][1]))
    assert 0 < shown.max() <= 1


def test_bad_models_and_slides_leave_a_message(widget, checkpoints, make_napari_viewer, qtbot):
    widget.live_box.setChecked(True)
    widget.set_model("subtype", str(checkpoints["region"]))  # a dense model for the classifier
    assert "'dense' checkpoint" in widget.status.text()
    assert widget.live is None and not widget.live_box.isChecked()

    widget.set_model("subtype", None)
    widget.set_model("region", str(checkpoints["broken"]))
    widget._on_live_toggled(True)
    assert "broken.safetensors" in widget.status.text() and widget.live is None

    widget.set_model("region", None)
    from napari_rckd._reader import slide_layer_data
    from napari_rckd.io import open_slide

    data, kwargs, _ = slide_layer_data(open_slide(widget.viewer.layers[0].metadata["path"]))
    kwargs["name"] = "no mpp"
    layer = widget.viewer.add_image(data, **kwargs)
    widget.image.setCurrentText("no mpp")
    assert "does not record its pixel size" in widget.status.text()
    widget._on_live_toggled(True)
    assert "does not record its pixel size" in widget.status.text()
    assert widget.live is None

    # the mpp field offers the value estimated from the nuclei (measured in the background)
    guess = widget.mpp.guess
    qtbot.waitUntil(
        lambda: guess.itemText(1).startswith("from its nuclei"), timeout=60_000
    )  # fmt: skip
    assert 0.1 < guess.itemData(1) < 2.0
    # pick the 20x suggestion, Set, and the same layer is re-scaled to µm
    labels = [guess.itemText(i) for i in range(guess.count())]
    widget.mpp._on_guess_chosen(next(i for i, t in enumerate(labels) if t.startswith("20x")))
    assert widget.mpp.value.value() == pytest.approx(0.5)
    count = len(widget.viewer.layers)
    widget.mpp.button.click()
    assert layer in widget.viewer.layers and len(widget.viewer.layers) == count  # in place
    assert tuple(layer.scale) == pytest.approx((0.5, 0.5)) and layer.metadata["slide"].mpp == 0.5
    assert str(layer.units[0]) == "micrometer"
    widget._on_live_toggled(True)
    assert widget.live is not None and widget.live.predictor.slide.mpp == 0.5


def test_whole_slide_run_reports_progress_adds_layers_and_exports(
    widget, checkpoints, qtbot, tmp_path, monkeypatch
):
    from qtpy.QtWidgets import QMessageBox

    from napari_rckd.inference.wholeslide import open_results

    widget.set_model("subtype", str(checkpoints["subtype"]))
    widget.out.setText(str(tmp_path / "crop.zarr"))
    progress = []
    worker = widget._on_run_clicked()
    worker.yielded.connect(progress.append)
    with qtbot.waitSignal(worker.finished, timeout=120000):
        pass
    assert progress and progress[-1].done == progress[-1].total and not progress[-1].cancelled
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    results = open_results(tmp_path / "crop.zarr")
    assert {"nuclei_labels", "subtype_class"} <= set(results)
    assert "crop whole slide nuclei" in widget.viewer.layers
    labels = widget.viewer.layers["crop whole slide nuclei"].data[0]
    assert len(np.unique(np.asarray(labels))) > 20

    widget.export_dir.setText(str(tmp_path / "export"))
    for kind in ("geojson", "csv", "ome-tiff"):
        worker = widget._on_export_clicked(kind)
        with qtbot.waitSignal(worker.finished, timeout=60000):
            pass
    nuclei = json.loads((tmp_path / "export" / "crop.nuclei.geojson").read_text())
    assert nuclei["type"] == "FeatureCollection" and len(nuclei["features"]) > 20
    rows = (tmp_path / "export" / "crop.nuclei.csv").read_text().splitlines()
    assert rows[0].startswith("id,centroid_x_um") and len(rows) == len(nuclei["features"]) + 1
    assert (tmp_path / "export" / "crop.subtype.geojson").is_file()
    assert (tmp_path / "export" / "crop.nuclei.ome.tif").stat().st_size > 0
    assert "exported ome-tiff" in widget.status.text()

    asked = []
    answer = QMessageBox.No
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or answer)
    before = (tmp_path / "export" / "crop.nuclei.csv").read_bytes()
    assert widget._on_export_clicked("csv") is None  # declined: nothing replaced
    assert "kept the csv exports" in widget.status.text() and len(asked) == 1
    assert (tmp_path / "export" / "crop.nuclei.csv").read_bytes() == before
    answer = QMessageBox.Yes
    worker = widget._on_export_clicked("csv")
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    assert "exported csv" in widget.status.text() and len(asked) == 2


def test_whole_slide_cancel_stops_early(widget, qtbot, tmp_path):
    widget.batch.setValue(1)
    widget.out.setText(str(tmp_path / "cancel.zarr"))
    progress = []
    worker = widget._on_run_clicked()
    worker.yielded.connect(progress.append)
    worker.yielded.connect(lambda _: widget._on_cancel_clicked())
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    assert progress[-1].cancelled and progress[-1].done < progress[-1].total
    assert widget.run_button.isEnabled() and widget.worker is None


def test_a_model_finished_by_train_student_is_picked_up(widget, checkpoints):
    from napari_rckd._widgets.train_job import TRAINED

    TRAINED.model_ready.emit(str(checkpoints["subtype"]), "subtype")
    assert widget.models["subtype"].currentData() == str(checkpoints["subtype"])
    assert widget.chosen_models()["subtype"] == str(checkpoints["subtype"])


def test_a_closed_widget_drops_the_running_nuclei_estimate(widget, qtbot):
    """The background µm/px estimate of a slide without one is dropped on close: its answer
    reaches no widget."""
    from napari_rckd.io import open_slide

    slide = open_slide(widget.viewer.layers[0].metadata["path"])
    slide.mpp = None
    field = widget.mpp
    field.show_slide(slide)
    worker, done = field._worker, []
    assert worker is not None
    worker.finished.connect(lambda: done.append(True))
    count = field.guess.count()
    widget.close()
    assert field._worker is None
    qtbot.waitUntil(lambda: bool(done), timeout=60_000)
    assert field.guess.count() == count
