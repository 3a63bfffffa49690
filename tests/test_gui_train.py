"""The "Train student" widget drives real (tiny) training in a child process on a real slide."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import shared_path

pytestmark = pytest.mark.gui

TRAINING_S = 240_000  # ms; bounds a hang on a busy 2-core CPU, not a speed


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tmp_path):
    from napari_rckd._widgets.train import TrainWidget

    source = shared_path("slides/cmu-1-small-region.svs")
    slide = shutil.copy(source, tmp_path / source.name)
    viewer = make_napari_viewer()
    viewer.open(str(slide), plugin="napari-rckd")
    widget = TrainWidget(viewer)
    widget.out_dir.setText(str(tmp_path / "run"))
    widget.backbone.setCurrentText("resnet18")
    widget.tile_size.setValue(64)
    widget.tiles.setValue(8)
    widget.batch_size.setValue(2)
    widget.device.setCurrentText("cpu")
    yield viewer, widget
    if widget.session.process is not None:
        widget.session.process.kill()


def _regions(viewer, classes):
    from napari_rckd._widgets.annotation_session import add_annotation_layers, set_class

    shapes, labels = add_annotation_layers(viewer, viewer.layers[0])
    for index, name in enumerate(classes):
        set_class(shapes, name)
        top = 200 + 500 * (index // 2)
        left = 200 + 900 * (index % 2)
        shapes.add_rectangles(np.array([[top, left], [top + 400.0, left + 600.0]]))
    return shapes, labels


def test_open_slide_is_listed_for_stage_1(viewer_and_widget):
    viewer, widget = viewer_and_widget
    settings = widget.settings()
    assert settings.slides == [viewer.layers[0].metadata["path"]]
    assert settings.stage1 and not settings.stage2


def test_stage_1_and_2_train_to_a_classifier_sent_to_live_analysis_with_a_random_comparison(
    viewer_and_widget, qtbot
):
    from napari_rckd._widgets.train_job import TRAINED
    from napari_rckd.models import load_checkpoint

    viewer, widget = viewer_and_widget
    shapes, _ = _regions(viewer, ["tumour", "stroma", "tumour", "stroma"])
    widget._refresh_layers()
    widget.shapes_box.setCurrentText(shapes.name)
    widget.stage2_box.setChecked(True)
    widget.budget.setValue(2)
    widget.stage2_budget.setValue(2)
    widget.compare_random.setChecked(True)
    received = []
    TRAINED.model_ready.connect(lambda path, kind: received.append((path, kind)))

    session = widget.session
    assert session.start(widget.settings(), shapes)
    assert session.running and not widget.start_button.isEnabled()
    qtbot.waitUntil(lambda: not session.running, timeout=TRAINING_S)  # the widget's timer polls
    assert session.status.startswith("Training completed."), session.status
    assert widget.status.text() == session.status
    assert widget.progress.value() == widget.progress.maximum() == 2
    assert len(widget.plot.loss) == 2  # the plot restarts with each run
    assert "from random weights" in widget.comparison.text(), widget.comparison.text()
    notes = widget.notes_label.text()  # what each stage said about itself
    assert "stage 1: start weights: random" in notes, notes
    assert "stage 2: start weights: " in notes and "best.safetensors" in notes
    assert "stage 2: validation: split by group (each annotated region is one group)" in notes
    assert (session.process.out_dir / "stage2-random" / "last.safetensors").exists()
    model, metadata = load_checkpoint(session.checkpoint)
    assert model.config.task == "classify" and model.config.class_names == ["tumour", "stroma"]
    assert metadata["provenance"]["init"]["name"] == "best.safetensors"  # stage 1's student
    assert received[-1] == (session.checkpoint, "subtype")
    assert (session.process.out_dir / "inputs" / "annotations.geojson").exists()


def test_stop_ends_training_and_keeps_the_viewer_usable(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    widget.budget.setValue(400)
    session = widget.session
    session.start(widget.settings())
    qtbot.waitUntil(lambda: widget.progress.value() >= 1, timeout=TRAINING_S)
    session.stop()
    assert session.process.wait(60) == 0  # the child checkpoints and exits
    qtbot.waitUntil(lambda: not session.running, timeout=10_000)
    assert "Stopped" in widget.status.text()
    assert session.checkpoint is not None and widget.resume_button.isEnabled()
    assert widget.progress.value() < 400
    viewer.add_points([[10, 10]])  # still responsive
    assert len(viewer.layers) == 2


@pytest.mark.parametrize(
    ("classes", "message"),
    [([], "no annotations"), (["tumour", "tumour"], "one class")],
)
def test_bad_annotations_are_a_message(viewer_and_widget, classes, message):
    viewer, widget = viewer_and_widget
    shapes, _ = _regions(viewer, classes)
    widget._refresh_layers()
    widget.shapes_box.setCurrentText(shapes.name)
    widget.stage1_box.setChecked(False)
    widget.stage2_box.setChecked(True)
    widget.start_button.click()
    assert message in widget.status.text() and widget.session.process is None
    assert widget.start_button.isEnabled()


def test_unreadable_slide_is_reported_by_the_widget(viewer_and_widget, qtbot, tmp_path):
    _, widget = viewer_and_widget
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"garbage" * 100)
    widget.slide_list.clear()
    widget.add_slide_paths([bad])
    widget.budget.setValue(2)
    widget.session.start(widget.settings())
    qtbot.waitUntil(lambda: not widget.session.running, timeout=TRAINING_S)
    assert widget.status.text().startswith("Training failed:")
    assert "broken.svs" in widget.status.text()
    assert widget.start_button.isEnabled() and widget.session.checkpoint is None


def test_closing_the_widget_releases_its_keys(viewer_and_widget):
    from napari.utils.key_bindings import KeyBinding

    viewer, widget = viewer_and_widget
    keys = [KeyBinding.from_str(k) for k in ("Alt-T", "Alt-X")]
    assert all(key in viewer.keymap for key in keys)
    widget.close()
    assert not any(key in viewer.keymap for key in keys)
    viewer.add_points([[10, 10]])  # the viewer's layer events no longer reach the widget


def test_nuclei_from_corrections_trains_in_the_child_and_goes_live(viewer_and_widget, qtbot):
    """Saved corrections of the open slide are listed; a tiny fine-tune runs in the child
    process with progress and loss, shows before → after and is sent to live analysis."""
    from napari_rckd._widgets.train_job import TRAINED
    from napari_rckd.io import open_slide
    from napari_rckd.io.corrections import CorrectionsFolder
    from napari_rckd.teachers import get_teacher

    viewer, widget = viewer_and_widget
    path = viewer.layers[0].metadata["path"]
    folder = CorrectionsFolder(path)
    teacher = get_teacher("classical")
    with open_slide(path) as slide:
        for y, x in ((400, 400), (1200, 900), (2000, 1400)):
            image = slide.read_region(0, y, x, 96, 96)
            labels = teacher.predict(image, slide.mpp).labels
            folder.save(image, labels, slide.mpp, bounds=dict(y=y, x=x, height=96, width=96),
                        model=teacher.identity, answer=labels)  # fmt: skip
    widget._refresh_layers()
    box = widget.nuclei_box
    box.setChecked(True)
    assert not widget.stage1_box.isChecked() and box.folders.count() == 1
    assert box.init.currentText() == "builtin"  # the most exact start (docs/correct.md)
    box.init.setCurrentText("csat")  # the fast one, for a test
    box.steps.setValue(2)
    box.crop.setValue(64)
    box.batch.setValue(2)
    received = []
    TRAINED.model_ready.connect(lambda spec, kind: received.append((spec, kind)))

    widget._on_start_clicked()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=TRAINING_S)
    assert widget.status.text().startswith("Training completed."), widget.status.text()
    assert widget.progress.value() == widget.progress.maximum() == 2
    assert len(widget.plot.loss) == 2
    assert "held out from training: Dice" in widget.comparison.text(), widget.comparison.text()
    assert received and received[-1][1] == "nuclei" and received[-1][0].endswith("last.safetensors")
    assert "nuclei: replay:" in widget.notes_label.text()
    assert get_teacher(received[-1][0]).mpp == 0.5


def test_stage_2_reads_a_slide_at_the_mpp_set_in_analyze_slide(viewer_and_widget, tmp_path):
    """A µm/px the user set for an open slide travels with the job, so the child does not
    estimate another (it applies only when the file records none)."""
    from napari_rckd._widgets.train_job import prepare_job

    viewer, widget = viewer_and_widget
    viewer.layers[0].metadata["mpp"] = 0.61  # what Analyze slide's Set writes
    shapes, _ = _regions(viewer, ["tumour", "stroma"])
    widget._refresh_layers()
    widget.shapes_box.setCurrentText(shapes.name)
    widget.stage1_box.setChecked(False)
    widget.stage2_box.setChecked(True)
    job = prepare_job(widget.settings(), shapes)
    assert job.stage2["slide_mpp"] == 0.61
    assert job.stage2["slide"] == viewer.layers[0].metadata["path"]
