"""The napari reader: every real slide opens through npe2 exactly as napari opens it."""

from __future__ import annotations

from pathlib import Path

import npe2
import pytest
from napari.utils.notifications import notification_manager

from conftest import shared_path
from napari_rckd._reader import napari_get_reader

SLIDES = {
    "cmu-1-small-region.svs": (1, 0.499),
    "cmu-1-small-region.pyramid-jpeg.ome.tif": (4, 0.499),
    "cmu-1-small-region.pyramid-deflate.tif": (4, 0.499),
    "he-tma-core.ome.tif": (1, 0.50008),
    "tcga-cr-7395-jp2k.svs": (2, None),
    "ihc-kidney-strips.tif": (1, None),
}


@pytest.fixture(scope="module", autouse=True)
def _plugins():
    npe2.PluginManager.instance().discover()


@pytest.mark.parametrize("name", sorted(SLIDES))
def test_opens_through_npe2_as_one_rgb_multiscale_layer(name):
    levels, mpp = SLIDES[name]
    path = shared_path(f"slides/{name}")
    caught = []
    notification_manager.notification_ready.connect(caught.append)
    try:
        layers = npe2.read([str(path)], stack=False, plugin_name="napari-rckd")
    finally:
        notification_manager.notification_ready.disconnect(caught.append)
    assert len(layers) == 1
    data, kwargs, kind = layers[0]
    assert kind == "image" and kwargs["rgb"] and kwargs["multiscale"]
    expected_name = name.removesuffix(".ome.tif") if name.endswith(".ome.tif") else Path(name).stem
    assert kwargs["name"] == expected_name and len(data) == levels
    assert kwargs["metadata"]["slide"].path == path
    # a napari notification (shown in the viewer), not only a terminal line
    messages = [n.message for n in caught if "pixel size" in n.message]
    if mpp is None:
        assert "scale" not in kwargs and len(messages) == 1 and name in messages[0]
    else:
        assert kwargs["scale"] == pytest.approx((mpp, mpp), rel=1e-4)
        assert kwargs["units"] == ("um", "um") and not messages
    kwargs["metadata"]["slide"].close()


def test_the_layer_data_builds_a_napari_layer_in_microns():
    from napari.layers import Image

    data, kwargs, _ = npe2.read(
        [str(shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif"))],
        stack=False,
        plugin_name="napari-rckd",
    )[0]
    layer = Image(data, **kwargs)
    assert layer.multiscale and layer.rgb
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert list(layer.downsample_factors[:, 0]) == pytest.approx([1, 2, 4, 8], rel=2e-3)
    kwargs["metadata"]["slide"].close()


@pytest.mark.parametrize("path", ["notes.txt", "data.csv", 42, None, ["a.svs", "b.txt"], []])
def test_get_reader_declines_what_it_cannot_read_without_raising(path):
    assert napari_get_reader(path) is None


def test_get_reader_accepts_slide_suffixes_case_insensitively():
    assert callable(napari_get_reader("scan.SVS"))
    assert callable(napari_get_reader(["a.ndpi", "b.ome.tif"]))


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [("a.svs", "a"), ("b.ome.tif", "b"), ("c.OME.TIFF", "c"), ("d.tif", "d"), ("folder", "folder")],
)
def test_layer_name_drops_the_slide_suffix(file_name, expected):
    from napari_rckd._reader import layer_name

    assert layer_name(Path(file_name)) == expected
