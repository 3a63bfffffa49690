"""`bench transfer --task segment`: region segmentation on mosaics stitched from tiles.

A SYNTHETIC check of stage 2's segmentation path on labelled tiles, since no slide with
painted cancer regions is shared. The class folders become two regions: benign (--benign;
by default every folder whose name ends in ``_n`` or holds "benign" or "normal", such as
LC25000's ``lung_n``) and tumour (all the others). A mosaic is --grid × --grid tiles, each
resized to --tile-size as in classification, and its mask gives every cell its tile's region;
each mosaic holds both regions, in equal shares on average.

Training mosaics are drawn afresh for every item from the job's training tiles (the groups
and budget classification would use), test mosaics once per fold, with a fixed seed, from that
fold's test tiles only, so no group is on both sides and every init, budget and seed is scored
on the same test mosaics. The score is each region's IoU and their mean (mIoU), from the
per-pixel argmax, through `SegmentationTask`'s own evaluation.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from napari_rckd.bench.transfer_stats import METRICS
from napari_rckd.errors import RckdError

if TYPE_CHECKING:
    import numpy as np
    import torch

# numpy and torch are imported where used: this module's flags are parsed by every
# `napari-rckd` command, which should not wait for torch.

REGIONS = ("benign", "tumour")
DEFAULT_GRID = 2
TEST_SEED = 0  # the test mosaics: the same for every init, budget and seed of a fold
BENIGN_HINTS = ("benign", "normal")
FLAGS = ("grid", "benign")  # settings of --task segment only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grid",
        type=int,
        default=DEFAULT_GRID,
        help=f"--task segment: tiles per mosaic side (default {DEFAULT_GRID}: a mosaic is "
        "grid × --tile-size px wide)",
    )
    parser.add_argument(
        "--benign",
        type=lambda text: [x.strip() for x in text.split(",") if x.strip()],
        metavar="NAMES",
        help="--task segment: the class folders of benign tissue, comma-separated; the rest "
        "are tumour (default: the folders named like *_n, *benign* or *normal*)",
    )


def benign_classes(classes: Sequence[str], names: Sequence[str] | None, where: str) -> set[str]:
    """The classes that make the benign region; every other class is tumour."""
    if names:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise RckdError(
                f"--benign {unknown[0]} is not a class folder of {where} (it has "
                f"{', '.join(classes)}); name one of those folders"
            )
        chosen = set(names)
    else:
        chosen = {c for c in classes if _looks_benign(c)}
        if not chosen:
            raise RckdError(
                f"--task segment needs a benign region, but no class folder of {where} "
                f"({', '.join(classes)}) is named like one (ending in _n, or holding benign or "
                "normal); name the benign folders with --benign NAME[,NAME]"
            )
    if chosen >= set(classes):
        raise RckdError(
            f"--benign {','.join(sorted(chosen))} takes every class folder of {where}, which "
            "leaves no tumour region; name only the folders of benign tissue"
        )
    return chosen


def _looks_benign(name: str) -> bool:
    lower = name.lower()
    return lower.endswith("_n") or any(hint in lower for hint in BENIGN_HINTS)


@dataclass
class Segment:
    """What `bench transfer` trains and scores with --task segment (see `Classify` in
    `napari_rckd.bench.transfer` for the classification twin of this interface)."""

    cell_recipe: object  # the flags' Stage2Recipe: its tile_size is one mosaic cell
    grid: int
    benign: set[str]

    classes = list(REGIONS)
    metrics = METRICS["segment"]
    title = "RCKD transfer: region segmentation on SYNTHETIC tile mosaics per init and label budget"

    @classmethod
    def from_args(cls, plan, recipe, args: argparse.Namespace) -> Segment:
        if args.grid < 2:
            raise RckdError(
                f"--grid {args.grid} makes mosaics of one tile, which cannot hold both regions; "
                "give --grid 2 or more"
            )
        return cls(
            recipe, args.grid, benign_classes(plan.classes, args.benign, f"--train {args.train}")
        )

    @property
    def recipe(self):
        """The recipe `train_stage2` gets: a segmenter whose input is one whole mosaic."""
        size = self.cell_recipe.tile_size * self.grid
        return replace(self.cell_recipe, task="segment", tile_size=size)

    def regions(self, tiles) -> np.ndarray:
        import numpy as np

        return np.array([0 if t.label in self.benign else 1 for t in tiles])

    def train_set(self, tiles) -> MosaicDataset:
        from napari_rckd.training.data.augment import Augment

        return MosaicDataset(
            tiles, self.regions(tiles), self.cell_recipe.tile_size, self.cell_recipe.mpp,
            self.grid, augment=Augment(),
        )  # fmt: skip

    def tester(self, tiles, fold: int) -> HeldOutMosaics:
        return HeldOutMosaics(tiles, self.regions(tiles), self.cell_recipe, self.grid, fold)


def _layout(rng: np.random.Generator, cells: int) -> np.ndarray:
    """A region (0 benign, 1 tumour) per cell, each equally likely, never all the same."""
    regions = rng.integers(2, size=cells)
    if (regions == regions[0]).all():
        regions[rng.integers(cells)] ^= 1
    return regions


def stitch(cells: Sequence[torch.Tensor], regions: Sequence[int], grid: int):
    """grid² 3×c×c images in row-major order -> a 3×S×S mosaic and its S×S mask (region + 1,
    since 0 means unlabelled to `SegmentationTask`)."""
    import numpy as np
    import torch

    rows = [torch.cat(list(cells[r * grid : (r + 1) * grid]), dim=2) for r in range(grid)]
    image = torch.cat(rows, dim=1)  # (3, S, S)
    side = cells[0].shape[-1]
    labels = torch.as_tensor(np.asarray(regions), dtype=torch.int64).view(grid, grid) + 1
    mask = labels.repeat_interleave(side, 0).repeat_interleave(side, 1)  # (S, S)
    return image, mask


def _pools(regions: np.ndarray, where: str) -> list[np.ndarray]:
    import numpy as np

    pools = [np.flatnonzero(regions == k) for k in range(len(REGIONS))]
    for name, pool in zip(REGIONS, pools, strict=True):
        if len(pool) == 0:
            raise RckdError(
                f"{where} has no {name} tile to stitch into mosaics; raise the budget or add "
                f"groups of the {name} classes"
            )
    return pools


class MosaicDataset:
    """Training mosaics: items ``image`` (3×S×S float) and ``mask`` (S×S int64, 1 benign,
    2 tumour), every item a fresh draw of layout and tiles (each tile cropped and augmented
    as in classification) from torch's RNG, which the fit loop seeds (a map-style dataset for DataLoader)."""

    def __init__(self, tiles, regions, cell: int, mpp: float, grid: int, augment=None) -> None:
        import numpy as np

        from napari_rckd.training.data.labelled import TileFolderDataset

        self.pools = _pools(np.asarray(regions), "the training tiles")
        self.cells = TileFolderDataset(tiles, None, cell, mpp, train=True, augment=augment)
        self.grid = grid
        self.groups = sorted({t.group for t in tiles})  # the groups any mosaic can draw from

    def __len__(self) -> int:
        return len(self.cells)  # an epoch: as many mosaics as tiles

    def __getitem__(self, index: int) -> dict:
        from napari_rckd.training.data.augment import item_rng

        rng = item_rng()
        regions = _layout(rng, self.grid**2)
        picks = [int(rng.choice(self.pools[r])) for r in regions]
        image, mask = stitch([self.cells[i]["image"] for i in picks], regions, self.grid)
        return {"image": image, "mask": mask}


def _deal(rng: np.random.Generator, pool: np.ndarray) -> Iterator[int]:
    """The pool's tiles in a random order, then again in another, for ever."""
    while True:
        yield from (int(i) for i in rng.permutation(pool))


class HeldOutMosaics:
    """A fold's test mosaics, stitched once (as uint8) with a fixed seed and reused by every
    run: one mosaic per grid² test tiles, each region dealt its tiles without repeats until
    its tiles run out."""

    def __init__(self, tiles, regions, recipe, grid: int, fold: int) -> None:
        import numpy as np
        import torch

        from napari_rckd.training.data.labelled import TileFolderDataset

        pools = _pools(np.asarray(regions), f"the test tiles of fold {fold + 1}")
        cells = TileFolderDataset(tiles, None, recipe.tile_size, recipe.mpp)
        rng = np.random.default_rng(TEST_SEED)  # drawn in a fixed order: layouts and dealers
        dealers = [_deal(rng, pool) for pool in pools]
        decoded: dict[int, torch.Tensor] = {}
        images, masks, self.groups = [], [], []
        for _ in range(math.ceil(len(tiles) / grid**2)):
            layout = _layout(rng, grid**2)
            picks = [next(dealers[r]) for r in layout]
            for i in picks:
                if i not in decoded:
                    decoded[i] = (cells[i]["image"] * 255).round().to(torch.uint8)
            image, mask = stitch([decoded[i] for i in picks], layout, grid)
            images.append(image)
            masks.append(mask.to(torch.uint8))
            self.groups.append({tiles[i].group for i in picks})
        self.images, self.masks = torch.stack(images), torch.stack(masks)
        self.tiles_used = len(decoded)
        self.recipe, self.fold = recipe, fold

    def __len__(self) -> int:
        return len(self.images)

    def score(self, model) -> dict[str, float]:
        """mIoU and each region's IoU of ``model``'s argmax over the test mosaics."""
        import torch

        from napari_rckd.devices import resolve_device
        from napari_rckd.training.tasks import SegmentationTask

        device = torch.device(resolve_device(self.recipe.device))
        task = SegmentationTask(model, len(REGIONS), list(REGIONS)).to(device)
        size = self.recipe.batch_size
        batches = (
            {
                "image": self.images[i : i + size].float().div_(255).to(device),
                "mask": self.masks[i : i + size].long().to(device),
            }
            for i in range(0, len(self), size)
        )
        with torch.inference_mode():
            metrics = task.evaluate(batches)
        return {"miou": metrics["miou"], **{f"iou_{r}": metrics[f"iou/{r}"] for r in REGIONS}}
