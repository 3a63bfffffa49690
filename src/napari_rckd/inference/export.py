"""Results out of napari-rckd: nuclei as QuPath detections (GeoJSON) and a measurements CSV,
class maps as GeoJSON region polygons, masks as pyramidal OME-TIFF. Every write is atomic.

Exports live with the results they export (the stores of ``inference``); ``export_results``
writes every chosen export of one analysis, ``export_nuclei`` and friends one result each.

Coordinates follow QuPath and ``io.annotations``: GeoJSON (x, y) in level-0 slide pixels, pixel
(i, j) spanning ``[j, j+1) × [i, i+1)``. A result pixel ``i`` at ``d`` slide pixels per result
pixel spans level-0 ``[i*d, (i+1)*d)``, so a contour at array coordinate ``c`` (pixel centres,
as ``find_contours`` reports) lies at ``(c + 0.5) * d``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_rckd.atomic import atomic_open, atomic_path
from napari_rckd.defaults import EXPORTS
from napari_rckd.errors import RckdError
from napari_rckd.inference.instances import ID_STRIDE
from napari_rckd.inference.outputs import RESULT_NAMES
from napari_rckd.inference.store import ResultStore
from napari_rckd.inference.tiling import Box
from napari_rckd.io.annotations import Region, write_annotations
from napari_rckd.io.slide import DamagedSlideError

log = logging.getLogger(__name__)

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
REGION_MAX_SIDE = 4096  # class maps are traced at the first pyramid level no larger than this


def _optional(path):
    """An atomic file for ``path``, or a throw-away buffer when it is not wanted."""
    return atomic_open(path, "w", newline="") if path is not None else nullcontext(io.StringIO())


def _outline(mask: np.ndarray) -> np.ndarray:
    """The longest closed contour (N×2, y/x array coordinates) of a bool mask."""
    from skimage.measure import find_contours

    contours = find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
    return max(contours, key=len) - 1


def _to_level0(points: np.ndarray, offset: tuple[float, float], d: float) -> np.ndarray:
    return (points + np.asarray(offset) + 0.5) * d


def iter_nuclei(
    labels: ResultStore,
    slide,
    classes: ResultStore | None = None,
    class_names: list[str] | None = None,
) -> Iterator[dict]:
    """One record per nucleus of a stitched labels store: measurements and a level-0 polygon.

    Instances are visited per owning tile (``id // ID_STRIDE``), whose window holds them whole,
    so nothing slide-sized is ever read. ``classes`` (a class map, value k+1 = class k) names
    each nucleus by the class under its centroid; otherwise it is a plain ``Nucleus``.
    """
    from skimage.color import rgb2hed
    from skimage.measure import regionprops

    tile, d = labels.tile, labels.mpp / labels.slide_mpp
    margin = tile // 2
    rows, cols = -(-labels.shape[0] // tile), -(-labels.shape[1] // tile)
    for row in range(rows):
        for col in range(cols):
            window = Box(row * tile - margin, col * tile - margin, 0, 0)
            size = tile + 2 * margin
            window = Box(window.y0, window.x0, window.y0 + size, window.x0 + size)
            region = window.intersect(Box(0, 0, *labels.shape))
            ids = labels.read(region)
            owner = ids // ID_STRIDE == row * cols + col
            if not (owner & (ids > 0)).any():
                continue
            local = np.zeros((size, size), ids.dtype)
            local[
                int(region.y0 - window.y0) : int(region.y1 - window.y0),
                int(region.x0 - window.x0) : int(region.x1 - window.x0),
            ] = np.where(owner, ids, 0)
            try:
                rgb = slide.read_at_mpp(window.y0 * d, window.x0 * d, size, labels.mpp)
            except DamagedSlideError:  # prediction skipped and counted it; no measurements here
                continue
            hematoxylin = rgb2hed(rgb)[..., 0]
            for nucleus in regionprops(local.astype(np.int64), intensity_image=hematoxylin):
                y0, x0 = nucleus.bbox[:2]
                polygon = _to_level0(_outline(nucleus.image), (window.y0 + y0, window.x0 + x0), d)
                cy, cx = (np.asarray(nucleus.centroid) + (window.y0, window.x0) + 0.5) * labels.mpp
                yield dict(
                    id=int(nucleus.label),
                    centroid_x_um=round(float(cx), 3),
                    centroid_y_um=round(float(cy), 3),
                    area_um2=round(float(nucleus.area) * labels.mpp**2, 3),
                    eccentricity=round(float(nucleus.eccentricity), 4),
                    hematoxylin_mean=round(float(nucleus.intensity_mean), 5),
                    **{"class": _class_at(classes, class_names, cy, cx)},
                    polygon=polygon,
                )


def _class_at(classes: ResultStore | None, names, y_um: float, x_um: float) -> str:
    if classes is None:
        return NUCLEUS_CLASS
    i, j = int(y_um // classes.mpp), int(x_um // classes.mpp)
    value = (
        int(classes.read(Box(i, j, i + 1, j + 1)).reshape(-1)[0])
        if (i < classes.shape[0] and j < classes.shape[1])
        else 0
    )
    return names[value - 1] if value and names else NUCLEUS_CLASS


def nucleus_feature(record: dict) -> dict:
    """A QuPath detection: polygon, classification and the measurements it shows in tables."""
    ring = record["polygon"][:, [1, 0]].round(2)
    ring = np.vstack([ring, ring[:1]]).tolist()  # GeoJSON rings are closed
    measurements = {k: record[k] for k in CSV_COLUMNS[1:-1]}
    return {
        "type": "Feature",
        "id": str(record["id"]),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": record["class"]},
            "measurements": measurements,
        },
    }


def export_nuclei(
    labels: ResultStore,
    slide,
    geojson: str | Path | None = None,
    csv_path: str | Path | None = None,
    classes: ResultStore | None = None,
    class_names: list[str] | None = None,
) -> int:
    """Write nuclei as a GeoJSON FeatureCollection and/or a measurements CSV in one pass."""
    if geojson is None and csv_path is None:
        raise RckdError("export_nuclei needs a GeoJSON or a CSV path (or both).")
    count = 0
    with _optional(geojson) as gj, _optional(csv_path) as table:
        writer = csv.DictWriter(table, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        gj.write('{"type": "FeatureCollection", "features": [\n')
        for record in iter_nuclei(labels, slide, classes, class_names):
            gj.write((",\n" if count else "") + json.dumps(nucleus_feature(record)))
            writer.writerow(record)
            count += 1
        gj.write("\n]}\n")
    log.info("exported %d nuclei", count)
    return count


def class_regions(
    store: ResultStore,
    class_names: list[str],
    class_colors: list[str] | None = None,
    max_side: int = REGION_MAX_SIDE,
) -> list[Region]:
    """One Region per class present in a class map (value k+1 = class k), as polygons with holes."""
    level = next(
        (k for k in range(len(store.levels)) if max(store.levels[k].shape[-2:]) <= max_side),
        len(store.levels) - 1,
    )
    values = store.read(Box(0, 0, *store.levels[level].shape[-2:]), level)
    d = store.scale_um(level) / store.slide_mpp
    regions = []
    for k, name in enumerate(class_names):
        polygons = _polygons(values == k + 1, d)
        if polygons:
            color = _rgb(class_colors[k]) if class_colors else None
            regions.append(Region(name=name, polygons=polygons, color=color))
    return regions


def _polygons(mask: np.ndarray, d: float) -> list[list[np.ndarray]]:
    """Exterior and hole rings of every connected part of ``mask``, in level-0 pixels."""
    components, count = ndi.label(mask)
    polygons = []
    for index, found in enumerate(ndi.find_objects(components), start=1):
        part = components[found] == index
        filled = ndi.binary_fill_holes(part)
        offset = (found[0].start, found[1].start)
        rings = [_to_level0(_outline(filled), offset, d)]
        holes, n_holes = ndi.label(filled & ~part)
        for hole in range(1, n_holes + 1):
            rings.append(_to_level0(_outline(holes == hole), offset, d))
        polygons.append(rings)
    return polygons


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def export_regions(path: str | Path, store: ResultStore, class_names, class_colors=None) -> int:
    """Class map -> GeoJSON polygons QuPath and ``io.annotations`` read; returns the count."""
    regions = class_regions(store, class_names, class_colors)
    write_annotations(path, regions)
    return len(regions)


def export_ome_tiff(path: str | Path, store: ResultStore, tile: int = 256) -> None:
    """A 2-D result (mask, classes, labels) as a tiled pyramidal OME-TIFF with PhysicalSize."""
    import tifffile

    if store.levels[0].ndim != 2:
        raise RckdError(f"result {store.name!r} has channels; export masks or labels as OME-TIFF.")

    def tiles(level: int):
        array = store.levels[level]
        height, width = array.shape
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                block = np.zeros((tile, tile), array.dtype)
                data = np.asarray(array[y : y + tile, x : x + tile])
                block[: data.shape[0], : data.shape[1]] = data
                yield block

    mpp = store.scale_um(0)
    metadata = {
        "axes": "YX",
        "Name": store.name,
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
    }
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for level, array in enumerate(store.levels):
            options = dict(
                shape=array.shape,
                dtype=array.dtype,
                tile=(tile, tile),
                compression="zlib",
                resolution=(1e4 / store.scale_um(level), 1e4 / store.scale_um(level)),
                resolutionunit="CENTIMETER",
            )
            if level == 0:
                tif.write(tiles(0), subifds=len(store.levels) - 1, metadata=metadata, **options)
            else:
                tif.write(tiles(level), subfiletype=1, metadata=None, **options)


def parse_exports(text: str) -> list[str]:
    """``"geojson,csv"`` -> ``["geojson", "csv"]``; ``""`` or ``"none"`` -> no exports."""
    exports = [e.strip().lower() for e in text.split(",") if e.strip()]
    if exports == ["none"]:
        return []
    unknown = sorted(set(exports) - set(EXPORTS))
    if unknown:
        raise RckdError(
            f"--export {','.join(unknown)} is unknown; choose from {','.join(EXPORTS)} or none."
        )
    return exports


# What each export is called, and which result store it is made from.
SUFFIXES = (("geojson", "geojson"), ("csv", "csv"), ("ome-tiff", "ome.tif"))
STORE_OF = {"nuclei": "nuclei_labels", "subtype": "subtype_class", "region": "region_mask"}


def export_results(stores: dict[str, ResultStore], sources, slide, stem, exports) -> list[Path]:
    """Write ``exports`` of one analysis's result stores as ``<stem>.<result>.<ext>`` files.

    ``sources`` are the model sources that made the stores (their names and class lists);
    returns the files written (`export_targets`).
    """
    by_name = {source.name: source for source in sources}
    targets = export_targets(by_name, stem, exports)
    nuclei_geojson, nuclei_csv = targets.get(("nuclei", "geojson")), targets.get(("nuclei", "csv"))
    if nuclei_geojson or nuclei_csv:
        names = by_name["subtype"].class_names if "subtype" in by_name else None
        export_nuclei(
            stores["nuclei_labels"], slide, nuclei_geojson, nuclei_csv,
            stores.get("subtype_class"), names,
        )  # fmt: skip
    for (name, suffix), path in targets.items():
        store = stores[STORE_OF[name]]
        if suffix == "ome.tif":
            export_ome_tiff(path, store)
        elif suffix == "geojson" and name != "nuclei":
            export_regions(path, store, by_name[name].class_names, by_name[name].class_colors)
    return list(targets.values())


def export_targets(sources, stem, exports) -> dict[tuple[str, str], Path]:
    """The files `export_results` writes for ``sources`` (names or model sources):
    ``(result, suffix) -> <stem>.<result>.<suffix>``."""
    names = {getattr(source, "name", source) for source in sources}
    exports, targets = set(exports), {}
    for name in RESULT_NAMES:
        if name not in names:
            continue
        suffixes = [s for e, s in SUFFIXES if e in exports and (name == "nuclei" or e != "csv")]
        for suffix in suffixes:
            targets[(name, suffix)] = Path(f"{stem}.{name}.{suffix}")
    return targets
