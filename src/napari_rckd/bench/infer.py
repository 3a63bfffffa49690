"""Inference: model-only vs full-pipeline tiles/s on a slide, peak RSS of whole-slide runs on two
sparse synthetic sizes, and the naive way (level 0 into numpy, tile, predict) side by side.

Without --checkpoint a dense CSAT with random weights is used (said in the output): speed and
memory do not depend on the weights. Each whole-slide run happens in a fresh process so its peak
RSS is its own. Time to the first visible tile and to a full viewport need the napari glue and are
not measured here.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

from napari_rckd.errors import RckdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help="a slide (default: the synthetic sample slide)")
    parser.add_argument("--checkpoint", help="a dense .safetensors model (default: random CSAT)")
    parser.add_argument("--tiles", type=int, default=32, help="tiles for the throughput test")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--mpp", type=float, default=2.0, help="model µm/px (random model only)")
    parser.add_argument(
        "--sizes", default="20000,40000", help="sparse synthetic slide sides for the RSS test"
    )
    parser.add_argument(
        "--wsi-mpp", type=float, default=4.0, help="model µm/px of the whole-slide runs"
    )
    parser.add_argument("--device", default="auto")


def _source(args, folder: str, mpp: float):
    from napari_rckd.inference.sources import RegionSource

    if args.checkpoint:
        return RegionSource(args.checkpoint, args.device)
    from napari_rckd.models import ModelConfig, create_model, save_checkpoint

    path = Path(folder) / f"random-{mpp:g}.safetensors"
    config = ModelConfig(task="dense", num_outputs=2, input_mpp=mpp, tile_size=256)
    save_checkpoint(path, create_model(config), {"note": "random weights for benchmarking"})
    return RegionSource(path, args.device)


def throughput(args, slide, folder: str) -> dict:
    """Model-only and full-pipeline tiles/s over the same tiles, batches, threads and runner.

    Model-only runs on windows read beforehand; the pipeline reads, predicts, stitches, writes
    and rebuilds the pyramid. Model-only is timed before and after the pipeline and averaged,
    so a load change on a shared machine hits both sides alike. A small slide's tissue tiles
    are used again in fresh predictors (new stores, empty caches) until ``--tiles`` are done.
    """
    import numpy as np
    import torch

    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.scheduler import TileRequest
    from napari_rckd.inference.wholeslide import tissue_tiles
    from napari_rckd.io.tissue import detect_tissue

    source = _source(args, folder, args.mpp)
    tissue = detect_tissue(slide)

    def predictor():
        return Predictor(slide, [source], batch_size=args.batch_size)

    with predictor() as first:
        tiles = tissue_tiles(first, tissue)
        windows = [first._read(source.name, TileRequest(*t, 0, 0.0)) for t in tiles]
    passes = -(-args.tiles // len(tiles))
    windows = np.stack((windows * passes)[: args.tiles])

    def model_only() -> float:
        started = time.perf_counter()
        for i in range(0, len(windows), args.batch_size):
            source.runner(windows[i : i + args.batch_size])
        return time.perf_counter() - started

    with predictor() as warm:  # first calls: model, zarr, reader threads
        warm.compute(tiles[: args.batch_size])
    before = model_only()
    predictors = [predictor() for _ in range(passes)]
    started, left = time.perf_counter(), args.tiles
    for each in predictors:
        with each:
            left -= each.compute(tiles[:left])
    pipeline = time.perf_counter() - started
    after = model_only()
    model_rate = len(windows) / ((before + after) / 2)
    pipeline_rate = len(windows) / pipeline
    return dict(
        tiles=len(windows),
        distinct_tiles=len(tiles),
        torch_threads=torch.get_num_threads(),
        model_tiles_per_s=model_rate,
        model_spread=abs(before - after) / max(before, after),
        pipeline_tiles_per_s=pipeline_rate,
        ratio=pipeline_rate / model_rate,
    )


def _whole_slide_child(args, path, naive, folder, queue) -> None:
    import resource

    import numpy as np

    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.store import open_root
    from napari_rckd.inference.wholeslide import run_whole_slide, tissue_tiles
    from napari_rckd.io import open_slide
    from napari_rckd.io.tissue import detect_tissue

    source = _source(args, folder, args.wsi_mpp)
    started = time.perf_counter()
    with open_slide(path) as slide:
        tissue = detect_tissue(slide)
        if naive:  # the whole level 0 in memory, then tile it and predict every tissue tile
            level0 = np.asarray(slide.levels[0])
            predictor = Predictor(slide, [source], batch_size=args.batch_size)
            grid = predictor.grids["region"]
            f, size = grid.level0_per_px, int(source.window * grid.level0_per_px)
            for _, row, col in tissue_tiles(predictor, tissue):
                y, x = (max(0, int(v)) for v in grid.window_level0(row, col))
                crop = level0[y : y + size : round(f), x : x + size : round(f)]
                window = np.full((source.window, source.window, 3), 255, np.uint8)
                window[: crop.shape[0], : crop.shape[1]] = crop[: source.window, : source.window]
                source.runner(window[None])
            count = len(tissue_tiles(predictor, tissue))
        else:
            with tempfile.TemporaryDirectory() as out:
                predictor = Predictor(slide, [source], open_root(out), batch_size=args.batch_size)
                with predictor:
                    count = list(run_whole_slide(predictor, tissue))[-1].done
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(dict(tiles=count, seconds=seconds, peak_rss_mb=peak_mb))


def _in_child(args, path, naive, folder) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_whole_slide_child, args=(args, path, naive, folder, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RckdError(f"the whole-slide benchmark process failed (exit code {child.exitcode}).")
    return queue.get(timeout=10)


def run(args: argparse.Namespace) -> int:
    from napari_rckd.bench.read import write_sparse_slide
    from napari_rckd.io import open_slide
    from napari_rckd.io.samples import synthetic_sample_path
    from napari_rckd.report import report

    path = Path(args.slide) if args.slide else synthetic_sample_path()
    with tempfile.TemporaryDirectory() as tmp:
        with open_slide(path) as slide:
            speed = throughput(args, slide, tmp)
        model = "checkpoint" if args.checkpoint else "random-weight rckd_csat (no checkpoint given)"
        rows = [dict(test=f"throughput on {path.name}", **speed)]
        sizes = [int(s) for s in args.sizes.split(",") if s]
        for index, size in enumerate(sizes):
            sparse, _ = write_sparse_slide(Path(tmp) / f"sparse{size}.tif", size)
            rows.append(
                dict(test=f"whole slide {size}² sparse", **_in_child(args, sparse, False, tmp))
            )
            if index == 0:
                rows.append(
                    dict(
                        test=f"naive {size}² (level 0 in RAM)", **_in_child(args, sparse, True, tmp)
                    )
                )
    report(
        "Inference: throughput, whole-slide memory, naive comparison", rows, args.json, model=model
    )
    return 0
