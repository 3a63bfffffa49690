"""Plain PNG/JPEG images: small enough to decode whole, shown as a one-level slide."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from napari_rckd.io.slide import Slide, SlideError
from napari_rckd.io.tiles import ArrayReader

CHUNK = 512


def open_plain(path: Path, mpp: float | None) -> Slide:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError as error:
        raise SlideError(
            f"{path.name} is not a readable {path.suffix.lstrip('.').upper()} image; "
            "the file may be corrupt or have the wrong extension."
        ) from error
    level = da.from_array(pixels, chunks=(CHUNK, CHUNK, 3))
    return Slide(
        path,
        [level],
        [ArrayReader(pixels)],
        mpp=mpp,  # PNG/JPEG carry no trustworthy microscope pixel size
        magnification=None,
        vendor="plain",
        compression=path.suffix.lstrip(".").lower(),
        tile_shape=(CHUNK, CHUNK),
    )
