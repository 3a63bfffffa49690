"""Bad situations in the widgets end as one sentence in the widget, and the viewer stays usable:
the device running out of memory during training, and a model for another task picked in Analyze."""

from __future__ import annotations

import numpy as np
import pytest

from test_predict import tiny_checkpoint

pytestmark = pytest.mark.gui

pytest.importorskip("timm")


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory):
    """A 1024² synthetic H&E slide (real pyramidal OME-TIFF with a pixel size)."""
    from napari_rckd.io.synthetic import make_synthetic_slide

    return make_synthetic_slide(tmp_path_factory.mktemp("slide") / "small.ome.tif", size=1024).path


@pytest.fixture
def viewer(make_napari_viewer, small_slide, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_RCKD_CONFIG", str(tmp_path / "config"))
    viewer = make_napari_viewer()
    viewer.open(str(small_slide), plugin="napari-rckd")
    return viewer


def _still_usable(viewer) -> None:
    count = len(viewer.layers)
    viewer.add_points([[10.0, 10.0]])
    viewer.scene.camera.zoom *= 2
    assert len(viewer.layers) == count + 1


def test_out_of_memory_is_translated_into_one_sentence():
    import torch

    from napari_rckd.training.subprocess_runner import _explain

    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0)")
    message = _explain(error)
    assert message.startswith("the device ran out of memory")
    assert "lower the batch size" in message and "\n" not in message
    assert _explain(ValueError("bad\nsecond line")) == "training failed: ValueError: bad"


def test_out_of_memory_in_training_shows_in_the_widget(viewer, tmp_path):
    import torch

    from napari_rckd._widgets.train import TrainWidget
    from napari_rckd.training.subprocess_runner import _explain

    widget = TrainWidget(viewer)
    widget.out_dir.setText(str(tmp_path / "run"))
    widget.session.running = True  # as during a run; the child reports its error, then exits
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
    for event in (
        {"event": "fit_start", "stage": "stage1", "start_step": 0, "total_steps": 10},
        {"event": "error", "stage": "stage1", "message": _explain(oom)},
        {"event": "exit", "code": 1},
    ):
        widget.session.handle(event)
    assert widget.status.text() == (
        "Training failed: the device ran out of memory; lower the batch size or the tile size, "
        "or use the CPU"
    )
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    assert widget.session.checkpoint is None and not widget.use_button.isEnabled()
    _still_usable(viewer)


def test_classifier_picked_as_nuclei_model_is_a_message(viewer, tmp_path, qtbot):
    from napari_rckd._widgets.analyze import AnalyzeWidget

    classifier = tiny_checkpoint(
        tmp_path / "subtype.safetensors", "classify", 2, 1.0, names=["tumour", "stroma"]
    )
    widget = AnalyzeWidget(viewer)
    try:
        widget.live_box.setChecked(True)
        assert widget.live is not None  # the built-in teacher works
        widget.set_model("nuclei", str(classifier))
        text = widget.status.text()
        assert "subtype.safetensors" in text and "'classify' checkpoint" in text, text
        assert widget.live is None and not widget.live_box.isChecked()
        assert not any(layer.name.endswith(" nuclei") for layer in viewer.layers)
        _still_usable(viewer)

        widget.set_model("nuclei", "classical")  # recovering needs no restart
        widget.live_box.setChecked(True)
        assert widget.live is not None and "nuclei" in widget.live.predictor.sources
    finally:
        widget._stop_live()
    assert np.isfinite(viewer.scene.camera.zoom)
