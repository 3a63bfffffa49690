"""Slide reading: open time and memory, random 512² level-0 reads/s (ours, dask, OpenSlide), RSS after reads.

Without SLIDE, a sparse synthetic 100,000 x 100,000 px pyramidal JPEG TIFF is written to a
temporary folder first: a tissue disc of real-looking H&E tiles on white, each tile a copy
of one of a few pre-encoded JPEGs, so it is written in seconds and stays small on disk.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

TILE = 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help="slide to read (default: a synthetic 100k² TIFF)")
    parser.add_argument("--size", type=int, default=100_000, help="side of the synthetic slide")
    parser.add_argument("--reads", type=int, default=1000, help="random 512² reads per method")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import dask.array  # noqa: F401  (imported before measuring, so import cost is not counted)
    import psutil
    import tifffile  # noqa: F401
    import zarr  # noqa: F401

    from napari_rckd.io import open_slide
    from napari_rckd.report import report

    with tempfile.TemporaryDirectory(prefix="rckd-bench-") as tmp:
        if args.slide:
            path, region = Path(args.slide), None
        else:
            started = time.perf_counter()
            path, region = write_sparse_slide(Path(tmp) / "sparse.tif", args.size, args.seed)
            logger.info("synthetic slide written in %.1f s", time.perf_counter() - started)
        process = psutil.Process()
        rss_before = process.memory_info().rss
        started = time.perf_counter()
        slide = open_slide(path)
        open_s = time.perf_counter() - started
        open_rss_mb = (process.memory_info().rss - rss_before) / 2**20
        with slide:
            height, width = slide.shape
            locations = _random_locations(args, height, width, region)
            rows = []
            rss_start = process.memory_info().rss
            ours = _rate(lambda y, x: slide.read_region(0, y, x, TILE, TILE), locations)
            rss_delta_mb = (process.memory_info().rss - rss_start) / 2**20
            rows.append({"method": "Slide.read_region", "reads_per_s": ours})

            def cold_read(y, x):
                slide.clear_cache()
                return slide.read_region(0, y, x, TILE, TILE)

            rows.append(
                {
                    "method": "Slide.read_region, cache cleared each read",
                    "reads_per_s": _rate(cold_read, locations),
                }
            )
            dask_level = slide.levels[0]
            rows.append(
                {
                    "method": "dask levels[0] slice",
                    "reads_per_s": _rate(
                        lambda y, x: np.asarray(dask_level[y : y + TILE, x : x + TILE]), locations
                    ),
                }
            )
            openslide_rate = _openslide_rate(path, locations)
            if openslide_rate:
                rows.append({"method": "openslide read_region", "reads_per_s": openslide_rate})
            for row in rows:
                row["vs_openslide"] = (
                    row["reads_per_s"] / openslide_rate if openslide_rate else None
                )
        report(
            f"bench read: {path.name if args.slide else f'synthetic {width:,} x {height:,} px'}",
            rows,
            args.json,
            slide=str(path) if args.slide else f"synthetic sparse {width}x{height} JPEG TIFF",
            levels=len(slide.levels),
            reads=len(locations),
            open_s=round(open_s, 4),
            open_extra_rss_mb=round(open_rss_mb, 1),
            rss_after_reads_minus_start_mb=round(rss_delta_mb, 1),
        )
    return 0


def _random_locations(args, height: int, width: int, region) -> list[tuple[int, int]]:
    """Top-left corners of 512² reads; inside the tissue disc when the slide is synthetic."""
    rng = np.random.default_rng(args.seed)
    locations = []
    while len(locations) < args.reads:
        y, x = int(rng.integers(0, height - TILE)), int(rng.integers(0, width - TILE))
        if region is None or region(y + TILE // 2, x + TILE // 2):
            locations.append((y, x))
    return locations


def _rate(read, locations) -> float:
    started = time.perf_counter()
    for y, x in locations:
        read(y, x)
    return len(locations) / (time.perf_counter() - started)


def _openslide_rate(path: Path, locations) -> float | None:
    try:
        import openslide
    except ImportError:
        logger.warning("openslide-python is not installed: no side-by-side comparison")
        return None
    try:
        reference = openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as error:
        logger.warning("OpenSlide cannot open %s (%s): no comparison", path.name, error)
        return None
    with reference:
        return _rate(lambda y, x: reference.read_region((x, y), 0, (TILE, TILE)), locations)


def write_sparse_slide(path: Path, size: int, seed: int = 0):
    """A generic tiled pyramidal JPEG TIFF (one page per level, as OpenSlide reads it).

    Returns the path and ``inside(y, x)``, true where level 0 has tissue.
    """
    import imagecodecs
    import tifffile

    from napari_rckd.io.synthetic import sample_tissue_tiles

    # a few distinct tissue tiles from the synthetic H&E renderer, encoded once
    pool = [
        imagecodecs.jpeg_encode(tile, level=85, subsampling="420")
        for tile in sample_tissue_tiles(6, seed)
    ]
    white = imagecodecs.jpeg_encode(
        np.full((TILE, TILE, 3), 250, np.uint8), level=85, subsampling="420"
    )
    centre, radius = size / 2, size * 0.18  # ~10% of the area is tissue

    def inside(y: float, x: float, scale: float = 1.0) -> bool:
        return (y * scale - centre) ** 2 + (x * scale - centre) ** 2 < radius**2

    def tiles(level_size: int, scale: int):
        n = -(-level_size // TILE)
        for row in range(n):
            for col in range(n):
                y, x = (row + 0.5) * TILE, (col + 0.5) * TILE
                yield pool[(row * 7 + col) % len(pool)] if inside(y, x, scale) else white

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        scale = 1
        while size // scale >= TILE:
            level_size = size // scale
            tif.write(
                tiles(level_size, scale),
                shape=(level_size, level_size, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="rgb",
                subsampling=(2, 2),
                subfiletype=0 if scale == 1 else 1,
                resolution=(int(1e4 / (0.25 * scale)), 1),
                resolutionunit="CENTIMETER",
            )
            scale *= 2
    return path, inside
