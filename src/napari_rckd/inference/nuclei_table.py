"""Nuclei of a stitched labels store, measured tile by tile in time linear in the slide.

A nucleus is measured once, in the window of the tile that owns it (``id // ID_STRIDE``), which
holds it whole. The window's ids are made local (``id - owner * ID_STRIDE``, below
``ID_STRIDE``) before anything is counted, so no cost or allocation depends on how far into the
slide the tile lies; measurements are vectorised over the owned pixels (one ``bincount`` per
quantity), and only the outline is traced per nucleus. ``regionprops`` sized its work by the
largest label, which made a whole-slide export quadratic in the slide.

Coordinates follow QuPath (see ``export``): result pixel ``i`` at ``d`` level-0 pixels per
result pixel spans level-0 ``[i*d, (i+1)*d)``; polygons are clipped to the slide.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage as ndi

from napari_rckd.inference.stitching import ID_STRIDE
from napari_rckd.inference.store import ResultStore
from napari_rckd.inference.tiling import Box
from napari_rckd.io.slide import DamagedSlideError

CSV_COLUMNS = (
    "id",
    "centroid_x_um",
    "centroid_y_um",
    "area_um2",
    "eccentricity",
    "hematoxylin_mean",
    "class",
)
NUCLEUS_CLASS = "Nucleus"


def outline(mask: np.ndarray) -> np.ndarray:
    """The longest closed contour (N×2, y/x array coordinates) of a bool mask."""
    from skimage.measure import find_contours

    contours = find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
    return max(contours, key=len) - 1


def to_level0(points: np.ndarray, offset: tuple[float, float], d: float) -> np.ndarray:
    """Result-pixel coordinates (pixel centres at integers) plus ``offset`` -> level-0 pixels."""
    return (points + np.asarray(offset) + 0.5) * d


def grid_size(labels: ResultStore) -> tuple[int, int]:
    """Rows and columns of the tile grid a labels store was stitched on (its chunks)."""
    return -(-labels.shape[0] // labels.tile), -(-labels.shape[1] // labels.tile)


def owned_ids(labels: ResultStore, row: int, col: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Local ids (1..k, 0 elsewhere) of the nuclei tile (row, col) owns, cropped to their
    bounding box, and the box's top-left in result pixels; an empty array if it owns none.

    An owned nucleus lies within its tile's window (core + halo, halo below half a tile), so
    reading the core plus half a tile on each side sees it whole."""
    tile, margin = labels.tile, labels.tile // 2
    index = row * grid_size(labels)[1] + col
    region = Box(
        row * tile - margin,
        col * tile - margin,
        (row + 1) * tile + margin,
        (col + 1) * tile + margin,
    ).intersect(Box(0, 0, *labels.shape))
    ids = labels.read(region)
    owner = (ids // ID_STRIDE == index) & (ids > 0)
    rows, cols = np.flatnonzero(owner.any(axis=1)), np.flatnonzero(owner.any(axis=0))
    if not rows.size:
        return np.zeros((0, 0), np.int32), (0, 0)
    crop = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    local = np.where(owner[crop], ids[crop].astype(np.int64) - index * ID_STRIDE, 0)
    return local.astype(np.int32), (int(region.y0) + int(rows[0]), int(region.x0) + int(cols[0]))


def _hematoxylin(slide, top: int, left: int, shape: tuple[int, int], mpp: float) -> np.ndarray:
    """The hematoxylin optical density of the slide under a block of result pixels."""
    from skimage.color import rgb2hed

    d = mpp / slide.mpp
    rgb = slide.read_at_mpp(top * d, left * d, max(shape), mpp)[: shape[0], : shape[1]]
    return rgb2hed(rgb)[..., 0]


def _shape_measures(local: np.ndarray, count: int, hema: np.ndarray) -> dict[str, np.ndarray]:
    """Area, centroid, eccentricity (as ``regionprops`` defines it) and mean hematoxylin of
    every local id 1..count, in one pass over the pixels."""
    flat = local.reshape(-1)
    yy, xx = (a.reshape(-1).astype(np.float64) for a in np.indices(local.shape))

    def total(weights=None):
        return np.bincount(flat, weights, minlength=count + 1)[1:]

    area = total().astype(np.float64)
    safe = np.maximum(area, 1)
    cy, cx = total(yy) / safe, total(xx) / safe
    # central second moments per unit area: the inertia tensor [[c, -b], [-b, r]] of regionprops
    r = total(yy * yy) / safe - cy**2
    c = total(xx * xx) / safe - cx**2
    b = total(yy * xx) / safe - cy * cx
    spread = np.sqrt(((c - r) / 2) ** 2 + b**2)
    l1 = np.clip((c + r) / 2 + spread, 0, None)
    l2 = np.clip((c + r) / 2 - spread, 0, None)
    eccentricity = np.where(l1 > 0, np.sqrt(np.clip(1 - l2 / np.where(l1 > 0, l1, 1), 0, 1)), 0)
    return dict(
        area=area,
        cy=cy,
        cx=cx,
        eccentricity=eccentricity,
        hematoxylin=total(hema.reshape(-1)) / safe,
    )


def measure_tile(
    labels: ResultStore,
    slide,
    row: int,
    col: int,
    classes: ResultStore | None = None,
    class_names: list[str] | None = None,
) -> list[dict]:
    """One record per nucleus owned by tile (row, col): measurements and a level-0 polygon.

    ``classes`` (a class map, value k+1 = class k) names each nucleus by the class under its
    centroid; otherwise it is a plain ``Nucleus``. A tile whose slide pixels cannot be decoded
    gives no records (prediction skipped it as glass and counted it).
    """
    local, (top, left) = owned_ids(labels, row, col)
    if not local.size:
        return []
    try:
        hema = _hematoxylin(slide, top, left, local.shape, labels.mpp)
    except DamagedSlideError:
        return []
    count = int(local.max())
    m = _shape_measures(local, count, hema)
    d, mpp = labels.mpp / labels.slide_mpp, labels.mpp
    limit = np.array([slide.shape[0], slide.shape[1]], np.float64)
    base = (row * grid_size(labels)[1] + col) * ID_STRIDE
    records = []
    for k, found in enumerate(ndi.find_objects(local), start=1):
        if found is None:
            continue
        i = k - 1
        polygon = to_level0(
            outline(local[found] == k), (top + found[0].start, left + found[1].start), d
        )
        cy_um, cx_um = (top + m["cy"][i] + 0.5) * mpp, (left + m["cx"][i] + 0.5) * mpp
        records.append(
            dict(
                id=base + k,
                centroid_x_um=round(float(cx_um), 3),
                centroid_y_um=round(float(cy_um), 3),
                area_um2=round(float(m["area"][i]) * mpp**2, 3),
                eccentricity=round(float(m["eccentricity"][i]), 4),
                hematoxylin_mean=round(float(m["hematoxylin"][i]), 5),
                **{"class": class_at(classes, class_names, cy_um, cx_um)},
                polygon=np.clip(polygon, 0, limit),
            )
        )
    return records


def iter_nuclei(
    labels: ResultStore,
    slide,
    classes: ResultStore | None = None,
    class_names: list[str] | None = None,
) -> Iterator[dict]:
    """Every nucleus of a labels store, tile by tile in grid order (`measure_tile`)."""
    rows, cols = grid_size(labels)
    for row in range(rows):
        for col in range(cols):
            yield from measure_tile(labels, slide, row, col, classes, class_names)


def class_at(classes: ResultStore | None, names, y_um: float, x_um: float) -> str:
    """The class name of a class map at a point in µm, or ``Nucleus`` where it has none."""
    if classes is None:
        return NUCLEUS_CLASS
    i, j = int(y_um // classes.mpp), int(x_um // classes.mpp)
    value = (
        int(classes.read(Box(i, j, i + 1, j + 1)).reshape(-1)[0])
        if (i < classes.shape[0] and j < classes.shape[1])
        else 0
    )
    return names[value - 1] if value and names else NUCLEUS_CLASS
