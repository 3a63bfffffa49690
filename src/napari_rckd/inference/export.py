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
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_rckd.atomic import atomic_open, atomic_path
from napari_rckd.defaults import EXPORTS
from napari_rckd.errors import RckdError
from napari_rckd.inference.nuclei_table import CSV_COLUMNS, iter_nuclei, outline, to_level0
from napari_rckd.inference.outputs import RESULT_NAMES
from napari_rckd.inference.store import ResultStore
from napari_rckd.inference.tiling import Box
from napari_rckd.io.annotations import Region, write_annotations

log = logging.getLogger(__name__)

REGION_MAX_SIDE = 4096  # class maps are traced at the first pyramid level no larger than this


def _optional(path):
    """An atomic file for ``path``, or a throw-away buffer when it is not wanted."""
    return atomic_open(path, "w", newline="") if path is not None else nullcontext(io.StringIO())


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


class NucleiFiles:
    """The nuclei GeoJSON and/or CSV of one result, written as a stream of records.

    A context manager: the files are atomic and appear complete when the block ends without
    an error; nothing is held per nucleus, so a million nuclei cost no memory.
    """

    def __init__(self, geojson: str | Path | None = None, csv_path: str | Path | None = None):
        if geojson is None and csv_path is None:
            raise RckdError("nuclei export needs a GeoJSON or a CSV path (or both).")
        self._paths = (geojson, csv_path)
        self.count = 0

    def __enter__(self) -> NucleiFiles:
        self._stack = ExitStack()
        geojson, csv_path = self._paths
        self._geojson = self._stack.enter_context(_optional(geojson))
        self._table = csv.DictWriter(
            self._stack.enter_context(_optional(csv_path)), CSV_COLUMNS, extrasaction="ignore"
        )
        self._table.writeheader()
        self._geojson.write('{"type": "FeatureCollection", "features": [\n')
        return self

    def write(self, records) -> None:
        for record in records:
            self._geojson.write((",\n" if self.count else "") + json.dumps(nucleus_feature(record)))
            self._table.writerow(record)
            self.count += 1

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._geojson.write("\n]}\n")
            log.info("exported %d nuclei", self.count)
        self._stack.__exit__(*exc)


def export_nuclei(
    labels: ResultStore,
    slide,
    geojson: str | Path | None = None,
    csv_path: str | Path | None = None,
    classes: ResultStore | None = None,
    class_names: list[str] | None = None,
) -> int:
    """Write nuclei as a GeoJSON FeatureCollection and/or a measurements CSV in one pass."""
    with NucleiFiles(geojson, csv_path) as files:
        files.write(iter_nuclei(labels, slide, classes, class_names))
    return files.count


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
        rings = [to_level0(outline(filled), offset, d)]
        holes, n_holes = ndi.label(filled & ~part)
        for hole in range(1, n_holes + 1):
            rings.append(to_level0(outline(holes == hole), offset, d))
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
    write_targets(stores, by_name, slide, targets)
    return list(targets.values())


def write_targets(stores, by_name: dict, slide, targets: dict[tuple[str, str], Path]) -> None:
    """Write the `export_targets` files ``targets`` from ``stores`` (sources ``by_name``)."""
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
