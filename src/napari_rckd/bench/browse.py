"""An afternoon of browsing in minutes: does live analysis stay within its memory budget?

Opens a large slide (default: the 16,384² synthetic slide, seed 1) in a real napari viewer
with live nuclei on, as *Analyze slide* runs them (`Analysis.live`), and jumps the camera to
``--views`` places one after another at one screen pixel per slide pixel, waiting each time
until the view is complete. Places are the slide's 1080p views that hold tissue, visited in a
serpentine; when they run out the walk starts again, and views evicted since are computed
anew. Rows at a few view counts: the process's RSS and its growth since live analysis
started, the bytes of the result layers and of the result cache against their budgets.

Needs a display (``xvfb-run -s "-screen 0 2560x1600x24"`` on a server).
"""

from __future__ import annotations

import argparse

from napari_rckd.errors import RckdError

REPORT_AT = (1, 5, 10, 25, 50, 75, 100, 150, 200)
SIZE = 16384


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help=f"a slide (default: the {SIZE}² synthetic one)")
    parser.add_argument(
        "--nuclei",
        default="classical",
        help="nuclei model (default classical: 100 views of builtin take an hour on a CPU)",
    )
    parser.add_argument("--views", type=int, default=100, help="views computed (default 100)")
    parser.add_argument("--width", type=int, default=1920, help="canvas width in screen pixels")
    parser.add_argument("--height", type=int, default=1080, help="canvas height")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per view")


def view_centres(slide, tissue, width: int, height: int) -> list[tuple[float, float]]:
    """Centres (level-0 px) of the non-overlapping ``width``×``height`` views holding tissue,
    row by row, alternate rows reversed (a serpentine: each jump is to a neighbour)."""
    centres = []
    rows = range(0, slide.shape[0] - height + 1, height)
    for index, y in enumerate(rows):
        xs = list(range(0, slide.shape[1] - width + 1, width))
        for x in reversed(xs) if index % 2 else xs:
            if tissue.fraction(y, x, height, width) >= 0.2:
                centres.append((y + height / 2, x + width / 2))
    if not centres:
        raise RckdError(f"{slide.path.name} has no {width}×{height} view with tissue to browse.")
    return centres


def _traced() -> dict:
    """Python's own allocations, when run with PYTHONTRACEMALLOC=1: RSS growth beyond them is
    native memory (Qt, OpenGL, the C allocator's arenas)."""
    import tracemalloc

    if not tracemalloc.is_tracing():
        return {}
    return {"Python-traced MB": round(tracemalloc.get_traced_memory()[0] / 2**20)}


def run(args: argparse.Namespace) -> int:
    import psutil

    from napari_rckd._widgets.live import LiveAnalysis
    from napari_rckd.bench.viewport import _idle, _settled, _wait, need_display, slide_viewer

    need_display("browse")
    from napari_rckd.devices import resolve_device
    from napari_rckd.inference.analysis import Analysis
    from napari_rckd.io import open_slide
    from napari_rckd.io.samples import synthetic_slide_path
    from napari_rckd.report import report

    device = resolve_device(args.device)
    slide = open_slide(args.slide or synthetic_slide_path(SIZE, 1))
    if slide.mpp is None:
        raise RckdError(f"{slide.path.name} records no pixel size; pick a slide that does.")
    analysis = Analysis(slide, {"nuclei": args.nuclei}, device)
    centres = view_centres(slide, analysis.tissue, args.width, args.height)
    viewer, app, layer = slide_viewer(slide, args.width, args.height)  # 1 screen px per px
    viewer.scene.camera.center = (0.0, 0.0)  # the corner: each place after is a camera move
    _idle(app, 0.5)
    process = psutil.Process()
    predictor = analysis.live()
    live = LiveAnalysis(viewer, layer, predictor)
    start_rss = process.memory_info().rss
    rows, computed, visited = [], 0, 0
    live.set_enabled(True)
    while computed < args.views:
        centre = centres[visited % len(centres)]
        visited += 1
        submitted = live.submitted
        viewer.scene.camera.center = tuple(c * slide.mpp for c in centre)
        _wait(app, lambda: live.submitted > submitted, args.timeout)  # noqa: B023  (the debounce)
        wanted = {(r.model, r.row, r.col) for r in live.last_plan.requests}
        if not wanted:
            continue  # all still in memory: shown again, nothing computed
        _wait(app, lambda: _settled(live, wanted), args.timeout)  # noqa: B023
        computed += 1
        if computed in REPORT_AT or computed == args.views:
            rss = process.memory_info().rss
            rows.append(
                {
                    "views computed": computed,
                    "places visited": visited,
                    "RSS MB": round(rss / 2**20),
                    "RSS growth MB": round((rss - start_rss) / 2**20),
                    "result layers MB": round(predictor.results_nbytes / 2**20),
                    "result cache MB": round(predictor.cache.nbytes / 2**20),
                    **_traced(),
                }
            )
    budget_mb = (predictor.memory_budget + predictor.cache.max_bytes) / 2**20
    live.close(remove_layers=True)
    viewer.close()
    report(
        f"Browsing {slide.path.name} live ({args.nuclei} on {device}, "
        f"{args.width}×{args.height} views at 1 screen px per slide px, {len(centres)} places)",
        rows,
        args.json,
        budget_mb=f"{budget_mb:.0f} (result layers {predictor.memory_budget / 2**20:.0f} + "
        f"cache {predictor.cache.max_bytes / 2**20:.0f})",
        max_rss_growth_mb=max(row["RSS growth MB"] for row in rows),
    )
    return 0
