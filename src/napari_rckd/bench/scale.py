"""Whole slides at growing sizes: does every step of `predict` cost in proportion to the slide?

The synthetic slide (seed 1, 0.5 µm/px) at each ``--sizes`` (generated once into the sample
cache: minutes for 64k px), `predict`'s whole-slide run end to end with a fast model
(``--nuclei classical``) in a fresh process per size, so each peak RSS is its own. Per size:

* tiles and tiles/s of the predict part (reads, model, stitching, pyramid), the model's share
  of it and the rest per tile (``cpu_side_ms_per_tile``: what a GPU would not make faster),
  and tissue detection;
* the nuclei GeoJSON + CSV, written in one stream beside the model: the exporter thread's
  seconds per 1,000 nuclei, and what is left after the last tile (``export_tail_s``);
* OME-TIFF of the nuclei labels after the run, seconds per 1,000 nuclei;
* ``whole ÷ predict``: the whole run (with the streamed export) over the predict part;
* peak RSS of the run; and, with a display (``xvfb-run`` on a server), the time to open the
  results in napari and show the nuclei at full zoom, in another fresh process.

The summary divides the largest size's figures by the smallest's: linear cost keeps tiles/s
and seconds per 1,000 nuclei within 1.2×, flat memory keeps peak RSS within 1.2×.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from napari_rckd.errors import RckdError

SEED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default="4096,16384,65536",
        help="slide sides in px at 0.5 µm/px, comma-separated (default 4096,16384,65536)",
    )
    parser.add_argument("--nuclei", default="classical", help="nuclei model (default classical)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--no-napari", action="store_true", help="skip opening the results in napari"
    )


def run(args: argparse.Namespace) -> int:
    from napari_rckd.io.samples import synthetic_slide_path
    from napari_rckd.report import report

    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as error:
        raise RckdError(f"--sizes {args.sizes!r} is not a list of integers: {error}.") from error
    rows = []
    for size in sizes:
        started = time.perf_counter()
        path = synthetic_slide_path(size, SEED)
        print(f"{size}² slide ready in {time.perf_counter() - started:.0f} s: {path.name}")
        with tempfile.TemporaryDirectory(prefix="rckd-scale-") as out:
            row = _in_child(_predict_child, args.nuclei, args.batch_size, str(path), out)
            if not args.no_napari:
                row.update(_napari_row(Path(out) / "slide.zarr", str(path)))
        rows.append(dict(side_px=size, **row))
    report("Whole slides at growing sizes (predict end to end)", rows, args.json, **_summary(rows))
    return 0


def _napari_row(results: Path, slide: str) -> dict:
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        return {"napari_open_s": "no display"}
    return _in_child(_napari_child, str(results), slide)


def _summary(rows: list[dict]) -> dict:
    """Largest ÷ smallest size for the figures that must not grow with the slide."""
    if len(rows) < 2:
        return {}
    small, large = rows[0], rows[-1]
    keys = ("tiles_per_s", "nuclei_export_s_per_1k", "ome_tiff_s_per_1k", "peak_rss_mb")
    ratios = {k: round(large[k] / small[k], 2) for k in keys if small.get(k)}
    worst = max(row["whole_over_predict"] for row in rows)
    return {"largest ÷ smallest": ratios, "whole ÷ predict, worst size": worst}


def _predict_child(model: str, batch_size: int, path: str, out: str, queue) -> None:
    """One size: tissue, the whole-slide run with streamed nuclei exports, then OME-TIFF."""
    import resource

    from napari_rckd.inference.analysis import Analysis
    from napari_rckd.inference.export import export_ome_tiff
    from napari_rckd.io import open_slide

    with open_slide(path) as slide:
        analysis = Analysis(slide, {"nuclei": model}, batch_size=batch_size)
        model_s = _time_calls(analysis.sources[0], "predict")
        started = time.perf_counter()
        analysis.tissue  # noqa: B018  (detected once here, so it is timed on its own)
        tissue_s = time.perf_counter() - started
        stem = Path(out) / "slide"
        for _ in analysis.run_whole_slide(
            f"{stem}.zarr", exports_stem=stem, exports=["geojson", "csv"]
        ):
            pass
        figures = analysis.last_run
        started = time.perf_counter()
        export_ome_tiff(f"{stem}.nuclei.ome.tif", analysis.results.stores["nuclei_labels"])
        ome_s = time.perf_counter() - started
    per_1k = 1000 / max(1, figures["nuclei"])
    queue.put(
        dict(
            tiles=figures["tiles"],
            nuclei=figures["nuclei"],
            tissue_s=round(tissue_s, 1),
            predict_s=round(figures["predict_s"], 1),
            tiles_per_s=round(figures["tiles"] / figures["predict_s"], 2),
            model_share=round(model_s[0] / figures["predict_s"], 3),
            cpu_side_ms_per_tile=round(
                1000 * (figures["predict_s"] - model_s[0]) / figures["tiles"], 1
            ),
            nuclei_export_s_per_1k=round(figures["nuclei_export_thread_s"] * per_1k, 3),
            export_tail_s=round(figures["nuclei_export_tail_s"], 1),
            whole_s=round(figures["whole_s"], 1),
            whole_over_predict=round(figures["whole_s"] / figures["predict_s"], 3),
            geojson_mb=round(Path(f"{stem}.nuclei.geojson").stat().st_size / 2**20, 1),
            ome_tiff_s=round(ome_s, 1),
            ome_tiff_s_per_1k=round(ome_s * per_1k, 3),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        )
    )


def _time_calls(instance, method: str) -> list[float]:
    """Wrap ``instance.method`` to add its seconds to the returned one-item list."""
    spent, original = [0.0], getattr(instance, method)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    setattr(instance, method, timed)
    return spent


def _napari_child(results: str, slide_path: str, queue) -> None:
    """Open the results over the slide in a napari viewer and draw the nuclei at full zoom."""
    import resource

    import napari

    from napari_rckd._reader import read_slides
    from napari_rckd._widgets.result_layers import add_result_layers
    from napari_rckd.inference.wholeslide import open_results

    viewer = napari.Viewer(show=False)
    viewer.window.resize(1920, 1080)
    started = time.perf_counter()
    data, kwargs, _ = read_slides(slide_path)[0]
    viewer.add_image(data, **kwargs)
    layers = add_result_layers(viewer, open_results(results), {}, "results")
    nuclei = layers["nuclei_labels"]
    height, width = nuclei.level_shapes[0]
    scale = nuclei.scale[-1]
    viewer.camera.center = (height * scale / 2, width * scale / 2)
    viewer.camera.zoom = 1 / scale  # one screen pixel per label pixel
    viewer.screenshot(canvas_only=True)  # returns once the canvas has drawn the view
    seconds = time.perf_counter() - started
    viewer.close()
    queue.put(
        dict(
            napari_open_s=round(seconds, 2),
            napari_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        )
    )


def _in_child(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=target, args=(*args, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RckdError(
            f"the scale benchmark's {target.__name__} process failed (exit code {child.exitcode})."
        )
    return queue.get(timeout=10)
