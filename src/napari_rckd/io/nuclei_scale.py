"""How many µm a pixel spans, estimated from the size of the nuclei in the pixels alone.

Nuclei are blobs of hematoxylin about 5–10 µm across whatever the scanner, so the blob size
in pixels says roughly how many µm a pixel spans. The size is measured without any prior in
µm (which would make the answer circular): the hematoxylin optical density (colour
deconvolution, as in the classical teacher) is filtered by a scale-normalised Laplacian of
Gaussian at sigmas from 1 to 32 px; dark blobs of radius r respond most at sigma = r / √2.
The 99th percentile of the response at each sigma, averaged over the images, peaks at the
sigma of the nuclei that dominate the tissue; ``REFERENCE_SIGMA_UM`` (calibrated on sources
of known mpp, see ``napari-rckd bench mpp`` and docs/rckd.md) turns it into µm per pixel.

The estimate is rough (tens of percent: nuclei differ between tissues, and some sets differ
from what their pixels suggest), so it says when it is unsure: too few images with tissue,
images that disagree, or a peak at the edge of the sigmas or without a clear top.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

SIGMAS_PX = np.geomspace(1.0, 32.0, 21)
PERCENTILE = 99.0
# µm per pixel = REFERENCE_SIGMA_UM / (peak sigma in px). Calibrated as the geometric mean of
# the peak sigma in µm on two calibration sources only (MoNuSeg training images at 0.2527
# µm/px and CRC-VAL-HE-7K tiles at 0.5 µm/px, 16 images each as `bench mpp` reads them);
# every other source is held out. MAX_SPREAD was widened from 0.35 after LC25000 (no
# published mpp) came out at ±19 %: an honest note, it was not fitted to an error.
REFERENCE_SIGMA_UM = 1.69
CALIBRATION_SOURCES = ("monuseg-train", "crc-val-he-7k")
CROP = 512  # images are measured in crops of at most this side
MAX_CROPS = 2  # per image
MIN_IMAGES = 3  # fewer images with tissue: unsure
MAX_SPREAD = 0.45  # interquartile range of log(per-image estimate) above this (±25 %): unsure
MIN_PROMINENCE = 1.08  # peak over the response 4x smaller and larger; below: unsure
MPP_RANGE = (0.1, 2.0)  # a microscope image outside it: unsure


@dataclass(frozen=True)
class ScaleEstimate:
    """An mpp estimate (None when no image had tissue), whether to trust it, and why not."""

    mpp: float | None
    sure: bool
    images: int  # images that contributed
    spread: float  # interquartile range of log(per-image estimate)
    reason: str  # why it is unsure ("" when sure)

    def evidence(self) -> str:
        """What the estimate rests on: how many images, how much they disagree."""
        spread = 100 * (math.exp(self.spread / 2) - 1)
        return f"the nuclei of {self.images} images (spread ±{spread:.0f} %)"

    def describe(self) -> str:
        if self.mpp is None:
            return f"no estimate ({self.reason})"
        text = f"{self.mpp:.3g} µm/px from {self.evidence()}"
        return text if self.sure else f"{text}, unsure: {self.reason}"


def _density(rgb: np.ndarray) -> np.ndarray | None:
    from skimage.color import rgb2hed

    density = rgb2hed(np.ascontiguousarray(rgb[..., :3]))[..., 0].astype(np.float32)
    spread = float(density.std())
    if spread < 1e-6:
        return None
    return (density - density.mean()) / spread


def scale_spectrum(rgb: np.ndarray) -> np.ndarray | None:
    """The 99th percentile of the scale-normalised -LoG of the hematoxylin density at each of
    ``SIGMAS_PX``; None for an image without tissue (blank or background).

    Sigmas above 2 px are filtered on the density shrunk by a power of two (block means) at
    the sigma shrunk alike, the same scale-normalised response at a fraction of the cost."""
    from scipy import ndimage as ndi

    from napari_rckd.io.tissue import tissue_fraction

    if rgb.ndim != 3 or min(rgb.shape[:2]) < 32 or tissue_fraction(rgb[..., :3]) < 0.3:
        return None
    density = _density(rgb)
    if density is None:
        return None
    shrunk = {1: density}
    values = []
    for sigma in SIGMAS_PX:
        factor = 2 ** max(0, int(math.log2(sigma / 2)))
        while min(density.shape) // factor < 16:
            factor //= 2
        if factor not in shrunk:
            shrunk[factor] = _shrink(density, factor)
        small = sigma / factor
        response = -(small * small) * ndi.gaussian_laplace(shrunk[factor], small)
        values.append(np.percentile(response, PERCENTILE))
    return np.array(values)


def peak_sigma(spectrum: np.ndarray) -> tuple[float, float, bool]:
    """(sigma of the peak in px, interpolated; prominence; whether the peak is inside)."""
    index = int(np.argmax(spectrum))
    inside = 0 < index < len(spectrum) - 1
    offset = 0.0
    if inside:
        before, top, after = spectrum[index - 1 : index + 2]
        curvature = before - 2 * top + after
        offset = 0.5 * (before - after) / curvature if curvature < 0 else 0.0
    step = math.log(SIGMAS_PX[1] / SIGMAS_PX[0])
    sigma = math.exp(math.log(SIGMAS_PX[index]) + offset * step)
    away = round(math.log(4) / step)  # the response 4x smaller and 4x larger
    sides = [spectrum[i] for i in (index - away, index + away) if 0 <= i < len(spectrum)]
    prominence = float(spectrum[index] / max(sides)) if sides else 1.0
    return sigma, prominence, inside


def _shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """Means of factor×factor blocks (a partial last row and column of blocks is dropped)."""
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:height, :width].reshape(height // factor, factor, width // factor, factor)
    return blocks.mean(axis=(1, 3))


def crops(rgb: np.ndarray, side: int = CROP, count: int = MAX_CROPS) -> list[np.ndarray]:
    """Up to ``count`` side×side crops spread over an image (the image itself when small)."""
    height, width = rgb.shape[:2]
    if height <= side and width <= side:
        return [rgb]
    tops = np.linspace(0, max(0, height - side), 2 if height > side else 1).astype(int)
    lefts = np.linspace(0, max(0, width - side), 2 if width > side else 1).astype(int)
    return [rgb[t : t + side, left : left + side] for t in tops for left in lefts][:count]


def estimate_mpp(images: Iterable[np.ndarray]) -> ScaleEstimate:
    """Estimate µm per pixel from RGB images of one source (one scanner and magnification)."""
    spectra = []
    for image in images:
        per_image = [
            s for s in (scale_spectrum(c) for c in crops(np.asarray(image))) if s is not None
        ]
        if per_image:
            spectra.append(np.mean(per_image, axis=0))
    if not spectra:
        return ScaleEstimate(None, False, 0, 0.0, "no image with enough tissue")
    sigma, prominence, inside = peak_sigma(np.mean(spectra, axis=0))
    mpp = REFERENCE_SIGMA_UM / sigma
    logs = [math.log(REFERENCE_SIGMA_UM / peak_sigma(s)[0]) for s in spectra]
    spread = float(np.subtract(*np.percentile(logs, [75, 25]))) if len(logs) > 1 else 0.0
    reasons = []
    if len(spectra) < MIN_IMAGES:
        reasons.append(f"only {len(spectra)} images with tissue (at least {MIN_IMAGES} wanted)")
    if spread > MAX_SPREAD:
        reasons.append("the images disagree")
    if not inside or prominence < MIN_PROMINENCE:
        reasons.append("no clear nucleus size")
    if not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        reasons.append(f"outside {MPP_RANGE[0]:g}–{MPP_RANGE[1]:g} µm/px")
    return ScaleEstimate(mpp, not reasons, len(spectra), spread, "; ".join(reasons))


def slide_images(slide, count: int = 8, side: int = 512) -> Iterable[np.ndarray]:
    """Up to ``count`` level-0 crops spread over a slide's tissue, for the nuclei estimate."""
    from napari_rckd.io.tissue import tissue_fraction

    height, width = slide.shape
    side = min(side, height, width)
    ys = np.linspace(0, height - side, 6).astype(int)  # a 6×6 grid: tissue is somewhere
    xs = np.linspace(0, width - side, 6).astype(int)
    given = 0
    for y in ys:
        for x in xs:
            crop = slide.read_region(0, int(y), int(x), side, side)
            if tissue_fraction(crop) >= 0.3:
                yield crop
                given += 1
                if given == count:
                    return
