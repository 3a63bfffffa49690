"""Instances from a nuclear probability map: every teacher's last step, and live inference's.

A nucleus is a connected region of ``prob > threshold`` without specks; touching nuclei are
split by a distance-transform watershed, or, when the model also predicts contours, by a
watershed over its contour map seeded by the cores the contours leave (docs/teachers.md).
"""

from __future__ import annotations

import numpy as np


def split_touching(foreground: np.ndarray, h_px: float, sigma_px: float = 1.0) -> np.ndarray:
    """Instances from a binary mask: markers are h-maxima of the smoothed distance transform.

    A component without a core deep enough to seed a marker keeps one label of its own
    rather than vanishing; labels come out consecutive.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    if not foreground.any():
        return np.zeros(foreground.shape, np.int32)
    distance = ndi.distance_transform_edt(foreground)
    if sigma_px > 0:
        distance = ndi.gaussian_filter(distance, sigma_px)
    markers, n_markers = ndi.label(h_maxima_by_support(distance, h_px) & foreground)
    markers = _orphans_as_markers(markers, n_markers, foreground)
    return _consecutive(watershed(-distance, markers, mask=foreground))


def h_maxima_by_support(image: np.ndarray, h: float) -> np.ndarray:
    """skimage's ``h_maxima`` of a non-negative image, one connected support (``image > 0``,
    8-connected) at a time: the same pixels, and about 3× faster on a nuclei tile.

    skimage sorts every pixel of the image it is given; nuclei cover a small part of most
    tiles. A maximum's height is measured along paths to higher ground, and any path out of a
    support crosses a zero, which is at or below every candidate's reconstruction (≥ 0), so
    each support can be computed alone, the others masked to 0 in its crop.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima

    support, _ = ndi.label(image > 0, structure=np.ones((3, 3), bool))
    maxima = np.zeros(image.shape, np.uint8)
    for index, box in enumerate(ndi.find_objects(support), start=1):
        box = tuple(slice(max(side.start - 1, 0), side.stop + 1) for side in box)
        crop = np.where(support[box] == index, image[box], 0)
        maxima[box] |= h_maxima(crop, h)
    return maxima


def _orphans_as_markers(markers: np.ndarray, count: int, foreground: np.ndarray) -> np.ndarray:
    """``markers`` plus one marker for each foreground component that has none."""
    from scipy import ndimage as ndi

    components, n_components = ndi.label(foreground)
    marked = np.zeros(n_components + 1, bool)
    marked[components[markers > 0]] = True
    orphan = foreground & ~marked[components]
    markers[orphan] = components[orphan] + count
    return markers


def _consecutive(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels)[0].astype(np.int32)


# Bumped whenever instances_from_probability changes what it returns: network teachers put it
# in their identity, so responses cached under the old rule are not reused.
INSTANCES_VERSION = 2


def instances_from_probability(
    prob: np.ndarray,
    mpp: float,
    boundary: np.ndarray | None = None,
    threshold: float = 0.5,
    min_area_um2: float = 12.0,
    split_h_um: float = 0.5,
) -> np.ndarray:
    """Instance labels from a nuclear probability map (and optionally a contour probability).

    The nuclei are ``prob > threshold`` without specks, and every one of their pixels gets a
    label. Without contours, touching nuclei are split by a distance-transform watershed.
    With contours, the cores (``prob × (1 − boundary) > threshold``, split where they still
    touch) seed a watershed over the contour map inside the nuclei, so predicted contours
    separate neighbours; a nucleus whose contours leave it no core is one instance. (Growing
    the cores back by a fixed distance lost every nucleus without a core: on CPM-15 images a
    model never trained on scored Dice 0.61 that way against 0.74 for its own foreground.)
    """
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    min_px = int(min_area_um2 / mpp**2)
    foreground = remove_small_objects(prob > threshold, max_size=min_px)
    if boundary is None:
        return split_touching(foreground, split_h_um / mpp)
    cores = remove_small_objects(
        (prob * (1 - boundary) > threshold) & foreground, max_size=min_px // 4
    )
    markers = split_touching(cores, split_h_um / mpp)
    markers = _orphans_as_markers(markers, int(markers.max()), foreground)
    return _consecutive(watershed(boundary, markers, mask=foreground))
