"""Class-labelled region annotations as GeoJSON, in the form QuPath reads and writes.

A file is a FeatureCollection of Polygon/MultiPolygon features whose
``properties.classification`` holds the class ``name`` and ``color`` ([r, g, b]).
GeoJSON coordinates are (x, y) in level-0 pixels; in memory rings are (N, 2) arrays of
(y, x), the order napari Shapes use, so a region moves between the two without thought.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_rckd.atomic import write_json_atomic
from napari_rckd.errors import RckdError

# A polygon is its exterior ring followed by its holes, each (N, 2) float (y, x).
Polygon = list[np.ndarray]


@dataclass
class Region:
    """One annotation: a class name (None when unclassified), its colour and polygons."""

    name: str | None
    polygons: list[Polygon]
    color: tuple[int, int, int] | None = None
    properties: dict = field(default_factory=dict)

    def mask(self, shape: tuple[int, int], downsample: float = 1.0) -> np.ndarray:
        """Rasterise into a bool array whose pixel (i, j) covers level-0 ``(i, j) * downsample``."""
        from skimage.draw import polygon as fill_polygon

        out = np.zeros(shape, bool)
        for rings in self.polygons:
            for index, ring in enumerate(rings):
                rr, cc = fill_polygon(ring[:, 0] / downsample, ring[:, 1] / downsample, shape)
                out[rr, cc] = index == 0  # the exterior fills, holes cut back out
        return out

    def bounds(self) -> tuple[float, float, float, float]:
        """(y0, x0, y1, x1) of the exterior rings in level-0 pixels."""
        points = np.concatenate([rings[0] for rings in self.polygons])
        return (*points.min(axis=0), *points.max(axis=0))


def regions_from_shapes(
    polygons: list[np.ndarray], names: list[str | None], scale: float = 1.0
) -> list[Region]:
    """Regions from napari Shapes data: one (N, 2) (y, x) polygon per shape and its class
    name; ``scale`` turns the layer's data coordinates into level-0 pixels."""
    if len(polygons) != len(names):
        raise RckdError(f"{len(polygons)} shapes but {len(names)} class names; give one per shape")
    return [
        Region(name, [[np.asarray(polygon, dtype=float)[:, -2:] * scale]])
        for polygon, name in zip(polygons, names, strict=True)
    ]


def _rings_from_geojson(coordinates, where: str) -> Polygon:
    rings = []
    for ring in coordinates:
        points = np.asarray(ring, dtype=float)
        if points.ndim != 2 or points.shape[1] < 2 or len(points) < 3:
            raise RckdError(f"{where} has a ring that is not a list of at least 3 [x, y] points")
        rings.append(points[:, [1, 0]])
    if not rings:
        raise RckdError(f"{where} has a polygon without coordinates")
    return rings


def _region_from_feature(feature: dict, where: str) -> Region:
    geometry = feature.get("geometry") or {}
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if kind == "Polygon":
        polygons = [_rings_from_geojson(coordinates, where)]
    elif kind == "MultiPolygon":
        polygons = [_rings_from_geojson(polygon, where) for polygon in coordinates]
    else:
        raise RckdError(
            f"{where} is a {kind or 'feature without geometry'}; only Polygon and MultiPolygon "
            "regions can be used: draw areas, not points or lines"
        )
    properties = dict(feature.get("properties") or {})
    classification = properties.pop("classification", None) or {}
    name = classification.get("name") if isinstance(classification, dict) else None
    color = classification.get("color") if isinstance(classification, dict) else None
    return Region(
        name=str(name) if name is not None else None,
        polygons=polygons,
        color=tuple(int(c) for c in color[:3]) if color else None,
        properties=properties,
    )


def read_annotations(path: str | Path) -> list[Region]:
    """Regions from a GeoJSON file (a FeatureCollection, a list of features or one feature)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RckdError(f"annotation file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RckdError(f"annotation file {path} is not valid GeoJSON ({error})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise RckdError(
            f"annotation file {path} is not a GeoJSON FeatureCollection; "
            "export annotations from QuPath or napari-rckd as GeoJSON"
        )
    return [
        _region_from_feature(feature, f"feature {index} of {path.name}")
        for index, feature in enumerate(features)
    ]


def _ring_to_geojson(ring: np.ndarray) -> list[list[float]]:
    points = np.asarray(ring, dtype=float)[:, [1, 0]]
    if not np.array_equal(points[0], points[-1]):  # GeoJSON rings are closed
        points = np.vstack([points, points[:1]])
    return points.round(3).tolist()


def region_to_feature(region: Region) -> dict:
    """A QuPath-compatible GeoJSON feature for one region."""
    polygons = [[_ring_to_geojson(ring) for ring in rings] for rings in region.polygons]
    if len(polygons) == 1:
        geometry = {"type": "Polygon", "coordinates": polygons[0]}
    else:
        geometry = {"type": "MultiPolygon", "coordinates": polygons}
    properties = {"objectType": "annotation", **region.properties}
    if region.name is not None:
        classification: dict = {"name": region.name}
        if region.color is not None:
            classification["color"] = [int(c) for c in region.color]
        properties["classification"] = classification
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def write_annotations(path: str | Path, regions: list[Region]) -> None:
    """Write regions as a GeoJSON FeatureCollection, atomically (never half a file)."""
    collection = {"type": "FeatureCollection", "features": [region_to_feature(r) for r in regions]}
    write_json_atomic(Path(path), collection)
