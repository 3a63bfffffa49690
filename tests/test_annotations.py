"""GeoJSON region annotations: QuPath's shape in and out, masks, and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_rckd.errors import RckdError
from napari_rckd.io.annotations import (
    Region,
    read_annotations,
    regions_from_shapes,
    write_annotations,
)

QUPATH_EXPORT = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "a1",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[100, 50], [300, 50], [300, 250], [100, 250], [100, 50]],
                    [[150, 100], [200, 100], [200, 150], [150, 150], [150, 100]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
            },
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[0, 0], [40, 0], [40, 40], [0, 40], [0, 0]]],
                    [[[400, 400], [440, 400], [440, 440], [400, 440], [400, 400]]],
                ],
            },
            "properties": {"classification": {"name": "Stroma", "color": [150, 200, 150]}},
        },
    ],
}


def test_reads_qupath_geojson_as_yx(tmp_path):
    path = tmp_path / "regions.geojson"
    path.write_text(json.dumps(QUPATH_EXPORT))
    tumour, stroma = read_annotations(path)
    assert tumour.name == "Tumor" and tumour.color == (200, 0, 0)
    assert len(tumour.polygons) == 1 and len(tumour.polygons[0]) == 2  # exterior + hole
    assert tumour.bounds() == (50, 100, 250, 300)  # (y0, x0, y1, x1)
    assert stroma.name == "Stroma" and len(stroma.polygons) == 2

    mask = tumour.mask((300, 500))
    assert mask[150, 250] and not mask[125, 175]  # inside, and inside the hole
    assert not mask[10, 10]
    assert mask.sum() == pytest.approx(200 * 200 - 50 * 50, rel=0.03)
    coarse = tumour.mask((30, 50), downsample=10)
    assert coarse[15, 25] and not coarse[2, 2]


def test_round_trip_is_atomic_and_qupath_shaped(tmp_path):
    ring = np.array([[10.0, 20.0], [10.0, 80.0], [60.0, 80.0], [60.0, 20.0]])
    regions = [Region("Normal", [[ring]], color=(0, 128, 255)), Region(None, [[ring + 100]])]
    path = tmp_path / "out.geojson"
    write_annotations(path, regions)
    assert [p.name for p in tmp_path.iterdir()] == ["out.geojson"]  # no temp file left behind
    data = json.loads(path.read_text())
    feature = data["features"][0]
    assert data["type"] == "FeatureCollection"
    assert feature["geometry"]["type"] == "Polygon"
    assert feature["geometry"]["coordinates"][0][0] == [20.0, 10.0]  # x, y
    assert feature["geometry"]["coordinates"][0][-1] == [20.0, 10.0]  # closed ring
    assert feature["properties"]["classification"] == {"name": "Normal", "color": [0, 128, 255]}
    again = read_annotations(path)
    assert again[0].name == "Normal" and again[1].name is None
    np.testing.assert_allclose(again[0].polygons[0][0][:4], ring)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid GeoJSON"),
        ('{"type": "Topology"}', "not a GeoJSON FeatureCollection"),
        (
            '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}',
            "only Polygon and MultiPolygon",
        ),
        (
            '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}',
            "at least 3",
        ),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(RckdError, match=message):
        read_annotations(path)
    with pytest.raises(RckdError, match="does not exist"):
        read_annotations(tmp_path / "missing.geojson")


def test_napari_shapes_become_regions():
    rectangle = np.array([[0, 10, 10], [0, 10, 50], [0, 30, 50], [0, 30, 10]])  # (z, y, x) rows
    triangle = np.array([[5, 5], [5, 25], [20, 5]])
    tumour, stroma = regions_from_shapes([rectangle, triangle], ["tumour", "stroma"], scale=4)
    assert tumour.name == "tumour" and tumour.bounds() == (40, 40, 120, 200)
    assert stroma.mask((100, 120))[40, 40]
    with pytest.raises(RckdError, match="2 shapes but 1 class names"):
        regions_from_shapes([rectangle, triangle], ["tumour"])
