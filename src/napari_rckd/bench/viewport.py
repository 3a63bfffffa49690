"""Live viewport inference in a real napari viewer: how soon a pan shows results, how close
that is to the model's own time, and whether napari's event loop ever stalls meanwhile.

Needs a display (run under ``xvfb-run -s "-screen 0 2560x1600x24"`` on a server). The canvas
defaults to 1920×1080 screen pixels at one screen pixel per slide pixel. Every pan is a drag:
the camera moves through ``--path-steps`` positions, one per ``--step-ms``. The rows:

* no plugin layers (baseline): the same drags with only the slide layer, before live analysis;
* warm-up view: live analysis switched on (models loaded, threads started);
* pan to a new view: a region not seen yet, computed tile by tile;
* pan back (re-display): back to the first view, whose results napari slices again from the
  result layers (no tile is planned: they are all done).

A nuclei model that gets a quick preview in Analyze slide (``builtin``, ``learned``) is measured
without it and with it (``--preview both``), each with a fresh predictor and cache; the
``preview complete s`` column is when the preview covers the whole view.

Per row: the first result tile on screen and the complete view, both from the camera's last
move and from the plan (the plan waits for the 120 ms debounce that ends a gesture); the same
model's time for one tile and for the view's tiles at the batch size used, measured in this
run on the windows of that view; ``first_tile_ratio`` (first tile after the plan ÷ one tile
of model time) and ``complete_ratio`` (complete after the plan ÷ the view's model time); and
the UI thread's event-loop gaps from a 10 ms timer (``event_gap_p99_ms``, ``event_gap_max_ms``)
from the first move until the view is complete plus ``--tail-ms``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from napari_rckd.errors import RckdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help="a slide (default: the synthetic sample slide)")
    parser.add_argument(
        "--nuclei", default="auto", help="nuclei model (default: auto, as Analyze slide)"
    )
    parser.add_argument("--width", type=int, default=1920, help="canvas width in screen pixels")
    parser.add_argument("--height", type=int, default=1080, help="canvas height")
    parser.add_argument("--zoom", type=float, default=1.0, help="screen pixels per slide pixel")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per view")
    parser.add_argument("--path-steps", type=int, default=8, help="camera positions per drag")
    parser.add_argument("--step-ms", type=int, default=40, help="ms between drag positions")
    parser.add_argument("--tail-ms", type=int, default=500, help="gaps recorded after a view")
    parser.add_argument(
        "--preview",
        choices=("both", "on", "off"),
        default="both",
        help="the quick csat preview of a slower nuclei model: without it and with it, side by "
        "side (both, the default), or one of them",
    )


def _wait(app, predicate, timeout: float) -> float:
    """Run the Qt event loop until ``predicate()``; returns the time it became true."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise RckdError(f"the view did not complete within {timeout:g} s; raise --timeout.")
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter()


def _idle(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def drag(app, viewer, to_um, steps: int, step_ms: int) -> float:
    """Move the camera to ``to_um`` through ``steps`` positions, ``step_ms`` apart; returns the
    time of the last move."""
    start = np.asarray(viewer.scene.camera.center[-2:], dtype=float)
    for k in range(1, steps + 1):
        if k > 1:
            _idle(app, step_ms / 1000)
        viewer.scene.camera.center = tuple(start + (np.asarray(to_um) - start) * k / steps)
    return time.perf_counter()


class Draws:
    """Counts the canvas's draws: napari slices multiscale layers for a new view as it draws."""

    def __init__(self, viewer) -> None:
        self.count = 0
        viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(self._drawn)

    def _drawn(self, event=None) -> None:
        self.count += 1


def measure_pan(app, live, gaps, center_um, args, draws) -> tuple[dict, list]:
    """Drag to ``center_um`` (None: switch live analysis on where the camera is); time the
    first result on screen, the complete view and the gaps. Returns the row and the plan's
    requests."""
    live.poll()  # nothing left over from the previous view
    gaps.start()
    if center_um is None:
        submitted = live.submitted
        live.set_enabled(True)
        moved = time.perf_counter()
    else:
        moved = drag(app, live.viewer, center_um, args.path_steps, args.step_ms)
        # counted after the last move: a slow frame can let the debounce fire mid-drag, and
        # that plan's tiles are stale once the drag goes on
        submitted = live.submitted
    drawn = draws.count
    _wait(app, lambda: live.submitted > submitted, args.timeout)  # the debounce fired
    planned, requests = live.planned_at, list(live.last_plan.requests)
    wanted = {(r.model, r.row, r.col) for r in requests}
    previews = {key for key in wanted if live.predictor.sources[key[0]].preview_of}
    preview_done = None
    if wanted:
        _wait(app, lambda: (live.last_refresh or 0) > planned, args.timeout)
        first = live.last_refresh
        if previews:
            _wait(app, lambda: _shown(live, previews), args.timeout)
            preview_done = live.last_refresh
        _wait(app, lambda: _settled(live, wanted), args.timeout)
        complete = live.last_refresh
    else:  # re-display: napari slices the result layers again in the draw after the move
        first = complete = _wait(app, lambda: draws.count > drawn, args.timeout)
    _idle(app, args.tail_ms / 1000)
    view, _ = live.current_view()
    row = {
        "view (slide px)": f"{int(view.height)}×{int(view.width)}",
        "tiles computed": len(wanted),
        "first tile s": first - moved,
        "preview complete s": preview_done - moved if preview_done else None,
        "complete s": complete - moved,
    }
    if wanted:
        row["first after plan s"] = first - planned
        row["complete after plan s"] = complete - planned
        row["tiles/s"] = len(wanted) / max(complete - planned, 1e-9)
    return {**row, **gaps.stop()}, requests


def _settled(live, wanted) -> bool:
    """Every wanted tile is computed, and the refresh showing the last one has happened."""
    return _shown(live, wanted) and live.predictor.wait_idle(0)


def _shown(live, wanted) -> bool:
    """Every ``wanted`` tile is computed and drawn (no refresh is waiting)."""
    predictor = live.predictor
    return (
        all(predictor.is_done(*key) for key in wanted)
        and predictor.events.empty()
        and not live.refresh_pending
    )


def model_times(predictor, requests, batch_size: int, repeats: int = 3) -> dict:
    """The model's own time for one tile and for ``requests`` in batches, on windows read first
    (median of ``repeats``): what the live view would cost if reading, writing and drawing
    were free."""
    if not requests:
        return {}
    name = requests[0].model
    source = predictor.sources[name]
    windows = np.stack([predictor._read(name, r) for r in requests])

    def timed(batch_windows) -> float:
        started = time.perf_counter()
        for i in range(0, len(batch_windows), batch_size):
            source.predict(batch_windows[i : i + batch_size])
        return time.perf_counter() - started

    one = statistics.median(timed(windows[:1]) for _ in range(repeats))
    view = statistics.median(timed(windows) for _ in range(repeats))
    return {"model 1 tile s": one, "model view s": view}


def need_display(target: str) -> None:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise RckdError(
            f'bench {target} needs a display; run it as xvfb-run -s "-screen 0 2560x1600x24" '
            f"napari-rckd bench {target} ..."
        )


def slide_viewer(slide, width: int, height: int, zoom: float = 1.0):
    """A shown napari viewer with ``slide`` and a ``width``×``height`` canvas at ``zoom``
    screen pixels per slide pixel; returns (viewer, Qt application, slide layer)."""
    import napari
    import timm  # noqa: F401  (before the GL context: triton's LLVM clashes with Mesa's)
    from qtpy.QtWidgets import QApplication

    from napari_rckd._reader import slide_layer_data

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    data, kwargs, _ = slide_layer_data(slide)
    layer = viewer.add_image(data, **kwargs)
    _fit_canvas(app, viewer, width, height)
    viewer.scene.camera.zoom = zoom / slide.mpp
    return viewer, app, layer


def run(args: argparse.Namespace) -> int:
    need_display("viewport")
    from napari_rckd.bench.event_gaps import EventGaps
    from napari_rckd.devices import resolve_device
    from napari_rckd.inference.analysis import Analysis
    from napari_rckd.inference.nuclei_choice import choose_nuclei
    from napari_rckd.io import open_slide
    from napari_rckd.io.samples import synthetic_sample_path
    from napari_rckd.report import report

    device = resolve_device(args.device)
    slide = open_slide(args.slide or synthetic_sample_path())
    if slide.mpp is None:
        raise RckdError(f"{slide.path.name} records no pixel size; pick a slide that does.")
    nuclei, _ = choose_nuclei(args.nuclei, device)
    analysis = Analysis(slide, {"nuclei": nuclei}, device, batch_size=args.batch_size)
    previews = {"off": [False], "on": [True], "both": [False, True]}[args.preview]
    if analysis.preview_source() is None:
        previews = [False]  # this model needs no preview
    viewer, app, layer = slide_viewer(slide, args.width, args.height, args.zoom)
    height_um, width_um = slide.shape[0] * slide.mpp, slide.shape[1] * slide.mpp
    view_h = args.height / args.zoom * slide.mpp
    first = (min(view_h, height_um) / 2, width_um / 2)
    second = (max(height_um - view_h / 2, first[0]), width_um / 2)
    viewer.scene.camera.center = first
    _idle(app, 0.5)
    gaps, draws = EventGaps(), Draws(viewer)
    gaps.start()
    for to in (second, first):
        drag(app, viewer, to, args.path_steps, args.step_ms)
        _idle(app, args.tail_ms / 1000)
    baseline = {"step": "no plugin layers (baseline)", **gaps.stop()}
    rows = []
    for preview in previews:  # a fresh predictor and cache each: every view is computed anew
        rows += _pans(app, viewer, layer, analysis, gaps, draws, (first, second), args, preview)
    rows.append(baseline)  # measured first, listed last: the table's columns follow row 1
    canvas_h, canvas_w = viewer.canvas.size
    gaps.close()
    viewer.close()
    report(
        f"Live viewport inference on {slide.path.name} ({device}, canvas {canvas_w}×{canvas_h} "
        f"screen px, {args.zoom:g} screen px per slide px, nuclei {nuclei}, "
        f"batch {args.batch_size}, drags of {args.path_steps} × {args.step_ms} ms)",
        rows,
        args.json,
        canvas=[int(canvas_w), int(canvas_h)],
    )
    return 0


def _pans(app, viewer, layer, analysis, gaps, draws, views, args, preview: bool) -> list[dict]:
    """Live analysis switched on at the first view, a pan to the second and back."""
    from napari_rckd._widgets.live import LiveAnalysis
    from napari_rckd.inference.cache import ResultCache

    analysis.cache = ResultCache()
    live = LiveAnalysis(viewer, layer, analysis.live(preview=preview))
    first, second = views
    steps = (("warm-up view", None), ("pan to a new view", second))
    steps += (("pan back (re-display)", first),)
    rows = []
    for name, at in steps:
        row, requests = measure_pan(app, live, gaps, at, args, draws)
        exact = [r for r in requests if not live.predictor.sources[r.model].preview_of]
        row = {"step": name, "preview": preview, **row}
        row.update(model_times(live.predictor, exact, args.batch_size))
        if exact:
            row["first_tile_ratio"] = row["first after plan s"] / row["model 1 tile s"]
            row["complete_ratio"] = row["complete after plan s"] / row["model view s"]
        rows.append(row)
    live.close(remove_layers=True)
    return rows


def _fit_canvas(app, viewer, width: int, height: int) -> None:
    """Grow the window until the canvas is ``width`` × ``height`` screen pixels."""
    window = viewer.window._qt_window
    window.resize(width + 400, height + 200)
    canvas = viewer.window._qt_viewer.canvas.native
    for _ in range(20):
        app.processEvents()
        dw, dh = width - canvas.width(), height - canvas.height()
        if dw == 0 and dh == 0:
            break
        window.resize(window.width() + dw, window.height() + dh)
