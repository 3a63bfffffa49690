"""On-disk cache of teacher responses (and the tile they answer), so a teacher runs once.

Each entry is one uncompressed ``.npz`` holding the RGB tile (uint8), the nuclear
probability quantised to uint8 (1/255 steps, far below the teacher's own error) and the
instance boundaries as packed bits: ~260 KB for a 256² tile, loaded in well under a
millisecond, so a warm epoch decodes no slide and runs no teacher. Entries are written
through a temporary file and a rename; an unreadable one is reported, deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from napari_rckd.atomic import atomic_open

log = logging.getLogger(__name__)


class CachedTile(NamedTuple):
    image: np.ndarray  # uint8 H×W×3
    prob: np.ndarray  # float32 H×W in [0, 1]
    boundary: np.ndarray  # bool H×W: pixels on an instance's edge


def boundaries_from_labels(labels: np.ndarray) -> np.ndarray:
    """Inner edges of each instance: what separates touching nuclei in the target."""
    from skimage.segmentation import find_boundaries

    return find_boundaries(labels, mode="inner")


class ResponseCache:
    """Teacher outputs under ``root``, keyed by slide identity, location, mpp, size and teacher."""

    def __init__(self, root: str | os.PathLike, teacher_identity: str):
        self.root = Path(root)
        self.teacher_identity = teacher_identity

    def key(self, slide_id: str, y: int, x: int, mpp: float, size: int) -> str:
        fields = [slide_id, int(y), int(x), float(mpp), int(size), self.teacher_identity]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str, size: int) -> CachedTile | None:
        """The entry, or None when absent; a corrupt entry is logged, removed and None returned."""
        path = self.path(key)
        try:
            with np.load(path) as data:
                image, prob, bits = data["image"], data["prob"], data["boundary"]
            boundary = np.unpackbits(bits, count=size * size).reshape(size, size).astype(bool)
            if (
                image.shape != (size, size, 3)
                or prob.shape != (size, size)
                or image.dtype != np.uint8
            ):
                raise ValueError(f"shapes {image.shape} {prob.shape} do not fit a {size}-px tile")
        except FileNotFoundError:
            return None
        except Exception as error:  # truncated zip, missing member, wrong shape: recompute
            log.warning("teacher cache entry %s is corrupt (%s); recomputing it", path, error)
            path.unlink(missing_ok=True)
            return None
        return CachedTile(image, prob.astype(np.float32) / 255, boundary)

    def store(
        self, key: str, image: np.ndarray, prob: np.ndarray, labels: np.ndarray
    ) -> CachedTile:
        """Quantise and write one entry atomically; returns what a later load will give."""
        quantised = np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)
        boundary = boundaries_from_labels(labels)
        with atomic_open(self.path(key)) as handle:
            np.savez(handle, image=image, prob=quantised, boundary=np.packbits(boundary))
        return CachedTile(image, quantised.astype(np.float32) / 255, boundary)
