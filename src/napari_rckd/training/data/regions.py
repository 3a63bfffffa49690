"""Stage-2 data drawn over a slide: tiles inside annotated regions, and tiles of a label mask.

`RegionTileDataset` turns class-named polygons (GeoJSON or napari Shapes) into classification
tiles, grouped by region so a region never feeds both training and validation.
`MaskTileDataset` cuts an image and an aligned label mask (a napari Labels layer's data or a
mask file; 0 = unlabelled, ignored; k = class k-1) into segmentation tiles, grouped by blocks
of neighbouring tiles for the same reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_rckd.errors import RckdError
from napari_rckd.io.slide import DamagedSlideError
from napari_rckd.training.data.augment import item_rng
from napari_rckd.training.data.labelled import check_classes, to_tensor
from napari_rckd.training.data.sampling import SlidePool

log = logging.getLogger(__name__)

MASK_PX_PER_TILE = 4  # region masks are rasterised at a quarter tile per pixel
BLOCK_TILES = 4  # segmentation tiles are grouped in blocks of 4×4 neighbours


class _SlideSource:
    """A slide by path (reopened per worker) or an in-memory RGB array (napari layer data)."""

    def __init__(self, image, mpp: float | None, model_mpp: float):
        if isinstance(image, (str, os.PathLike)):
            self.name = Path(image).stem
            self._pool, self._slide = SlidePool([Path(image)], fallback_mpp=mpp), None
        else:
            self.name = "image"
            self._pool, self._slide = None, _array_slide(np.asarray(image), mpp or model_mpp)

    def get(self):
        return self._slide if self._pool is None else self._pool.get(0)


def _array_slide(pixels: np.ndarray, mpp: float):
    import dask.array as da

    from napari_rckd.io import Slide
    from napari_rckd.io.tiles import ArrayReader

    if pixels.ndim != 3 or pixels.shape[2] < 3 or pixels.dtype != np.uint8:
        raise RckdError(f"the image must be RGB uint8 (H×W×3), got {pixels.shape} {pixels.dtype}")
    pixels = np.ascontiguousarray(pixels[..., :3])
    return Slide(
        Path("image"),
        [da.from_array(pixels, chunks=(512, 512, 3))],
        [ArrayReader(pixels)],
        mpp=mpp,
        magnification=None,
        vendor="array",
        compression="none",
        tile_shape=(512, 512),
    )


def _box_fraction(mask: np.ndarray, side: int, stride: int) -> np.ndarray:
    """Mean of ``mask`` over every side×side window at the given stride (via an integral image)."""
    integral = np.pad(mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    tops = np.arange(0, mask.shape[0] - side + 1, stride)
    lefts = np.arange(0, mask.shape[1] - side + 1, stride)
    t, left = np.meshgrid(tops, lefts, indexing="ij")
    total = (
        integral[t + side, left + side]
        - integral[t, left + side]
        - integral[t + side, left]
        + integral[t, left]
    )
    return total / side**2


class RegionTileDataset(Dataset):
    """Tiles inside each class-named region; items ``image``, ``label``, ``group`` (the region)."""

    def __init__(
        self,
        slide: str | os.PathLike,
        regions,
        classes: Sequence[str] | None = None,
        size: int = 256,
        mpp: float = 0.5,
        slide_mpp: float | None = None,
        max_tiles_per_region: int = 64,
        min_inside: float = 0.5,
        seed: int = 0,
        augment=None,
    ):
        from napari_rckd.io.annotations import read_annotations

        where = Path(regions).name if isinstance(regions, (str, os.PathLike)) else "the annotations"
        if isinstance(regions, (str, os.PathLike)):
            regions = read_annotations(regions)
        for index, region in enumerate(regions):
            if not region.name:
                raise RckdError(f"region {index} in {where} has no class name; classify it first")
        self.classes = check_classes((r.name for r in regions), classes, where)
        self.source = _SlideSource(slide, slide_mpp, mpp)
        self.size, self.mpp, self.augment = size, mpp, augment
        self.locations, self.labels, self.groups = self._plan(
            regions, max_tiles_per_region, min_inside, np.random.default_rng(seed)
        )

    def _plan(self, regions, max_tiles, min_inside, rng):
        slide = self.source.get()
        footprint = self.size * self.mpp / slide.mpp  # level-0 px per tile side
        step = footprint / MASK_PX_PER_TILE
        shape = tuple(int(np.ceil(s / step)) for s in slide.shape)
        locations, labels, groups = [], [], []
        for index, region in enumerate(regions):
            inside = _box_fraction(
                region.mask(shape, step), MASK_PX_PER_TILE, MASK_PX_PER_TILE // 2
            )
            cells = np.argwhere(inside >= min_inside) * (MASK_PX_PER_TILE // 2) * step
            if len(cells) == 0:  # smaller than a tile: one tile centred on it
                y0, x0, y1, x1 = region.bounds()
                cells = np.array([[(y0 + y1 - footprint) / 2, (x0 + x1 - footprint) / 2]])
            if len(cells) > max_tiles:
                cells = cells[np.sort(rng.choice(len(cells), max_tiles, replace=False))]
            locations.append(np.floor(cells).astype(np.int64))
            labels += [self.classes.index(region.name)] * len(cells)
            groups += [f"{self.source.name}#region{index}"] * len(cells)
        log.info("%d tiles from %d regions", len(labels), len(regions))
        locations = np.concatenate(locations)
        ok = readable_tiles(slide, locations, self.size, self.mpp)
        return (
            locations[ok],
            np.array(labels)[ok],
            [g for g, keep in zip(groups, ok, strict=True) if keep],
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        y, x = self.locations[index]
        image = to_tensor(self.source.get().read_at_mpp(int(y), int(x), self.size, self.mpp))
        if self.augment is not None:
            (image,) = self.augment(item_rng(), image)
        label = torch.tensor(self.labels[index])
        return {"image": image, "label": label, "group": self.groups[index]}


def readable_tiles(slide, locations, size: int, mpp: float) -> np.ndarray:
    """Which planned tiles decode. Damaged ones are dropped, and counted in one warning, before
    training starts, so a run never dies on one bad tile; a slide mostly damaged is refused."""
    ok = np.ones(len(locations), dtype=bool)
    for index, (y, x) in enumerate(locations):
        try:
            slide.read_at_mpp(int(y), int(x), size, mpp)
        except DamagedSlideError:
            ok[index] = False
    bad, name = int((~ok).sum()), slide.path.name
    if bad * 2 > len(ok):
        raise RckdError(
            f"{bad} of the {len(ok)} training tiles of {name} are damaged; the file is "
            "corrupt: export or scan the slide again"
        )
    if bad:
        log.warning("%s: %d damaged of %d training tiles skipped", name, bad, len(ok))
    return ok


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A label mask file (TIFF or PNG) as an integer array."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image)
    except Exception as error:
        raise RckdError(
            f"cannot read mask file {path} ({error}); give a TIFF or PNG label image"
        ) from None


class MaskTileDataset(Dataset):
    """Segmentation tiles of ``size`` px at ``mpp``: items ``image`` and ``mask`` (int64,
    0 = unlabelled and ignored, k = class k-1). The mask may be coarser than the image by an
    integer-free factor (e.g. painted on a lower pyramid level) as long as the aspect agrees.
    ``image_mpp`` is the image's µm/px (a slide's own value wins; for an array, None means
    it is already at ``mpp``)."""

    def __init__(
        self,
        image,
        mask,
        classes: Sequence[str],
        size: int = 256,
        mpp: float = 0.5,
        image_mpp: float | None = None,
        min_labelled: float = 0.05,
        augment=None,
    ):
        self.source = _SlideSource(image, image_mpp, mpp)
        self.mask = read_mask(mask) if isinstance(mask, (str, os.PathLike)) else np.asarray(mask)
        self.classes = list(classes)
        self.size, self.mpp, self.augment = size, mpp, augment
        self._check_mask()
        self.locations, self.groups = self._plan(min_labelled)

    def _check_mask(self) -> None:
        if self.mask.ndim != 2 or not np.issubdtype(self.mask.dtype, np.integer):
            raise RckdError(
                f"the mask must be a 2-D integer label image, got {self.mask.shape} {self.mask.dtype}"
            )
        values = np.unique(self.mask)
        outside = [int(v) for v in values if v < 0 or v > len(self.classes)]
        if outside:
            raise RckdError(
                f"mask values {outside} are outside the class list ({len(self.classes)} classes: "
                f"{', '.join(self.classes)}; 0 = unlabelled); add classes or repaint those pixels"
            )
        present = [self.classes[v - 1] for v in values if v > 0]
        if len(present) < 2:
            raise RckdError(
                f"the mask labels only one class ({', '.join(present) or 'none'}); paint "
                "examples of at least two classes (0 stays unlabelled)"
            )
        slide_shape = self.source.get().shape
        self.mask_downsample = slide_shape[0] / self.mask.shape[0]
        if abs(slide_shape[1] / self.mask.shape[1] / self.mask_downsample - 1) > 0.02:
            raise RckdError(
                f"mask of shape {self.mask.shape} is not aligned with the image {slide_shape}: "
                "the two axes scale differently; give the mask of this image"
            )

    def _plan(self, min_labelled: float):
        slide = self.source.get()
        footprint = self.size * self.mpp / slide.mpp
        side = max(1, round(footprint / self.mask_downsample))  # tile side in mask px
        labelled = (
            _box_fraction(self.mask > 0, side, side) if min(self.mask.shape) >= side else None
        )
        if labelled is None or not (labelled >= min_labelled).any():
            raise RckdError(
                f"no {self.size}-px tile at {self.mpp} µm/px is at least {min_labelled:.0%} "
                "labelled; paint larger areas or lower min_labelled"
            )
        cells = np.argwhere(labelled >= min_labelled) * side * self.mask_downsample
        cells = cells[readable_tiles(slide, cells, self.size, self.mpp)]
        block = BLOCK_TILES * footprint
        groups = [f"{self.source.name}:{int(y // block)},{int(x // block)}" for y, x in cells]
        return np.floor(cells).astype(np.int64), groups

    def __len__(self) -> int:
        return len(self.locations)

    def _mask_tile(self, y: int, x: int, footprint: float) -> np.ndarray:
        centres = (np.arange(self.size) + 0.5) * footprint / self.size  # nearest-neighbour sampling
        rows = ((y + centres) / self.mask_downsample).astype(int).clip(0, self.mask.shape[0] - 1)
        cols = ((x + centres) / self.mask_downsample).astype(int).clip(0, self.mask.shape[1] - 1)
        return self.mask[np.ix_(rows, cols)].astype(np.int64)

    def __getitem__(self, index: int) -> dict:
        y, x = (int(v) for v in self.locations[index])
        slide = self.source.get()
        image = to_tensor(slide.read_at_mpp(y, x, self.size, self.mpp))
        mask = torch.from_numpy(self._mask_tile(y, x, self.size * self.mpp / slide.mpp))
        if self.augment is not None:
            image, mask = self.augment(item_rng(), image, mask)
        return {"image": image, "mask": mask}
