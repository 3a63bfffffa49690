"""The Teacher contract and what every teacher shares: input checks and resampling.

A teacher turns an RGB uint8 tile at some µm/px into a nuclear probability map and an
instance label map of the same size. Each teacher works best at one resolution
(``teacher.mpp``); ``predict`` resamples the tile there and the outputs back, so callers never
have to care.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from napari_rckd.errors import RckdError

# Resampling below this relative mpp difference costs more (blur) than it gains.
MPP_TOLERANCE = 0.05


class TeacherOutput(NamedTuple):
    prob: np.ndarray  # float32 H×W in [0, 1]: nuclear pixel probability
    labels: np.ndarray  # int32 H×W: instance ids, 0 = background


@runtime_checkable
class Teacher(Protocol):
    name: str
    mpp: float

    @property
    def identity(self) -> str: ...

    def predict(self, tile: np.ndarray, mpp: float) -> TeacherOutput: ...


def check_tile(tile: np.ndarray, mpp: float) -> np.ndarray:
    """The tile as a contiguous H×W×3 uint8 array, or an RckdError saying what is wrong."""
    tile = np.asarray(tile)
    if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8:
        raise RckdError(
            f"a teacher needs an RGB uint8 tile of shape H×W×3, got {tile.shape} {tile.dtype}; "
            "drop any alpha channel and convert to uint8 first"
        )
    if min(tile.shape[:2]) < 8:
        raise RckdError(f"tile of shape {tile.shape[:2]} is too small for a teacher (at least 8×8)")
    if not (isinstance(mpp, (int, float)) and np.isfinite(mpp) and mpp > 0):
        raise RckdError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
    return np.ascontiguousarray(tile)


def resize_image(tile: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 RGB tile (anti-aliased when shrinking): skimage's ``resize``
    one channel at a time, the same pixels in about half the time (its 3-D zoom also
    interpolates along the channel axis, at a zoom of 1)."""
    from scipy import ndimage as ndi

    factors = np.divide(tile.shape[:2], shape)
    shrinking = shape[0] < tile.shape[0]
    sigma = np.maximum(0, (factors - 1) / 2) if shrinking else 0  # skimage's anti-aliasing
    out = np.empty((*shape, tile.shape[2]), np.float64)
    for channel in range(tile.shape[2]):
        plane = tile[..., channel].astype(np.float64)
        if shrinking:
            plane = ndi.gaussian_filter(plane, sigma, mode="mirror")
        ndi.zoom(plane, 1 / factors, out[..., channel], order=1, mode="mirror", grid_mode=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_output(output: TeacherOutput, shape: tuple[int, int]) -> TeacherOutput:
    """Probability bilinearly, labels by nearest neighbour, to ``shape``."""
    from skimage.transform import resize

    prob = resize(output.prob, shape, order=1, preserve_range=True, anti_aliasing=False)
    labels = resize(output.labels, shape, order=0, preserve_range=True, anti_aliasing=False)
    return TeacherOutput(
        np.clip(prob, 0, 1).astype(np.float32), labels.astype(np.int32, copy=False)
    )


class ResamplingTeacher:
    """Base for teachers: subclasses implement ``_predict_native`` at ``self.mpp``."""

    name = "teacher"
    mpp = 0.5

    @property
    def identity(self) -> str:
        raise NotImplementedError

    def _predict_native(self, tile: np.ndarray) -> TeacherOutput:
        raise NotImplementedError

    def predict(self, tile: np.ndarray, mpp: float) -> TeacherOutput:
        tile = check_tile(tile, mpp)
        height, width = tile.shape[:2]
        scale = mpp / self.mpp
        if abs(scale - 1) <= MPP_TOLERANCE:
            return self._checked(self._predict_native(tile), (height, width))
        work_shape = (max(8, round(height * scale)), max(8, round(width * scale)))
        output = self._predict_native(resize_image(tile, work_shape))
        return self._checked(resize_output(output, (height, width)), (height, width))

    def _checked(self, output: TeacherOutput, shape: tuple[int, int]) -> TeacherOutput:
        prob = np.asarray(output.prob, dtype=np.float32)
        labels = np.asarray(output.labels, dtype=np.int32)
        assert prob.shape == shape and labels.shape == shape, (prob.shape, labels.shape, shape)
        return TeacherOutput(prob, labels)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity}>"
