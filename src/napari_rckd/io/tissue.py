"""Tissue detection at low resolution: which parts of a slide are worth reading.

Training samples tiles only where there is tissue, so the mask is computed once on a
coarse view (~8 µm/px) where a whole slide is a few hundred thousand pixels. A pixel is
tissue when it is coloured (saturation), neither glass-white nor black, and not ink: H&E
is pink to purple, so green/blue/cyan hues and strongly saturated reds are pen marks.

The coarse view is the mean of integer blocks of the coarsest level still fine enough, read
in bands, so a slide without a pyramid costs one decode of its level 0 and a few sums, and
never sits in memory whole. Masks are kept per slide file (path, size, modification time,
mpp), so predict, Analyze and the benchmarks detect a slide's tissue once.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.io.slide import DamagedSlideError

log = logging.getLogger(__name__)

# Resolution the mask is computed at when the slide's mpp is known.
TISSUE_MPP = 8.0
# Without an mpp, aim for a mask this many pixels on its long side.
TISSUE_LONG_SIDE = 1024

MIN_SATURATION = 0.07  # glass and faint smudges are greyish
MAX_VALUE = 0.92  # brighter than this is background light
MIN_VALUE = 0.25  # darker than this is ink, folds' shadows or scanner borders
PEN_HUE_RANGE = (0.15, 0.66)  # yellow-green to blue: never an H&E stain
RED_PEN_SATURATION = 0.3  # red ink is more saturated than eosin at the same hue
RED_HUE_MARGIN = 0.06  # hues within this of pure red (0/1)
MIN_TEXTURE = 0.025  # median Sobel magnitude (grey in [0, 1]) of tissue at full resolution
MIN_OBJECT_UM2 = 20_000  # tissue fragments smaller than ~140 µm square are dust or debris
BAND_BYTES = 64 * 2**20  # the source level is read and reduced in bands of about this size
CACHED_MASKS = 16  # slides whose masks are kept


def tissue_pixels(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel tissue decision (bool H×W) for an RGB(A) uint8 image, without clean-up.

    Hue, saturation and value as scikit-image's ``rgb2hsv`` computes them (the same float64
    operations, so the same decisions for every colour), without its bookkeeping.
    """
    rgb = np.asarray(rgb)[..., :3] * (1 / 255)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(-1)
    delta = value - rgb.min(-1)
    with np.errstate(divide="ignore", invalid="ignore"):  # grey: 0/0 = nan fails every test
        saturation = delta / value
        hue = np.where(
            blue == value,
            4 + (red - green) / delta,
            np.where(green == value, 2 + (blue - red) / delta, (green - blue) / delta),
        )
    hue = (hue / 6) % 1
    coloured = (saturation > MIN_SATURATION) & (value < MAX_VALUE) & (value > MIN_VALUE)
    pen = (hue > PEN_HUE_RANGE[0]) & (hue < PEN_HUE_RANGE[1])
    reddish = (hue < RED_HUE_MARGIN) | (hue > 1 - RED_HUE_MARGIN)
    pen |= reddish & (saturation > RED_PEN_SATURATION)
    return coloured & ~pen


def clean_mask(mask: np.ndarray, min_object_px: int) -> np.ndarray:
    """Close small gaps, drop specks smaller than ``min_object_px`` and fill small holes."""
    from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects

    mask = closing(mask, disk(1))
    mask = remove_small_objects(mask, max_size=max(1, min_object_px - 1))
    return remove_small_holes(mask, max_size=max(1, min_object_px - 1))


def tissue_fraction(rgb: np.ndarray) -> float:
    """Fraction of an RGB tile's pixels that are tissue (no clean-up: for tile checks)."""
    return float(tissue_pixels(rgb).mean())


def is_tissue_tile(rgb: np.ndarray, min_fraction: float = 0.3) -> bool:
    """Whether a full-resolution tile (~0.25-1 µm/px) is mostly real tissue.

    Besides colour, tissue has texture (nuclei, fibres) where ink and out-of-focus smudges
    are smooth: the median edge strength over the tissue pixels must reach ``MIN_TEXTURE``.
    """
    from skimage.color import rgb2gray
    from skimage.filters import sobel

    rgb = np.asarray(rgb)[..., :3]
    tissue = tissue_pixels(rgb)
    if tissue.mean() < min_fraction:
        return False
    return float(np.median(sobel(rgb2gray(rgb))[tissue])) >= MIN_TEXTURE


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask and how it maps to level 0: mask pixel (i, j) covers level-0
    pixels ``[i*downsample, (i+1)*downsample)`` in y (and likewise in x)."""

    mask: np.ndarray
    downsample: float

    def fraction(self, y: float, x: float, height: float, width: float) -> float:
        """Tissue fraction of a level-0 box (the mask pixels it touches)."""
        d = self.downsample
        y0, x0 = max(0, int(y // d)), max(0, int(x // d))
        y1 = min(self.mask.shape[0], int(np.ceil((y + height) / d)))
        x1 = min(self.mask.shape[1], int(np.ceil((x + width) / d)))
        if y1 <= y0 or x1 <= x0:
            return 0.0
        return float(self.mask[y0:y1, x0:x1].mean())

    @property
    def area_px0(self) -> float:
        """Tissue area in level-0 pixels."""
        return float(self.mask.sum()) * self.downsample**2


def _choose_downsample(slide) -> float:
    height, width = slide.levels[0].shape[:2]
    if slide.mpp:
        return max(1.0, TISSUE_MPP / slide.mpp)
    return max(1.0, max(height, width) / TISSUE_LONG_SIDE)


def _integer_factor(factor: float) -> int:
    """The whole number of pixels per block nearest to ``factor`` (by ratio), at least 1."""
    low = max(1, math.floor(factor))
    return low if factor / low <= (low + 1) / factor else low + 1


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """RGB uint8 mean of each ``factor``×``factor`` block (the last row and column of blocks
    average the pixels they have)."""
    image = np.asarray(image)[..., :3]
    if factor == 1:
        return image
    sums, rows = _sum_blocks(image, factor, 0)
    sums, cols = _sum_blocks(sums, factor, 1)
    means = sums.astype(np.float32)
    means *= (1 / np.multiply.outer(rows, cols)).astype(np.float32)[..., None]
    return np.rint(means, out=means).astype(np.uint8)


def _sum_blocks(array: np.ndarray, factor: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of runs of ``factor`` along ``axis`` (the last run may be shorter), and run lengths.

    One strided add per offset in the run: a single pass over the data, however small ``factor``.
    """
    n = array.shape[axis]
    runs = -(-n // factor)
    shape = list(array.shape)
    shape[axis] = runs
    sums = np.zeros(shape, np.uint32)
    for offset in range(min(factor, n)):
        count = len(range(offset, n, factor))  # the short last run misses the last offsets
        target = (slice(None),) * axis + (slice(0, count),)
        source = (slice(None),) * axis + (slice(offset, n, factor),)
        np.add(sums[target], array[source], out=sums[target])
    lengths = np.full(runs, factor)
    lengths[-1] = n - factor * (runs - 1)
    return sums, lengths


def _read_reduced(slide, level: int, factor: int) -> tuple[np.ndarray, DamagedSlideError | None]:
    """Block means of a whole level, read in bands; damaged tiles are read as napari shows
    them (hatched, so not tissue) and the first damage is returned."""
    height, width = slide.levels[level].shape[:2]
    step = factor * max(1, BAND_BYTES // (factor * width * 3))
    bands, damage = [], None
    for y in range(0, height, step):
        rows = min(step, height - y)
        try:
            band = slide.read_region(level, y, 0, rows, width)
        except DamagedSlideError as error:
            damage = damage or error
            band = np.asarray(slide.levels[level][y : y + rows])
        bands.append(block_mean(band, factor))
    return np.concatenate(bands), damage


_masks: OrderedDict[tuple, TissueMask] = OrderedDict()
_masks_lock = threading.Lock()


def _cache_key(slide) -> tuple | None:
    try:
        stat = os.stat(slide.path)
    except (OSError, TypeError):
        return None
    path = str(Path(slide.path).resolve())
    return (path, stat.st_mtime_ns, stat.st_size, slide.mpp, tuple(slide.shape))


def clear_tissue_cache() -> None:
    """Forget every kept mask (the next `detect_tissue` of each slide computes it again)."""
    with _masks_lock:
        _masks.clear()


def detect_tissue(slide, name: str | None = None) -> TissueMask:
    """Tissue mask of a slide from its coarsest level still at least as fine as ~8 µm/px.

    The same slide file gives back the same (read-only) mask without computing it again.
    Raises an RckdError naming the slide when nothing looks like tissue.
    """
    key = _cache_key(slide)
    with _masks_lock:
        if key in _masks:
            _masks.move_to_end(key)
            return _masks[key]
    tissue = _compute_tissue(slide, name)
    if key is not None:
        with _masks_lock:
            _masks[key] = tissue
            while len(_masks) > CACHED_MASKS:
                _masks.popitem(last=False)
    return tissue


def _compute_tissue(slide, name: str | None) -> TissueMask:
    target = _choose_downsample(slide)
    level = slide.best_level_for(target)
    level_height = slide.levels[level].shape[0]
    factor = _integer_factor(target / float(slide.downsamples[level]))
    image, damage = _read_reduced(slide, level, factor)
    downsample = slide.shape[0] / level_height * factor
    mpp0 = slide.mpp or 0.5  # without an mpp assume 20x for the speck size
    min_object_px = max(4, round(MIN_OBJECT_UM2 / (mpp0 * downsample) ** 2))
    mask = clean_mask(tissue_pixels(image), min_object_px)
    if not mask.any():
        if damage is not None:  # the tissue may well be in the tiles that cannot be read
            raise damage
        raise RckdError(
            f"no tissue found in {name or 'the slide'}: only glass, background or ink-coloured "
            "pixels (H&E is pink to purple; green/blue count as pen); leave it out or check the file"
        )
    log.debug(
        "tissue mask %s at downsample %.1f: %.1f%% tissue",
        mask.shape,
        downsample,
        100 * mask.mean(),
    )
    mask.flags.writeable = False  # shared by every caller of the same slide
    return TissueMask(mask=mask, downsample=downsample)
