"""Live viewport inference in a real napari viewer: time from a pan to the first visible tile and
to a complete view (by default a 1920×1080-pixel canvas at one screen pixel per slide pixel).

Needs a display (run under ``xvfb-run -s "-screen 0 2560x1600x24"`` on a server). The viewer
starts on one region, analyses it completely (warm-up: models loaded, threads started), then
pans to a region it has not seen, and finally back to the first one (served from the result
cache). Times are wall-clock from setting the camera, through the debounce, the worker and the
layer refresh on the UI thread.
"""

from __future__ import annotations

import argparse
import os
import time

from napari_rckd.errors import RckdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help="a slide (default: the synthetic sample slide)")
    parser.add_argument("--nuclei", default="builtin", help="nuclei model (default: builtin)")
    parser.add_argument("--width", type=int, default=1920, help="canvas width in screen pixels")
    parser.add_argument("--height", type=int, default=1080, help="canvas height")
    parser.add_argument("--zoom", type=float, default=1.0, help="screen pixels per slide pixel")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per view")


def _wait(app, predicate, timeout: float) -> float:
    """Run the Qt event loop until ``predicate()``; returns the time it became true."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise RckdError(f"the view did not complete within {timeout:g} s; raise --timeout.")
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter()


def measure_pan(app, live, center_um, timeout: float) -> dict:
    """Pan to ``center_um`` and time the first refreshed tile and the complete view."""
    live.poll()  # nothing left over from the previous view
    submitted, refreshed = live.submitted, live.last_refresh
    started = time.perf_counter()
    live.viewer.scene.camera.center = center_um
    _wait(app, lambda: live.submitted > submitted, timeout)
    wanted = {(r.model, r.row, r.col) for r in live.last_plan.requests}
    first = _wait(app, lambda: live.last_refresh != refreshed or not wanted, timeout)
    first = live.last_refresh if wanted else first
    complete = _wait(
        app,
        lambda: all(live.predictor.is_done(*key) for key in wanted) and live.predictor.wait_idle(0),
        timeout,
    )
    view, _ = live.current_view()
    return {
        "view (slide px)": f"{int(view.height)}×{int(view.width)}",
        "tiles computed": len(wanted),
        "first tile s": first - started,
        "complete s": complete - started,
        "tiles/s": len(wanted) / max(complete - started, 1e-9),
    }


def run(args: argparse.Namespace) -> int:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise RckdError(
            'bench viewport needs a display; run it as xvfb-run -s "-screen 0 2560x1600x24" '
            "napari-rckd bench viewport ..."
        )
    import napari
    import timm  # noqa: F401  (before the GL context: triton's LLVM clashes with Mesa's)
    from qtpy.QtWidgets import QApplication

    from napari_rckd._reader import slide_layer_data
    from napari_rckd._widgets.live import LiveAnalysis
    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.runner import resolve_device
    from napari_rckd.inference.sources import NucleiSource
    from napari_rckd.io import open_slide
    from napari_rckd.io.samples import synthetic_sample_path
    from napari_rckd.io.tissue import detect_tissue
    from napari_rckd.report import report

    device = resolve_device(args.device)
    slide = open_slide(args.slide or synthetic_sample_path())
    if slide.mpp is None:
        raise RckdError(f"{slide.path.name} records no pixel size; pick a slide that does.")
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    data, kwargs, _ = slide_layer_data(slide)
    layer = viewer.add_image(data, **kwargs)
    window = viewer.window._qt_window
    window.resize(args.width + 400, args.height + 200)
    canvas = viewer.window._qt_viewer.canvas.native  # grow the window until the canvas fits
    for _ in range(20):
        app.processEvents()
        dw, dh = args.width - canvas.width(), args.height - canvas.height()
        if dw == 0 and dh == 0:
            break
        window.resize(window.width() + dw, window.height() + dh)
    viewer.scene.camera.zoom = args.zoom / slide.mpp
    height_um, width_um = slide.shape[0] * slide.mpp, slide.shape[1] * slide.mpp
    view_h = args.height / args.zoom * slide.mpp
    first = (min(view_h, height_um) / 2, width_um / 2)
    second = (max(height_um - view_h / 2, first[0]), width_um / 2)
    viewer.scene.camera.center = (height_um / 2, width_um / 2)
    predictor = Predictor(
        slide,
        [NucleiSource(args.nuclei, device)],
        tissue=detect_tissue(slide, slide.path.name),
        batch_size=args.batch_size,
    )
    live = LiveAnalysis(viewer, layer, predictor)
    live.set_enabled(True)
    steps = (("warm-up view", first), ("pan to a new view", second), ("pan back (cached)", first))
    rows = [{"step": name, **measure_pan(app, live, at, args.timeout)} for name, at in steps]
    canvas_h, canvas_w = viewer.canvas.size
    live.close(remove_layers=True)
    viewer.close()
    report(
        f"Live viewport inference on {slide.path.name} ({device}, canvas {canvas_w}×{canvas_h} "
        f"screen px, {args.zoom:g} screen px per slide px, nuclei {args.nuclei}, "
        f"batch {args.batch_size})",
        rows,
        args.json,
        canvas=[int(canvas_w), int(canvas_h)],
    )
    return 0
