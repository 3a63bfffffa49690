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


def test_streamed_nuclei_equal_the_export_of_the_finished_store(tmp_path, crop):  # noqa: F811
    """`predict` writes nuclei while the tiles run; the files must be those a second pass over
    the finished store writes, record for record (and so polygon for polygon)."""
    from napari_rckd.inference.analysis import Analysis

    analysis = Analysis(crop, {"nuclei": "classical"})
    for _ in analysis.run_whole_slide(
        tmp_path / "s.zarr", exports_stem=tmp_path / "streamed", exports=["geojson", "csv"]
    ):
        pass
    labels = analysis.results.stores["nuclei_labels"]
    count = export_nuclei(labels, crop, tmp_path / "after.geojson", tmp_path / "after.csv")
    assert count > 50
    for suffix in ("geojson", "csv"):
        streamed = (tmp_path / f"streamed.nuclei.{suffix}").read_bytes()
        assert streamed == (tmp_path / f"after.{suffix}").read_bytes()


def test_a_cancelled_run_publishes_no_streamed_export(tmp_path, crop):  # noqa: F811
    import threading

    from napari_rckd.inference.analysis import Analysis

    stop = threading.Event()
    analysis = Analysis(crop, {"nuclei": "classical"}, batch_size=1)
    for _ in analysis.run_whole_slide(
        tmp_path / "s.zarr", stop, exports_stem=tmp_path / "x", exports=["geojson", "csv"]
    ):
        stop.set()
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".*.tmp"))


class _GreySlide:
    """A slide stand-in for measurements: a flat grey image of ``shape`` at 0.5 µm/px."""

    mpp = 0.5

    def __init__(self, shape):
        self.shape = shape

    def read_at_mpp(self, y, x, size, mpp):
        return np.full((size, size, 3), 128, np.uint8)


def _nuclei_near_the_end(side_px: int, tile: int = 256):
    """A labels store over a ``side_px``² slide with three nuclei owned by its last tile, one
    crossing the slide's bottom edge, ids as the stitcher makes them (tile × stride + k)."""
    from napari_rckd.inference.stitching import ID_STRIDE

    store = ResultStore.create(
        open_root(), "nuclei_labels", (side_px, side_px), tile, "uint32", "labels", 0.5, 0.5
    )
    rows = -(-side_px // tile)
    row = col = rows - 1
    base = (row * rows + col) * ID_STRIDE
    y0, x0 = row * tile, col * tile
    block = np.zeros((tile, tile), np.uint32)
    block[10:20, 10:22] = base + 1
    block[40:52, 100:110] = base + 2
    edge = side_px - y0  # the slide ends inside this tile's core
    block[edge - 6 : edge, 50:60] = base + 3
    store.write(Box(y0, x0, y0 + tile, x0 + tile), block)
    return store, base


def test_export_of_a_tile_at_the_end_of_a_100k_slide_visits_each_nucleus_once(tmp_path):
    """Ids near 2.4e9 (the last tile of a 100,000-px slide) must cost what ids near 1 cost:
    regionprops sized its work by the largest id, which made the export quadratic."""
    import tracemalloc

    from napari_rckd.inference.nuclei_table import measure_tile

    side = 100_000
    store, base = _nuclei_near_the_end(side)
    slide = _GreySlide((side, side))
    rows = -(-side // store.tile)
    tracemalloc.start()
    records = measure_tile(store, slide, rows - 1, rows - 1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [r["id"] for r in records] == [base + 1, base + 2, base + 3]
    assert [r["area_um2"] for r in records] == [120 * 0.25, 120 * 0.25, 60 * 0.25]
    assert peak < 16 * 2**20  # a few windows' worth, nothing proportional to the id (~2.4e9)
    for record in records:  # the polygon of the nucleus on the bottom edge stays on the slide
        assert record["polygon"].min() >= 0 and record["polygon"].max() <= side


def test_vectorised_measurements_match_regionprops():
    from skimage.measure import regionprops

    from napari_rckd.inference.nuclei_table import _shape_measures

    rng = np.random.default_rng(0)
    local = np.zeros((60, 80), np.int32)
    for k in range(1, 9):  # eight random ellipses, some touching
        cy, cx = rng.uniform(8, 52), rng.uniform(8, 72)
        a, b, t = rng.uniform(3, 8), rng.uniform(2, 5), rng.uniform(0, np.pi)
        yy, xx = np.indices(local.shape) - np.array([cy, cx])[:, None, None]
        u = (xx * np.cos(t) + yy * np.sin(t)) / a
        v = (-xx * np.sin(t) + yy * np.cos(t)) / b
        local[(u**2 + v**2) <= 1] = k
    hema = rng.uniform(0, 0.3, local.shape)
    measured = _shape_measures(local, int(local.max()), hema)
    for region in regionprops(local, intensity_image=hema):
        i = region.label - 1
        assert measured["area"][i] == region.area
        np.testing.assert_allclose([measured["cy"][i], measured["cx"][i]], region.centroid)
        assert measured["eccentricity"][i] == pytest.approx(region.eccentricity, abs=1e-9)
        assert measured["hematoxylin"][i] == pytest.approx(region.intensity_mean, abs=1e-12)
