"""Instances from a network's nuclear and contour maps: every nuclear pixel labelled, contours
separating neighbours, no nucleus lost for lack of a core."""

from __future__ import annotations

import numpy as np

from napari_rckd.teachers.instances import h_maxima_by_support, instances_from_probability


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _contour(mask):
    from scipy import ndimage as ndi

    return mask & ~ndi.binary_erosion(mask, iterations=2)


def test_contours_separate_touching_nuclei_and_every_pixel_is_labelled():
    shape = (64, 96)
    left, right = _disc(shape, (32, 34), 12), _disc(shape, (32, 56), 12)
    nuclei = left | right
    prob = np.where(nuclei, 0.9, 0.05)
    boundary = np.where(_contour(left) | _contour(right), 0.95, 0.02)
    labels = instances_from_probability(prob, 0.5, boundary)
    assert labels.max() == 2
    assert np.array_equal(labels > 0, nuclei)  # no nuclear pixel lost to the contours
    assert len(np.unique(labels[_disc(shape, (32, 30), 6)])) == 1
    assert labels[32, 30] != labels[32, 60]


def test_a_nucleus_that_is_all_contour_stays_one_instance():
    shape = (48, 48)
    small = _disc(shape, (24, 24), 5)  # ~20 µm² at 0.5 µm/px: above the 12 µm² speck size
    prob = np.where(small, 0.8, 0.0)
    boundary = np.where(small, 0.9, 0.0)  # the core is empty
    labels = instances_from_probability(prob, 0.5, boundary)
    assert labels.max() == 1 and np.array_equal(labels > 0, small)


def test_without_contours_touching_nuclei_split_by_distance_and_specks_drop():
    shape = (64, 96)
    nuclei = _disc(shape, (32, 34), 12) | _disc(shape, (32, 56), 12)
    speck = _disc(shape, (5, 5), 1)
    prob = np.where(nuclei | speck, 0.9, 0.1)
    labels = instances_from_probability(prob, 0.5)
    assert labels.max() == 2 and labels[5, 5] == 0


def test_confident_logits_give_nuclei_without_overflow_warnings():
    """A student trained on 0/1 targets answers logits far below −88, where a float32
    ``1 / (1 + exp(−x))`` overflows and floods the user's terminal with warnings."""
    import warnings

    from napari_rckd.teachers.network import nuclei_from_logits

    nucleus = _disc((64, 64), (32, 32), 10)
    logits = np.stack([np.where(nucleus, 120.0, -300.0), np.full((64, 64), -300.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        answer = nuclei_from_logits(logits.astype(np.float32), 0.5, use_boundary=True)
    assert answer.labels.max() == 1
    assert np.array_equal(answer.labels > 0, nucleus)
    assert answer.prob.min() == 0.0 and answer.prob.max() == 1.0


def test_h_maxima_one_support_at_a_time_equals_skimage_on_the_whole_image():
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima

    rng = np.random.default_rng(3)
    shape = (160, 200)
    nuclei = np.zeros(shape, bool)
    for _ in range(40):  # touching, overlapping, cut by the edges, alone
        centre = rng.integers(0, shape, 2)
        nuclei |= _disc(shape, centre, rng.uniform(3, 11))
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(nuclei), 1.0)
    assert ndi.label(distance > 0)[1] > 3  # several supports, so the split is exercised
    for h in (0.5, 1.0, 2.0, 4.0):
        assert np.array_equal(h_maxima_by_support(distance, h), h_maxima(distance, h))
    assert not h_maxima_by_support(np.zeros(shape), 1.0).any()
