"""napari writer contributions: Shapes -> QuPath GeoJSON regions, Labels -> OME-TIFF mask.

Coordinates are written in the layer's data grid. For the annotation layers napari-rckd
makes, that grid is the slide's level-0 pixels, which is what QuPath expects. Each write is
atomic, so a failed save never destroys the previous file.
"""

from __future__ import annotations

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.io.annotations import Region, write_annotations
from napari_rckd.io.slide_annotations import write_label_mask

CLOSED_SHAPES = ("rectangle", "polygon", "ellipse")
MICRONS = ("um", "µm", "micrometer", "micron")


def ellipse_polygon(corners: np.ndarray, points: int = 64) -> np.ndarray:
    """A napari ellipse (its 4 bounding-box corners) as a polygon."""
    centre = corners.mean(axis=0)
    radii = (corners.max(axis=0) - corners.min(axis=0)) / 2
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return centre + np.stack([np.sin(angles), np.cos(angles)], axis=1) * radii


def regions_from_shape_data(
    data, shape_types, names, colors: dict | None = None, layer: str = "the layer"
) -> list[Region]:
    """Areas of Shapes data (one (N, 2+) array per shape) as class-named regions."""
    colors = colors or {}
    regions = []
    for index, (points, kind) in enumerate(zip(data, shape_types, strict=True)):
        if kind not in CLOSED_SHAPES:
            raise RckdError(
                f"shape {index} of {layer} is a {kind}; regions must be areas (rectangles, "
                "polygons or ellipses): delete it or redraw it"
            )
        ring = np.asarray(points, float)[:, -2:]
        ring = ellipse_polygon(ring) if kind == "ellipse" else ring
        name = names[index]
        regions.append(Region(name, [[ring]], colors.get(name)))
    return regions


def class_names(features, count: int) -> list[str | None]:
    """The ``class`` feature of each shape (None where missing)."""
    if features is None or "class" not in features:
        return [None] * count
    return [None if v is None or v != v else str(v) for v in features["class"]]


def write_regions(path: str, data, attributes: dict) -> list[str]:
    """Write a Shapes layer as a QuPath-compatible GeoJSON FeatureCollection."""
    kinds = attributes.get("shape_type") or ["polygon"] * len(data)
    names = class_names(attributes.get("features"), len(data))
    meta = attributes.get("metadata") or {}
    colors = {k: rgb_tuple(v) for k, v in meta.get("class_colors", {}).items()}
    name = attributes.get("name", "the layer")
    regions = regions_from_shape_data(data, kinds, names, colors, f"layer {name!r}")
    write_annotations(path, regions)
    return [str(path)]


def write_mask(path: str, data, attributes: dict) -> list[str]:
    """Write a 2-D Labels layer as an OME-TIFF, with its pixel size when it is in µm."""
    metadata: dict = {"axes": "YX", "Name": attributes.get("name", "mask")}
    scale = attributes.get("scale")
    units = [str(u) for u in attributes.get("units") or ()]
    if scale is not None and units and all(u in MICRONS for u in units[-2:]):
        metadata.update(
            PhysicalSizeY=float(scale[-2]),
            PhysicalSizeX=float(scale[-1]),
            PhysicalSizeYUnit="µm",
            PhysicalSizeXUnit="µm",
        )
    return [str(write_label_mask(path, data, metadata, ome=True))]


def rgb_tuple(color) -> tuple[int, int, int]:
    from napari.utils.colormaps.standardize_color import transform_color

    return tuple(int(round(c * 255)) for c in transform_color(color)[0][:3])
