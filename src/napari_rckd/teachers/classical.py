"""Classical H&E nuclei teachers that need no weights: the built-in teacher and the Otsu baseline.

Both start from the hematoxylin optical density (colour deconvolution, Ruifrok & Johnston),
which is where nuclei are dark. The baseline thresholds it once per tile (Otsu) and calls every
connected blob a nucleus. The built-in teacher adds what the baseline lacks: a local threshold
(stain and illumination vary across a tile), a floor relative to the tile's own stain range,
morphological clean-up, and a distance-transform watershed that splits touching nuclei.
Sizes are in µm and converted at the working mpp, so one parameter set serves 20x and 40x.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit

from napari_rckd.teachers.base import ResamplingTeacher, TeacherOutput
from napari_rckd.teachers.instances import split_touching


def hematoxylin(tile: np.ndarray, sigma_px: float) -> np.ndarray:
    """Smoothed hematoxylin optical density of an RGB uint8 tile (float32, ≥ 0)."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed

    density = rgb2hed(tile)[..., 0].astype(np.float32)
    density -= density.min()
    return ndi.gaussian_filter(density, sigma_px) if sigma_px > 0 else density


@dataclass(frozen=True)
class OtsuTeacher(ResamplingTeacher):
    """The baseline: Otsu threshold of the smoothed hematoxylin channel, connected components."""

    mpp: float = 0.5
    sigma_um: float = 1.0
    name: str = "otsu"
    version: int = 1

    @property
    def identity(self) -> str:
        return "otsu:" + json.dumps(asdict(self), sort_keys=True)

    def _predict_native(self, tile: np.ndarray) -> TeacherOutput:
        from scipy import ndimage as ndi
        from skimage.filters import threshold_otsu

        density = hematoxylin(tile, self.sigma_um / self.mpp)
        threshold = threshold_otsu(density) if np.ptp(density) > 0 else np.inf
        foreground = density > threshold
        labels, _ = ndi.label(foreground)
        # Soft but honest: a logistic of the distance to the Otsu threshold.
        spread = max(float(np.std(density)), 1e-6)
        prob = expit((density - threshold) / (0.25 * spread))
        return TeacherOutput(prob.astype(np.float32), labels.astype(np.int32))


@dataclass(frozen=True)
class ClassicalTeacher(ResamplingTeacher):
    """The classical H&E nuclei detector (no weights): adaptive threshold, clean-up, watershed."""

    mpp: float = 0.5
    sigma_um: float = 0.75  # smoothing before thresholding
    block_um: float = 20.0  # side of the local-threshold window
    local_offset: float = 0.15  # in units of the tile's stain spread
    floor: float = 0.5  # global floor: fraction of the way from background to the Otsu level
    min_area_um2: float = 12.0  # smaller blobs are debris
    hole_area_um2: float = 12.0  # smaller holes inside nuclei are filled
    open_um: float = 0.75  # opening radius that detaches thin bridges
    split_h_um: float = 0.5  # how deep a distance-transform core must be to seed a nucleus
    name: str = "classical"
    version: int = 1

    @property
    def identity(self) -> str:
        return "classical:" + json.dumps(asdict(self), sort_keys=True)

    def _predict_native(self, tile: np.ndarray) -> TeacherOutput:
        prob, foreground = self._probability_and_mask(tile)
        return TeacherOutput(prob, split_touching(foreground, self.split_h_um / self.mpp))

    def nuclear_probability(self, tile: np.ndarray) -> np.ndarray:
        """The probability alone, all a prior needs: no watershed."""
        return self._probability_and_mask(tile)[0]

    def _probability_and_mask(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage as ndi
        from skimage.filters import threshold_local, threshold_otsu
        from skimage.morphology import disk, remove_small_holes, remove_small_objects

        px = 1 / self.mpp  # pixels per µm
        density = hematoxylin(tile, self.sigma_um * px)
        if np.ptp(density) <= 1e-6:
            return np.zeros(density.shape, np.float32), np.zeros(density.shape, bool)
        spread = float(np.std(density))
        otsu = threshold_otsu(density)
        background = float(np.median(density[density < otsu])) if (density < otsu).any() else 0.0
        floor = background + self.floor * (otsu - background)
        block = int(self.block_um * px) | 1
        local = threshold_local(density, block, method="gaussian") + self.local_offset * spread
        threshold = np.maximum(local, floor)
        foreground = density > threshold
        radius = int(round(self.open_um * px))
        if radius > 0:
            foreground = ndi.binary_opening(foreground, disk(radius))
        foreground = remove_small_holes(foreground, max_size=int(self.hole_area_um2 * px * px))
        foreground = remove_small_objects(foreground, max_size=int(self.min_area_um2 * px * px))
        # Logistic of the margin over the per-pixel threshold, folded so that
        # prob > 0.5 exactly where the cleaned mask says nucleus.
        margin = expit((density - threshold) / (0.25 * spread))
        prob = np.where(foreground, 0.5 + 0.5 * margin, 0.5 * margin).astype(np.float32)
        return prob, foreground
