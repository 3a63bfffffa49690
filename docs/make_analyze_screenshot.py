"""Make docs/images/analyze.png: CMU-1-Small-Region with live nuclei from the built-in teacher
and the Analyze slide widget. Run under a display, e.g.
``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_analyze_screenshot.py SLIDE``.
``... SLIDE OUT NUCLEI canvas`` shoots only the canvas with another nuclei model
(make_nuclei_comparison.py puts two side by side)."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(
    slide: str, out: str = "docs/images/analyze.png", nuclei: str = "auto", part: str = "window"
) -> None:
    import napari
    import timm  # noqa: F401  (before the GL context: triton's LLVM clashes with Mesa's)
    from PIL import Image
    from qtpy.QtWidgets import QApplication, QWidget

    from napari_rckd._widgets.analyze import AnalyzeWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open(slide, plugin="napari-rckd")
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze slide", area="right")
    widget.set_model("nuclei", nuclei)
    mpp = viewer.layers[0].metadata["mpp"]
    viewer.scene.camera.center = (1900 * mpp, 1250 * mpp)
    viewer.scene.camera.zoom = 1.5 / mpp  # 1.5 screen pixels per slide pixel
    QApplication.processEvents()
    widget.live_box.setChecked(True)
    predictor = widget.live.predictor
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        predictor.tiles_done("nuclei") and predictor.wait_idle(0)
    ):
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(10):  # the last refresh and a status line update
        QApplication.processEvents()
        time.sleep(0.05)
    for toast in viewer.window._qt_window.findChildren(QWidget):  # start-up notices
        if type(toast).__name__ == "NapariQtNotification":
            toast.hide()
    image = viewer.screenshot(canvas_only=part == "canvas", flash=False)
    Image.fromarray(image[..., :3]).quantize(colors=64).save(out, optimize=True)
    print(f"wrote {out} ({Path(out).stat().st_size // 1024} KB)")
    widget._stop_live()
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
