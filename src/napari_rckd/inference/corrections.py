"""Correcting the nuclei model on a slide: the Qt-free engine behind "Correct nuclei here".

``CorrectionSession(slide, teacher)`` cuts a region of the slide at the nuclei model's
resolution, asks the model for its nuclei there (the *answer* the user corrects), and saves the
corrected instance map into the slide's corrections sidecar (`napari_rckd.io.corrections`). It
also holds the label edits napari lacks: the next free id for a new nucleus, merging nuclei
and splitting one in two. The Analyze widget wires buttons to these methods; tests and scripts
call them directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.io.corrections import CorrectionsFolder, Region

log = logging.getLogger(__name__)

REGION_PX = 512  # the longest side of a region, in the model's pixels (512² at 0.5 µm = 256 µm)
MIN_REGION_PX = 32
CONTEXT_MARGIN = 0.5  # the unlabelled context crop reaches this share of the region each side


@dataclass
class Draft:
    """A region being corrected: its crop, the model's answer and the labels being edited."""

    image: np.ndarray  # H×W×3 uint8 at ``mpp``
    answer: np.ndarray  # H×W int32: what the model said
    labels: np.ndarray  # H×W int32: what the user is making of it (a copy of the answer at first)
    mpp: float
    bounds: dict  # y, x, height, width in level-0 pixels
    model: str  # the model's identity
    region: int | None = None  # the saved region's id once saved or reopened
    context: np.ndarray | None = field(default=None, repr=False)
    context_bounds: dict | None = None

    def placement(self, slide_mpp: float) -> dict:
        """napari ``scale`` and ``translate`` (µm) that put the labels exactly over a slide layer
        of scale ``slide_mpp``: pixel centres at ``slide_mpp·(y0 − ½) + (i + ½)·mpp``."""
        y = slide_mpp * (self.bounds["y"] - 0.5) + 0.5 * self.mpp
        x = slide_mpp * (self.bounds["x"] - 0.5) + 0.5 * self.mpp
        return dict(scale=(self.mpp, self.mpp), translate=(y, x))


class CorrectionSession:
    """Regions of one slide corrected against one nuclei model (a `Teacher`)."""

    def __init__(
        self, slide, teacher, folder: str | Path | None = None, region_px: int = REGION_PX
    ):
        if slide.mpp is None:
            raise RckdError(
                f"{slide.path.name} does not record its pixel size; set its µm / pixel first"
            )
        self.slide, self.teacher = slide, teacher
        self.folder = CorrectionsFolder(slide.path, folder)
        self.region_px = int(region_px)

    @property
    def mpp(self) -> float:
        """The nuclei model's resolution: regions are cut and saved at it."""
        return float(self.teacher.mpp)

    # -- where ----------------------------------------------------------------------------------

    def bounds_from_box(self, y0: float, x0: float, y1: float, x1: float) -> dict:
        """A region for a level-0 box (the view or a drawn rectangle): clipped to the slide and
        to ``region_px`` model pixels a side around the box's centre."""
        height, width = self.slide.shape
        y0, x0 = max(0.0, float(y0)), max(0.0, float(x0))
        y1, x1 = min(float(height), float(y1)), min(float(width), float(x1))
        factor = self.mpp / self.slide.mpp  # level-0 pixels per model pixel
        largest = self.region_px * factor
        smallest = MIN_REGION_PX * factor
        if y1 - y0 < smallest or x1 - x0 < smallest:
            raise RckdError(
                f"the region is too small ({(y1 - y0) / factor:.0f}×{(x1 - x0) / factor:.0f} model "
                f"px); zoom out or draw a rectangle of at least {MIN_REGION_PX} px at "
                f"{self.mpp:g} µm/px"
            )
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        h, w = min(y1 - y0, largest), min(x1 - x0, largest)
        top, left = int(round(max(0, cy - h / 2))), int(round(max(0, cx - w / 2)))
        return dict(y=top, x=left, height=int(round(h)), width=int(round(w)))

    # -- what -----------------------------------------------------------------------------------

    def read(self, bounds: dict) -> np.ndarray:
        """The level-0 box ``bounds`` as RGB at the model's µm/px."""
        from napari_rckd.teachers.base import resize_image

        b = bounds
        pixels = self.slide.read_region(0, b["y"], b["x"], b["height"], b["width"])
        factor = self.slide.mpp / self.mpp
        shape = (max(1, round(b["height"] * factor)), max(1, round(b["width"] * factor)))
        return pixels if shape == pixels.shape[:2] else resize_image(pixels, shape)

    def open(self, bounds: dict, context: bool = True) -> Draft:
        """A new draft of ``bounds``: the crop, the model's nuclei there and, for replay, the
        unlabelled tissue around it."""
        image = self.read(bounds)
        answer = self.teacher.predict(image, self.mpp).labels.astype(np.int32)
        draft = Draft(image, answer, answer.copy(), self.mpp, dict(bounds), self.teacher.identity)
        if context:
            draft.context_bounds = self._context_bounds(bounds)
            draft.context = self.read(draft.context_bounds)
        return draft

    def _context_bounds(self, bounds: dict) -> dict:
        height, width = self.slide.shape
        my, mx = int(bounds["height"] * CONTEXT_MARGIN), int(bounds["width"] * CONTEXT_MARGIN)
        y0, x0 = max(0, bounds["y"] - my), max(0, bounds["x"] - mx)
        y1 = min(height, bounds["y"] + bounds["height"] + my)
        x1 = min(width, bounds["x"] + bounds["width"] + mx)
        return dict(y=y0, x=x0, height=y1 - y0, width=x1 - x0)

    def save(self, draft: Draft, labels: np.ndarray | None = None) -> Region:
        """Write the draft's labels (or ``labels``): a new region, or the reopened one updated."""
        if labels is not None:
            draft.labels = np.asarray(labels)
        region = self.folder.save(
            draft.image,
            draft.labels,
            draft.mpp,
            bounds=draft.bounds,
            model=draft.model,
            answer=draft.answer,
            context=draft.context if draft.region is None else None,
            context_bounds=draft.context_bounds,
            region=draft.region,
        )
        draft.region = region.id
        log.info("saved %s", region.summary())
        return region

    def regions(self) -> list[Region]:
        return self.folder.regions() if (self.folder.folder / "corrections.json").is_file() else []

    def reopen(self, region_id: int) -> Draft:
        """A saved region as a draft again (its corrected labels, the model's original answer)."""
        image, labels, answer, region = self.folder.load(region_id)
        if answer is None:
            answer = labels.copy()
        return Draft(image, answer, labels, region.mpp, region.bounds, region.model, region.id)


# -- label edits napari lacks -----------------------------------------------------------------


def next_label(labels: np.ndarray) -> int:
    """A fresh id for a new nucleus: one above the largest."""
    return int(np.asarray(labels).max(initial=0)) + 1


def merge_labels(labels: np.ndarray, ids) -> np.ndarray:
    """``labels`` with every id in ``ids`` made the smallest of them (0 is ignored)."""
    ids = sorted({int(i) for i in ids} - {0})
    if len(ids) < 2:
        raise RckdError("pick at least two nuclei to merge (click them, or give their ids)")
    out = np.array(labels, copy=True)
    out[np.isin(out, ids)] = ids[0]
    return out


def split_label(labels: np.ndarray, label: int, pieces: int = 2) -> np.ndarray:
    """``labels`` with nucleus ``label`` cut into ``pieces`` by a watershed of its distance
    transform (touching nuclei drawn as one); the new pieces get fresh ids."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    label = int(label)
    mask = np.asarray(labels) == label
    if label == 0 or not mask.any():
        raise RckdError(f"there is no nucleus {label} to split; pick one with the picker")
    distance = ndi.distance_transform_edt(mask)
    ys, xs = np.nonzero(mask)
    points = np.stack([ys, xs], 1).astype(float)
    # seeds: the farthest-apart interior points (k-means++ style on the mask's pixels)
    weights = distance[ys, xs]
    seeds = [points[int(np.argmax(weights))]]
    for _ in range(pieces - 1):
        far = np.min([((points - s) ** 2).sum(1) for s in seeds], axis=0) * weights
        seeds.append(points[int(np.argmax(far))])
    markers = np.zeros(mask.shape, np.int32)
    for k, (y, x) in enumerate(seeds, 1):
        markers[int(y), int(x)] = k
    parts = watershed(-distance, markers, mask=mask)
    out = np.array(labels, copy=True)
    fresh = next_label(out)
    for k in range(2, pieces + 1):
        out[parts == k] = fresh + k - 2
    return out
