"""Tissue detection at low resolution: which parts of a slide are worth reading.

Training samples tiles only where there is tissue, so the mask is computed once on a
coarse view (~8 µm/px) where a whole slide is a few hundred thousand pixels. A pixel is
tissue when it is coloured (saturation), neither glass-white nor black, and not ink: H&E
is pink to purple, so green/blue/cyan hues and strongly saturated reds are pen marks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


def tissue_pixels(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel tissue decision (bool H×W) for an RGB(A) uint8 image, without clean-up."""
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(np.asarray(rgb)[..., :3])
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    coloured = (saturation > MIN_SATURATION) & (value < MAX_VALUE) & (value > MIN_VALUE)
    pen = (hue > PEN_HUE_RANGE[0]) & (hue < PEN_HUE_RANGE[1])
    red = (hue < RED_HUE_MARGIN) | (hue > 1 - RED_HUE_MARGIN)
    pen |= red & (saturation > RED_PEN_SATURATION)
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


def detect_tissue(slide, name: str | None = None) -> TissueMask:
    """Tissue mask of a slide from its coarsest level still at least as fine as ~8 µm/px.

    Raises an RckdError naming the slide when nothing looks like tissue.
    """
    from skimage.transform import resize

    target = _choose_downsample(slide)
    level = slide.best_level_for(target)
    level_downsample = float(slide.downsamples[level])
    height, width = slide.levels[level].shape[:2]
    damage = None
    try:
        image = np.asarray(slide.read_region(level, 0, 0, height, width))
    except DamagedSlideError as error:  # read as napari shows it: damaged tiles hatched, not tissue
        damage = error
        image = np.asarray(slide.levels[level])
    factor = target / level_downsample
    if factor > 1.05:  # shrink to the target resolution: less work, same decision
        shape = (max(1, round(height / factor)), max(1, round(width / factor)))
        image = resize(image[..., :3], shape, order=1, preserve_range=True, anti_aliasing=True)
        image = image.astype(np.uint8)
    downsample = slide.levels[0].shape[0] / image.shape[0]
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
    return TissueMask(mask=mask, downsample=downsample)
