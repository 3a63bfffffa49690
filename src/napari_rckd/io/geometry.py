"""Refuse TIFF geometry that cannot be real, before any array or graph is built from it.

A 30 KB file can claim 10⁹ × 10⁹ pixels; believing it hangs the opener in dask and numpy
long before a tile is decoded. Each check here costs one pass over the tile tables, which
the file itself had to store, so the work stays proportional to the file's real size.
"""

from __future__ import annotations

import math
from pathlib import Path

import tifffile

from napari_rckd.io.slide import SlideError

# About 1.1 Tpx (1,048,576² pixels): fifty times the largest slides scanners make today.
MAX_PIXELS = 2**40
# One decoded tile or strip larger than this is not a slide tile; a whole-image strip of an
# 18,000² RGB TIFF (the largest plain TIFF we open) still fits.
MAX_CHUNK_BYTES = 2**30


def check_geometry(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Raise `SlideError` for sizes, tile tables or offsets the file cannot really hold."""
    size = path.stat().st_size
    previous = None
    for index, level in enumerate(series.levels):
        height, width = (int(v) for v in level.shape[:2])
        if height < 1 or width < 1 or height * width > MAX_PIXELS:
            raise SlideError(
                f"{path.name} declares a {width:,} x {height:,} pixel image at level {index}, "
                "which no slide has; the file is damaged, so copy or export it again."
            )
        if previous is not None and (
            height > previous[0] or width > previous[1] or (height, width) == previous
        ):
            raise SlideError(
                f"{path.name} level {index} ({width:,} x {height:,}) is not smaller than the level "
                "above it, so its pyramid is damaged; copy or export the file again."
            )
        previous = (height, width)
        for page in level.pages:
            if page is not None:
                _check_page(page, index, (width, height), size, path)


def _check_page(page, level: int, image: tuple[int, int], size: int, path: Path) -> None:
    expected = math.prod(int(n) for n in page.chunked)
    declared = len(page.dataoffsets)
    if declared != expected or declared != len(page.databytecounts):
        raise SlideError(
            f"{path.name} level {level} lists {declared:,} tiles where its {image[0]:,} x "
            f"{image[1]:,} pixels need {expected:,}, so its tile table is damaged; copy or export "
            "the file again."
        )
    if math.prod(int(n) for n in page.chunks) * page.dtype.itemsize > MAX_CHUNK_BYTES:
        raise SlideError(
            f"{path.name} level {level} declares {page.chunks} pixel tiles, too large to be real, "
            "so the file is damaged; copy or export it again."
        )
    # plain ints: a damaged offset may not fit in int64
    if max(map(sum, zip(page.dataoffsets, page.databytecounts, strict=True)), default=0) > size:
        raise SlideError(
            f"{path.name} is truncated: its image data runs past the end of the file "
            f"({size:,} bytes); copy or download it again."
        )
