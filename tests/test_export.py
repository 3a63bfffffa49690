"""Exports: nuclei GeoJSON round-trips through io.annotations, CSV measurements, region polygons
with holes, pyramidal OME-TIFF with the physical pixel size, atomic writes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_rckd.inference.export import export_nuclei, export_ome_tiff, export_regions
from napari_rckd.inference.predictor import Predictor
from napari_rckd.inference.sources import NucleiSource
from napari_rckd.inference.store import ResultStore, open_root
from napari_rckd.inference.tiling import Box
from napari_rckd.io.annotations import read_annotations
from test_predict import crop  # noqa: F401  (fixtures)


def rasterise(region, shape, d):
    """Fill a region's polygons, sampling each pixel at its centre (QuPath: pixel i spans
    [i, i+1) in level-0 coordinates, so its centre is at (i + 0.5) * d)."""
    from skimage.draw import polygon

    out = np.zeros(shape, bool)
    for rings in region.polygons:
        for index, ring in enumerate(rings):
            rr, cc = polygon(ring[:, 0] / d - 0.5, ring[:, 1] / d - 0.5, shape)
            out[rr, cc] = index == 0
    return out


def test_nuclei_geojson_round_trip_and_csv(tmp_path, crop):  # noqa: F811
    with Predictor(crop, [NucleiSource("classical")]) as predictor:
        predictor.compute([("nuclei", 1, 1), ("nuclei", 1, 2)])
        labels = predictor.stores["nuclei_labels"]
        count = export_nuclei(labels, crop, tmp_path / "n.geojson", tmp_path / "n.csv")
    image = labels.read(Box(0, 0, *labels.shape))
    assert count == len(np.unique(image)) - 1 > 50
    data = json.loads((tmp_path / "n.geojson").read_text())
    props = data["features"][0]["properties"]
    assert props["objectType"] == "detection" and set(props["measurements"]) >= {"area_um2"}
    regions = read_annotations(tmp_path / "n.geojson")
    rows = list(csv.DictReader((tmp_path / "n.csv").open()))
    assert len(regions) == len(rows) == count and {r.name for r in regions} == {"Nucleus"}
    d = labels.mpp / labels.slide_mpp  # level-0 pixels per label pixel
    ious = []
    for region, row in zip(regions, rows, strict=True):
        truth = image == int(row["id"])
        drawn = rasterise(region, image.shape, d)
        ious.append((truth & drawn).sum() / (truth | drawn).sum())
        assert float(row["area_um2"]) == pytest.approx(truth.sum() * labels.mpp**2)
    assert np.median(ious) > 0.9 and min(ious) > 0.5


def test_region_polygons_with_holes_round_trip(tmp_path):
    store = ResultStore.create(
        open_root(), "subtype_class", (40, 60), 32, "uint8", "classes", 4.0, 0.5
    )
    values = np.zeros((40, 60), np.uint8)
    values[5:30, 5:30] = 1
    values[12:18, 12:18] = 0  # a hole
    values[10:35, 40:55] = 2
    store.write(Box(0, 0, 40, 60), values)
    assert (
        export_regions(tmp_path / "r.geojson", store, ["tumour", "stroma"], ["#ff0000", "#00ff00"])
        == 2
    )
    regions = {r.name: r for r in read_annotations(tmp_path / "r.geojson")}
    assert regions["tumour"].color == (255, 0, 0) and len(regions["tumour"].polygons[0]) == 2
    for k, name in ((1, "tumour"), (2, "stroma")):
        np.testing.assert_array_equal(rasterise(regions[name], (40, 60), 8.0), values == k)


def test_ome_tiff_pyramid_with_physical_size(tmp_path):
    import tifffile

    store = ResultStore.create(
        open_root(), "region_mask", (600, 500), 256, "uint8", "classes", 2.0, 0.5
    )
    mask = (np.indices((600, 500)).sum(axis=0) % 7 == 0).astype(np.uint8)
    store.write(Box(0, 0, 600, 500), mask)
    export_ome_tiff(tmp_path / "m.ome.tif", store)
    with tifffile.TiffFile(tmp_path / "m.ome.tif") as tif:
        series = tif.series[0]
        assert len(series.levels) == len(store.levels) == 3
        np.testing.assert_array_equal(series.asarray(), mask)
        assert 'PhysicalSizeX="2.0"' in tif.ome_metadata
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_export_keeps_the_old_file(tmp_path):
    store = ResultStore.create(
        open_root(), "p", (8, 8), 8, "float32", "probability", 2.0, 0.5, channels=["a", "b"]
    )
    target = tmp_path / "p.ome.tif"
    target.write_text("old")
    with pytest.raises(Exception, match="channels"):
        export_ome_tiff(target, store)
    assert target.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))
