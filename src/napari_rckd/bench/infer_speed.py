"""`bench infer`'s throughput rows: model-only vs pipeline tiles/s over the same tiles, batches,
threads and runner, with and without tissue detection, as the median of several rounds."""

from __future__ import annotations

import statistics
import time

from napari_rckd.bench.infer_model import model_label, model_source


def throughput(args, slide, folder: str, tiling: str, checkpoint: str | None) -> list[dict]:
    """Two rows: the pipeline alone, and the pipeline with the slide's tissue detection.

    Rows also give the window and its core (px at the model's mpp) and the output pixels per
    second: a dense model writes only the core of each window, so larger windows around the
    same halo give more output per second although fewer windows.

    Model-only runs on windows read beforehand; the pipeline reads (cold: the slide's tile
    cache is cleared first), predicts, stitches, writes and rebuilds the pyramid. Rounds are
    interleaved (model, then per round pipeline, detection, model) and each round's ratio uses
    the mean of the model passes either side of it, so a load change on a shared machine hits
    both sides alike. A small slide's tissue tiles are used again in fresh predictors (new
    stores, empty caches) until ``--tiles`` are done; each such pass over the slide pays one
    tissue detection in the second row.
    """
    import numpy as np

    from napari_rckd.inference.predictor import Predictor
    from napari_rckd.inference.scheduler import TileRequest
    from napari_rckd.inference.wholeslide import tissue_tiles
    from napari_rckd.io.tissue import clear_tissue_cache, detect_tissue

    source = model_source(args, folder, args.mpp, tiling, checkpoint)

    def predictor():
        return Predictor(slide, [source], batch_size=args.batch_size)

    with predictor() as first:
        tiles = tissue_tiles(first, detect_tissue(slide, slide.path.name))
        windows = [first._read(source.name, TileRequest(*t, 0, 0.0)) for t in tiles]
    passes = -(-args.tiles // len(tiles))
    windows = np.stack((windows * passes)[: args.tiles])
    count = len(windows)

    def model_only() -> float:
        started = time.perf_counter()
        for i in range(0, count, args.batch_size):
            source.runner(windows[i : i + args.batch_size])
        return time.perf_counter() - started

    def pipeline() -> float:
        predictors = [predictor() for _ in range(passes)]
        started, left = time.perf_counter(), count
        for each in predictors:
            slide.clear_cache()  # every pass decodes its tiles again
            with each:
                left -= each.compute(tiles[:left])
        return time.perf_counter() - started

    def detection() -> float:
        clear_tissue_cache()
        slide.clear_cache()
        started = time.perf_counter()
        detect_tissue(slide, slide.path.name)
        return time.perf_counter() - started

    with predictor() as warm:  # first calls: model, zarr, reader threads
        warm.compute(tiles[: args.batch_size])
    models = [model_only()]
    rounds = []
    for _ in range(max(1, args.repeats)):
        piped, detect = pipeline(), detection()
        models.append(model_only())
        rounds.append((piped, detect, (models[-2] + models[-1]) / 2))
    shared = dict(
        model=model_label(checkpoint),
        windows=tiling,
        window_px=source.window,
        core_px=source.core,
        tiles=count,
        distinct_tiles=len(tiles),
        repeats=len(rounds),
    )
    slide_passes = count / len(tiles)  # whole-slide passes the pipeline made, each one detection
    return _throughput_rows(slide.path.name, shared, rounds, source.core, slide_passes)


def _throughput_rows(slide_name, shared: dict, rounds, core: int, slide_passes: float) -> list:
    """The two rows of `throughput` from its rounds of (pipeline, detection, model) seconds."""
    import torch

    count = shared["tiles"]
    model_s = statistics.median(m for _, _, m in rounds)
    alone = [(piped, model) for piped, _, model in rounds]
    output = [count * core**2 / 1e6 / piped for piped, _ in alone]
    with_detection = [(piped + detect * slide_passes, model) for piped, detect, model in rounds]
    return [
        dict(
            test=f"throughput on {slide_name} (tile cache cleared)",
            **shared,
            torch_threads=torch.get_num_threads(),
            model_tiles_per_s=count / model_s,
            **_rates(alone, count),
            output_mpx_per_s=statistics.median(output),
            output_mpx_per_s_rounds=output,
        ),
        dict(
            test="same, with tissue detection per pass",
            **shared,
            model_tiles_per_s=count / model_s,
            **_rates(with_detection, count),
            detect_s=statistics.median(detect for _, detect, _ in rounds),
            # detection ÷ the model time of one pass over the slide's tissue tiles
            detect_share=statistics.median(
                detect * slide_passes / model for _, detect, model in rounds
            ),
        ),
    ]


def output_ratio_row(base: dict, other: dict, what: str) -> dict:
    """Output pixels per second of ``other``'s pipeline ÷ ``base``'s, round by round."""
    ratios = [
        mine / theirs
        for mine, theirs in zip(
            other["output_mpx_per_s_rounds"], base["output_mpx_per_s_rounds"], strict=True
        )
    ]
    return dict(
        test=f"output px/s, {what} (pipeline, same slide)",
        window_px=f"{other['window_px']} vs {base['window_px']}",
        core_px=f"{other['core_px']} vs {base['core_px']}",
        ratio=statistics.median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
    )


def _rates(rounds: list[tuple[float, float]], count: int) -> dict:
    """Median pipeline tiles/s and the median, min and max of pipeline ÷ model-only."""
    ratios = [model / piped for piped, model in rounds]
    return dict(
        pipeline_tiles_per_s=count / statistics.median(piped for piped, _ in rounds),
        ratio=statistics.median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
    )
