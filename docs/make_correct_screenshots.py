"""Make the screenshots of docs/correct.md from the real viewer: CMU-1-Small-Region with live
csat nuclei, a region opened with "Correct nuclei here" and edited, saved (the dock lists it),
"Suggest regions", and the Train student box "Nuclei from my corrections". Run under a display:
``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_correct_screenshots.py SLIDE [OUT]``.
SLIDE is copied into a temporary folder first: the corrections sidecar goes beside the copy.
With ``MODEL`` (a fine-tuned nuclei model) as a third argument, a last picture shows its live
nuclei at the same place.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def settle(predictor=None, seconds: float = 120) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + seconds
    while predictor is not None and time.monotonic() < deadline:
        QApplication.processEvents()
        if predictor.tiles_done("nuclei") and predictor.wait_idle(0):
            break
        time.sleep(0.05)
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.05)


def shoot(viewer, out: Path, name: str) -> None:
    from PIL import Image
    from qtpy.QtWidgets import QWidget

    for toast in viewer.window._qt_window.findChildren(QWidget):  # start-up notices
        if type(toast).__name__ == "NapariQtNotification":
            toast.hide()
    image = viewer.screenshot(canvas_only=False, flash=False)
    path = out / name
    Image.fromarray(image[..., :3]).quantize(colors=96).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def open_analyze(slide: Path):
    """A viewer showing ``slide`` with Analyze slide docked and `csat` as its nuclei model."""
    import napari

    from napari_rckd._widgets.analyze import AnalyzeWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open(str(slide), plugin="napari-rckd")
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze slide", area="right")
    widget.set_model("nuclei", "csat")
    return viewer, widget, viewer.layers[0].metadata["mpp"]


def main(slide: str, out: str = "docs/images", model: str | None = None) -> None:
    import timm  # noqa: F401  (before the GL context: triton's LLVM clashes with Mesa's)

    from napari_rckd._widgets.train import TrainWidget

    out = Path(out)
    copy = Path(tempfile.mkdtemp()) / Path(slide).name
    shutil.copy(slide, copy)
    viewer, widget, mpp = open_analyze(copy)
    viewer.scene.camera.center = (1900 * mpp, 1250 * mpp)
    viewer.scene.camera.zoom = 2.5 / mpp
    settle()
    widget.live_box.setChecked(True)
    settle(widget.live.predictor)

    # 1. Correct nuclei here: the model's nuclei as an editable layer; a user's edits
    panel = widget.correct
    panel.correct_here(sync=True)
    layer = panel.layer
    data = np.asarray(layer.data).copy()
    ids, sizes = np.unique(data[data > 0], return_counts=True)
    for label in ids[np.argsort(sizes)[:5]]:  # erase the five smallest "nuclei"
        data[data == label] = 0
    layer.data = data
    settle()
    shoot(viewer, out, "correct-region.png")

    # 2. Save corrections: the dock lists the region with what changed
    panel.save_corrections()
    settle()
    shoot(viewer, out, "correct-saved.png")

    # 3. Suggest regions in the whole slide
    panel.suggest_area.setCurrentIndex(1)
    panel.second.setChecked(False)
    viewer.layers[layer.name].visible = False
    viewer.reset_view()
    panel.suggest_regions(sync=True, top=8)
    settle()
    shoot(viewer, out, "correct-suggest.png")

    # 4. Train student: nuclei from my corrections
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train student", area="right")
    train.nuclei_box.setChecked(True)
    train.out_dir.setText("runs/nuclei-cmu-1")
    train._refresh_layers()
    from qtpy.QtWidgets import QScrollArea

    settle()
    for area in train.findChildren(QScrollArea):  # the form scrolls: show the nuclei box
        area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    settle()
    shoot(viewer, out, "correct-train.png")

    if model:  # 5. the fine-tuned model live at the first region
        viewer.scene.camera.center = (1900 * mpp, 1250 * mpp)
        viewer.scene.camera.zoom = 2.5 / mpp
        widget.set_model("nuclei", model)
        settle(widget.live.predictor)
        shoot(viewer, out, "correct-after.png")
    widget._stop_live()
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
