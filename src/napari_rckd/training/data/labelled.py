"""Stage-2 classification from folders of labelled tiles.

The label of a tile comes from one clear rule (``label_from``):

- ``"folder"``: the name of the folder holding the image (``tcga-chol/x.jpg`` -> tcga-chol);
- ``"prefix"``: the file name up to the first ``-`` or ``_`` (``TUM-AACHEHDV.tif`` -> TUM);
- ``"field:N"``: field N (from 0) of the name split at ``_`` and ``-`` (``1238_adh_10.png``
  with ``field:1`` -> adh);
- ``"auto"`` (default): ``folder`` when the images sit in sub-folders of the folder given,
  else the first field of the name that is not a number (``1238_adh_10`` -> adh).

Each tile also gets a ``group``, its source, so no source is split between training and
validation: the group a ``groups.csv`` gives it (see `napari_rckd.training.data.groups`),
else the TCGA case barcode when the name holds one, else the fields before the label
(BRACS's slide id), else the file itself.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_rckd.errors import RckdError
from napari_rckd.training.data.augment import item_rng
from napari_rckd.training.data.groups import apply_groups, groups_file, read_groups

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_FIELD_SPLIT = re.compile(r"[-_]")
_TCGA_CASE = re.compile(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.IGNORECASE)


@dataclass(frozen=True)
class LabelledTile:
    path: Path
    label: str
    group: str
    mpp: float | None = None  # µm/px of the image when known


def _label_and_field(path: Path, root: Path, rule: str) -> tuple[str, int | None]:
    fields = _FIELD_SPLIT.split(path.stem)
    if rule == "auto":
        rule = "folder" if path.parent != root else "name"
    if rule == "folder":
        return path.parent.name, None
    if rule == "prefix":
        return fields[0], 0
    if rule == "name":
        for index, text in enumerate(fields):
            if text and not text.isdigit():
                return text, index
        raise RckdError(
            f"cannot tell the class of {path.name} from its name (all fields are numbers); "
            "put each class in its own folder or pass label_from='folder'"
        )
    match = re.fullmatch(r"field:(\d+)", rule)
    if match is None:
        raise RckdError(
            f"label_from={rule!r} is not a rule; use 'auto', 'folder', 'prefix' or 'field:N'"
        )
    index = int(match.group(1))
    if index >= len(fields):
        raise RckdError(f"{path.name} has no field {index} (fields: {', '.join(fields)})")
    return fields[index], index


def _group(path: Path, root: Path, field: int | None) -> str:
    case = _TCGA_CASE.search(path.stem)
    if case:
        source = case.group(0).upper()
    elif field:  # names like <slide>_<label>_<roi>: the fields before the label
        source = "_".join(_FIELD_SPLIT.split(path.stem)[:field])
    else:
        source = path.stem
    return f"{root.name}/{source}"


def scan_tile_folders(
    folders: str | os.PathLike | Iterable[str | os.PathLike],
    label_from: str = "auto",
    mpp: float | None = None,
    groups: str | os.PathLike | None = None,
) -> list[LabelledTile]:
    """Every image under ``folders`` with its label, group and (known) mpp.

    Groups come from the CSV ``groups`` when given, else from a ``groups.csv`` in each
    folder, else from the file names.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    roots = [Path(f) for f in folders]
    for root in roots:
        if not root.is_dir():
            raise RckdError(f"{root} is not a folder; give folders of labelled tile images")
    explicit = None
    if groups is not None:
        explicit = (groups_file(roots[0], groups), read_groups(Path(groups), roots))
    tiles: list[LabelledTile] = []
    for root in roots:
        images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise RckdError(
                f"folder {root} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "point at the folder that holds the labelled tiles"
            )
        # One explicit CSV names groups across all folders; one beside the tiles, within it.
        listed, prefix = explicit, ""
        if listed is None and (beside := groups_file(root)) is not None:
            listed, prefix = (beside, read_groups(beside, [root])), f"{root.name}/"
        names = None if listed is None else apply_groups(images, listed[1], listed[0])
        for index, path in enumerate(images):
            label, field = _label_and_field(path, root, label_from)
            group = _group(path, root, field) if names is None else prefix + names[index]
            tiles.append(LabelledTile(path, label, group, mpp))
    return tiles


def check_classes(labels: Iterable[str], classes: Sequence[str] | None, where: str) -> list[str]:
    """The class list: ``classes`` when given (every label must be in it), else the sorted labels.

    A class list needs at least two classes that actually occur in the data.
    """
    present = sorted(set(labels))
    if classes is None:
        classes = present
    else:
        classes = list(classes)
        outside = sorted(set(present) - set(classes))
        if outside:
            raise RckdError(
                f"{where} has labels {', '.join(outside)} outside the class list "
                f"({', '.join(classes)}); add them to the classes or remove those tiles"
            )
    if len(present) < 2:
        raise RckdError(
            f"{where} has only one class ({', '.join(present) or 'none'}); a classifier needs "
            "examples of at least two classes"
        )
    return classes


def check_repeats(tiles: Sequence[LabelledTile], label_from: str = "auto") -> None:
    """Refuse labels that are whole file names (``a.png`` -> "a"): unlabelled images, read as
    one class per file, would train a model that learns nothing."""
    labels = {tile.label for tile in tiles}
    if len(tiles) > 1 and len(labels) == len(tiles) and all(t.label == t.path.stem for t in tiles):
        example = ", ".join(sorted(labels)[:3])
        raise RckdError(
            f"the tiles look unlabelled: each file name is its own class ({example}, ...) with "
            f"one tile only, because --label-from {label_from} reads a tile's class from its "
            "folder (folder), the start of its file name (prefix, as in TUM-0001.png) or a name "
            "field (field:N, as in 1238_adh_10.png), so put each class's tiles in a folder named "
            "after the class"
        )


def fit_tile(
    image: np.ndarray, size: int, scale: float, rng: np.random.Generator | None
) -> np.ndarray:
    """Resample by ``scale``, enlarge if still smaller than ``size``, then crop size×size
    (at a random place with ``rng``, else the centre)."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = max(scale, size / height, size / width)  # never pad: cover the tile
    if abs(scale - 1) > 1e-3:
        shape = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(shape, Image.Resampling.BILINEAR))
        height, width = image.shape[:2]
    if rng is None:
        top, left = (height - size) // 2, (width - size) // 2
    else:
        top, left = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise RckdError(f"cannot read image {path} ({error}); the file may be corrupt") from None


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 H×W×3 -> float32 3×H×W in [0, 1]."""
    if not rgb.flags.writeable:  # e.g. a view of a PIL image; torch wants to own writable memory
        rgb = rgb.copy()
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)


class TileFolderDataset(Dataset):
    """Labelled tiles resampled from their mpp to the model's ``mpp`` (a tile without one is
    read at its own pixels: `training.data.scale.tile_scales` chooses one), cropped to
    ``size`` px (enlarged first if smaller); random crops and augmentation when ``train``."""

    def __init__(
        self,
        tiles: Sequence[LabelledTile],
        classes: Sequence[str] | None = None,
        size: int = 256,
        mpp: float = 0.5,
        train: bool = False,
        augment=None,
    ):
        if not tiles:
            raise RckdError("no labelled tiles given; point at a folder of labelled images")
        self.tiles = list(tiles)
        check_repeats(self.tiles)
        self.classes = check_classes((t.label for t in self.tiles), classes, "the tile folders")
        self.labels = np.array([self.classes.index(t.label) for t in self.tiles])
        self.groups = [t.group for t in self.tiles]
        self.size, self.mpp, self.train, self.augment = size, mpp, train, augment

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict:
        tile = self.tiles[index]
        rng = item_rng() if self.train else None
        scale = tile.mpp / self.mpp if tile.mpp else 1.0  # unknown: its own pixels
        image = to_tensor(fit_tile(read_rgb(tile.path), self.size, scale, rng))
        if self.train and self.augment is not None:
            (image,) = self.augment(rng, image)
        return {"image": image, "label": torch.tensor(self.labels[index]), "group": tile.group}
