"""`bench infer`'s memory rows: whole-slide runs in fresh processes (so each peak RSS is its own)
at several tile counts and slide sizes, and the naive way side by side."""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from pathlib import Path

from napari_rckd.errors import RckdError


def whole_slide_rows(args, sizes: list[int], tile_counts: list[int | None], folder: str) -> list:
    """Ours at each of ``tile_counts`` on the first size and every tile of the others, then the
    naive way on the first size."""
    from napari_rckd.bench.read import write_sparse_slide

    rows = []
    for index, size in enumerate(sizes):
        sparse, _ = write_sparse_slide(Path(folder) / f"sparse{size}.tif", size)
        for limit in tile_counts if index == 0 else [None]:
            label = f"whole slide {size}² sparse" + (f", stop at {limit} tiles" if limit else "")
            rows.append(dict(test=label, **_in_child(args, sparse, False, limit, folder)))
        if index == 0:
            naive = _in_child(args, sparse, True, None, folder)
            rows.append(dict(test=f"naive {size}² (level 0 in RAM)", **naive))
    return rows


def _naive(slide, source, tiles, predictor, batch_size: int) -> int:
    """The whole level 0 in memory, then every tissue tile cut from it and predicted in
    batches of ``batch_size``, as a script without a tiled reader would."""
    import numpy as np

    level0 = np.asarray(slide.levels[0])
    grid = predictor.grids[source.name]
    f, size = grid.level0_per_px, int(source.window * grid.level0_per_px)
    batch = []
    for index, (_, row, col) in enumerate(tiles):
        y, x = (max(0, int(v)) for v in grid.window_level0(row, col))
        crop = level0[y : y + size : round(f), x : x + size : round(f)]
        window = np.full((source.window, source.window, 3), 255, np.uint8)
        window[: crop.shape[0], : crop.shape[1]] = crop[: source.window, : source.window]
        batch.append(window)
        if len(batch) == batch_size or index == len(tiles) - 1:
            source.runner(np.stack(batch))
            batch = []
    return len(tiles)


def _ours(slide, source, tissue, batch_size: int, limit: int | None) -> int:
    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.store import open_root
    from napari_rckd.inference.wholeslide import run_whole_slide

    done = 0
    with (
        tempfile.TemporaryDirectory() as out,
        Predictor(slide, [source], open_root(out), batch_size=batch_size) as predictor,
    ):
        for progress in run_whole_slide(predictor, tissue):
            done = progress.done
            if limit and done >= limit:
                break
    return done


def _whole_slide_child(args, path, naive, limit, folder, queue) -> None:
    import resource

    from napari_rckd.bench.infer_model import model_source
    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.wholeslide import tissue_tiles
    from napari_rckd.io import open_slide
    from napari_rckd.io.tissue import detect_tissue

    source = model_source(args, folder, args.wsi_mpp)
    started = time.perf_counter()
    with open_slide(path) as slide:
        detecting = time.perf_counter()
        tissue = detect_tissue(slide)
        detect_s = time.perf_counter() - detecting
        if naive:
            predictor = Predictor(slide, [source], batch_size=args.batch_size)
            tiles = tissue_tiles(predictor, tissue)
            count = _naive(slide, source, tiles, predictor, args.batch_size)
        else:
            count = _ours(slide, source, tissue, args.batch_size, limit)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(dict(tiles=count, seconds=seconds, detect_s=detect_s, peak_rss_mb=peak_mb))


def _in_child(args, path, naive: bool, limit: int | None, folder: str) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(
        target=_whole_slide_child, args=(args, path, naive, limit, folder, queue)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RckdError(f"the whole-slide benchmark process failed (exit code {child.exitcode}).")
    return queue.get(timeout=10)
