"""Annotations kept beside a slide, and the one writer of label masks.

A slide's class-labelled regions are ``<slide>.annotations.geojson`` (QuPath-style GeoJSON,
`napari_rckd.io.annotations`) and its cancer-region mask ``<slide>.cancer-region.tif``: a
2-D uint8 TIFF (0 = unlabelled, k = class k-1) on a coarse grid of ``downsample`` level-0
pixels per mask pixel, recording ``downsample`` and ``classes`` in its metadata. A slide-sized
mask would not fit in memory, so the grid is at most `MASK_MAX_SIDE` pixels a side.
`write_label_mask` writes every mask the package writes (these sidecars, a training job's
input, napari's "save layer" as OME-TIFF), atomically.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)

MASK_MAX_SIDE = 4096
SHAPES_SUFFIX = ".annotations.geojson"
MASK_SUFFIX = ".cancer-region.tif"


def annotation_paths(slide_path: str | Path) -> tuple[Path, Path]:
    """Where a slide's regions (GeoJSON) and cancer-region mask (TIFF) are kept."""
    path = Path(slide_path)
    return path.with_name(path.name + SHAPES_SUFFIX), path.with_name(path.name + MASK_SUFFIX)


def mask_downsample(shape: tuple[int, int], max_side: int = MASK_MAX_SIDE) -> int:
    """Level-0 pixels per mask pixel so the mask's longer side is at most ``max_side``."""
    return max(1, math.ceil(max(shape) / max_side))


def write_label_mask(
    path: str | Path, mask: np.ndarray, metadata: dict | None = None, ome: bool = False
) -> Path:
    """Write a 2-D label mask as a zlib-compressed TIFF, atomically: uint8 when its labels fit,
    else int32. ``metadata`` is tifffile's (OME-XML entries when ``ome``, else JSON)."""
    import tifffile

    from napari_rckd.atomic import atomic_path

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise RckdError(f"only 2-D label layers can be written as a mask, got shape {mask.shape}")
    dtype = np.uint8 if mask.max(initial=0) < 256 and mask.min(initial=0) >= 0 else np.int32
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, mask.astype(dtype), ome=ome, metadata=metadata, compression="zlib",
            photometric="minisblack",
        )  # fmt: skip
    return Path(path)


def write_region_mask(path: str | Path, mask: np.ndarray, downsample: int, classes) -> Path:
    """A cancer-region mask in the sidecar format (its downsample and classes recorded)."""
    metadata = {"downsample": int(downsample), "classes": list(classes)}
    return write_label_mask(path, np.asarray(mask, np.uint8), metadata)


def read_region_mask(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """A saved cancer-region mask as uint8, or None (with a warning) when it is not of
    ``shape``, the slide's mask grid; an unreadable file is an error to report."""
    import tifffile

    try:
        mask = tifffile.imread(path)
    except Exception as error:
        raise RckdError(f"cannot read the saved mask {path} ({error}); move it away") from None
    if mask.shape != shape:
        log.warning(
            "ignoring %s: its shape %s is not this slide's mask %s", path, mask.shape, shape
        )
        return None
    return mask.astype(np.uint8)
