"""Signs that a labelled set holds copies of one image under different sources.

Without a ``groups.csv`` each file may count as its own source; if the set was enlarged by
copying, rotating or flipping images, those copies then land on both sides of the validation
split and validation measures memory. Three cheap signs are checked:

- identical files (same bytes);
- identical pictures up to a 90° rotation or a flip (an 8×8 average hash, minimised over
  the eight turns and flips, so re-encoding noise does not hide them);
- file names that differ only by words such as ``rot90``, ``flip`` or ``aug3``.

Rotations by other angles (LC25000's) are not caught: such sets need a ``groups.csv``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_rckd.training.data.labelled import LabelledTile

log = logging.getLogger(__name__)

# Pixel hashes are computed for at most this many tiles (evenly spread), so a huge folder
# costs seconds, not minutes, while copies (several per source) still meet in the sample.
PIXEL_CHECK_LIMIT = 4000
_COPY_WORDS = re.compile(
    r"[-_ .]*(rot(ated?)?[-_]?\d*|flip(ped)?[-_]?[hv]?|[hv]flip|aug(mented)?[-_]?\d*|"
    r"copy[-_ ]?\d*|\(\d+\))",
    re.IGNORECASE,
)


def file_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def picture_key(path: Path) -> str:
    """An 8×8 average hash of the grey image, the same for all its 90° turns and flips."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("L", (64, 64))  # JPEG: decode at reduced size, much faster
        grey = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BOX), np.float32)
    keys = []
    for turns in range(4):
        turned = np.rot90(grey, turns)
        for variant in (turned, turned[:, ::-1]):
            keys.append(np.packbits(variant > variant.mean()).tobytes().hex())
    return min(keys)


def name_key(path: Path) -> str:
    """The file's folder and name without copy words (``x_rot90`` and ``x`` give ``x``)."""
    return f"{path.parent}/{_COPY_WORDS.sub('', path.stem)}"


def find_copies(tiles: Sequence[LabelledTile]) -> list[tuple[str, Path, Path]]:
    """(what, tile, tile) for the first pair of each kind found in two different groups."""
    step = max(1, len(tiles) // PIXEL_CHECK_LIMIT)
    checks: list[tuple[str, Callable[[Path], str], Sequence[LabelledTile]]] = [
        ("identical files", file_key, tiles),
        ("the same picture turned or flipped", picture_key, tiles[::step]),
        ("names that differ only by a copy word", name_key, tiles),
    ]
    found = []
    for what, key_of, subset in checks:
        seen: dict[str, LabelledTile] = {}
        for tile in subset:
            try:
                key = key_of(tile.path)
            except OSError:
                continue  # unreadable files are reported by the dataset with their name
            first = seen.setdefault(key, tile)
            if tile.group != first.group:
                found.append((what, first.path, tile.path))
                break
    return found


def warn_about_copies(tiles: Sequence[LabelledTile]) -> bool:
    """Log one warning when tiles of different sources look like copies; True if so."""
    found = find_copies(tiles)
    if not found:
        return False
    signs = "; ".join(f"{what} (e.g. {a.name} and {b.name})" for what, a, b in found)
    log.warning(
        "tiles counted as different sources look like copies of one image: %s; they may "
        "land on both sides of the validation split, so give a groups.csv (class,group,file) "
        "beside the tiles or --groups FILE",
        signs,
    )
    return True
