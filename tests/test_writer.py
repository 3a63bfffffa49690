"""npe2 writers: Shapes -> QuPath GeoJSON regions, Labels -> OME-TIFF with the pixel size."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_rckd._writer import write_mask, write_regions
from napari_rckd.errors import RckdError
from napari_rckd.io.annotations import read_annotations


def test_regions_written_as_valid_geojson_with_classes_and_colours(tmp_path):
    rect = np.array([[10, 20], [10, 80], [50, 80], [50, 20]], float)
    poly = np.array([[100, 100], [160, 120], [130, 190]], float)
    ellipse = np.array([[200, 200], [200, 260], [240, 260], [240, 200]], float)
    attributes = {
        "name": "regions",
        "shape_type": ["rectangle", "polygon", "ellipse"],
        "features": pd.DataFrame({"class": ["tumour", "stroma", None]}),
        "metadata": {"class_colors": {"tumour": "#d62728", "stroma": "#e377c2"}},
    }
    path = tmp_path / "regions.geojson"
    assert write_regions(str(path), [rect, poly, ellipse], attributes) == [str(path)]

    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 3
    first = collection["features"][0]
    assert first["geometry"]["type"] == "Polygon"
    ring = first["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and ring[0] == [20.0, 10.0]  # closed, (x, y)
    assert first["properties"]["classification"] == {"name": "tumour", "color": [214, 39, 40]}
    assert "classification" not in collection["features"][2]["properties"]

    regions = read_annotations(path)
    assert [r.name for r in regions] == ["tumour", "stroma", None]
    np.testing.assert_allclose(regions[1].polygons[0][0][:3], poly)
    y0, x0, y1, x1 = regions[2].bounds()  # the ellipse became a polygon inside its box
    assert y0 >= 199.9 and y1 <= 240.1 and x0 >= 199.9 and x1 <= 260.1 and y1 - y0 > 39


def test_lines_are_refused_with_the_shape_named(tmp_path):
    line = np.array([[0, 0], [10, 10]], float)
    with pytest.raises(RckdError, match="shape 0 .* is a line"):
        write_regions(str(tmp_path / "x.geojson"), [line], {"shape_type": ["line"]})
    assert not (tmp_path / "x.geojson").exists()


def test_mask_written_as_ome_tiff_with_microns(tmp_path):
    mask = np.zeros((40, 60), np.int32)
    mask[5:20, 10:30] = 2
    path = tmp_path / "mask.ome.tif"
    write_mask(str(path), mask, {"name": "cancer", "scale": (2.0, 2.0), "units": ("um", "um")})
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        np.testing.assert_array_equal(tif.asarray(), mask)
        assert tif.asarray().dtype == np.uint8
        assert 'PhysicalSizeX="2.0"' in tif.ome_metadata
    assert [p.name for p in tmp_path.iterdir()] == ["mask.ome.tif"]  # no temporary left over


def test_mask_must_be_2d(tmp_path):
    with pytest.raises(RckdError, match="2-D"):
        write_mask(str(tmp_path / "m.ome.tif"), np.zeros((2, 4, 4), np.uint8), {})
