"""Make docs/images/train.png: a slide with annotations and the Train student widget after a
short real run. Run under a display, e.g. ``xvfb-run -a python docs/make_train_screenshot.py SLIDE``
with a copy of a slide in a writable folder (annotations are saved next to it)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(slide: str, out: str = "docs/images/train.png") -> None:
    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from napari_rckd._widgets.annotate import AnnotateWidget
    from napari_rckd._widgets.train import TrainWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open(slide, plugin="napari-rckd")
    annotate, train = AnnotateWidget(viewer), TrainWidget(viewer)
    viewer.window.add_dock_widget(annotate, name="Annotate slide", area="right")
    viewer.window.add_dock_widget(train, name="Train student", area="right", tabify=True)
    annotate.session.create_layers(viewer.layers[0].name)
    for name, (top, left) in zip(
        ("tumour", "stroma", "normal"), ((300, 250), (1400, 300), (900, 1300)), strict=True
    ):
        annotate.session.choose_class(name)
        annotate.shapes.add_rectangles(np.array([[top, left], [top + 500.0, left + 600.0]]))
    annotate.labels.data[1800:2600, 1200:2000] = 2
    annotate.labels.refresh()

    train.out_dir.setText(tempfile.mkdtemp(prefix="rckd-screenshot-"))
    train.backbone.setCurrentText("resnet18")
    train.tile_size.setValue(64)
    train.tiles.setValue(16)
    train.batch_size.setValue(4)
    train.budget.setValue(12)
    train.device.setCurrentText("cpu")
    train.session.start(train.settings())
    while train.session.running:
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.reset_view()
    QApplication.processEvents()
    image = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(image[..., :3]).quantize(colors=128).save(out, optimize=True)
    print(f"wrote {out} ({Path(out).stat().st_size // 1024} KB)")
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
