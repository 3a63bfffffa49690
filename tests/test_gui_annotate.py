"""Annotation layers on a real slide: aligned in µm, saved next to the slide, loaded again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import shared_path
from napari_rckd.errors import RckdError

pytestmark = pytest.mark.gui


@pytest.fixture
def slide_copy(tmp_path):
    source = shared_path("slides/cmu-1-small-region.svs")
    return Path(shutil.copy(source, tmp_path / source.name))


def _open(make_napari_viewer, path):
    from napari_rckd._widgets.annotate import AnnotateWidget

    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-rckd")
    return viewer, AnnotateWidget(viewer)


def test_annotations_round_trip_next_to_the_slide(make_napari_viewer, slide_copy, qtbot):
    from napari_rckd.io.slide_annotations import annotation_paths

    viewer, widget = _open(make_napari_viewer, slide_copy)
    session = widget.session  # what the widget's buttons call
    assert session.slide_names() == [viewer.layers[0].name]
    session.create_layers(viewer.layers[0].name)
    shapes, labels = widget.shapes, widget.labels
    image = viewer.layers[0]
    assert tuple(shapes.scale) == tuple(image.scale) == pytest.approx((0.499, 0.499))
    assert labels.data.shape == (2967, 2220) and labels.data.dtype == np.uint8
    assert labels.metadata["mask_downsample"] == 1

    shapes.add_rectangles(np.array([[100.0, 100.0], [600.0, 700.0]]))
    session.choose_class("stroma")
    shapes.add_polygons([np.array([[800.0, 800.0], [1200.0, 900.0], [1000.0, 1400.0]])])
    labels.data[10:50, 10:50] = 2
    assert session.save().startswith("Saved")
    geojson, mask_path = annotation_paths(slide_copy)
    features = json.loads(geojson.read_text())["features"]
    assert [f["properties"]["classification"]["name"] for f in features] == ["tumour", "stroma"]
    assert features[0]["geometry"]["coordinates"][0][0] == [100.0, 100.0]
    assert tifffile.imread(mask_path).sum() == 2 * 40 * 40

    viewer2, widget2 = _open(make_napari_viewer, slide_copy)
    assert "2 saved region(s)" in widget2.session.create_layers(viewer2.layers[0].name)
    assert list(widget2.shapes.features["class"]) == ["tumour", "stroma"]
    np.testing.assert_allclose(widget2.shapes.data[1], shapes.data[1])
    assert widget2.labels.data.sum() == 2 * 40 * 40
    red, pink = widget2.shapes.face_color[:, :3]
    assert red[0] > 0.8 and red[1] < 0.2 and pink[2] > 0.7  # colours follow the classes


def test_relabel_selected_and_autosave(make_napari_viewer, slide_copy, qtbot):
    from napari_rckd.io.slide_annotations import annotation_paths

    viewer, widget = _open(make_napari_viewer, slide_copy)
    widget.session.create_layers(viewer.layers[0].name)
    widget.shapes.add_rectangles(np.array([[10.0, 10.0], [90.0, 90.0]]))
    widget.shapes.selected_data = {0}
    widget.session.add_class("necrosis")
    assert list(widget.shapes.features["class"]) == ["necrosis"]
    geojson, _ = annotation_paths(slide_copy)
    qtbot.waitUntil(geojson.exists, timeout=5000)  # saved a second after the edit
    qtbot.waitUntil(lambda: "necrosis" in geojson.read_text(), timeout=5000)


def test_coarse_mask_for_a_large_slide_is_aligned_in_microns(make_napari_viewer):
    """A 40k×30k slide gets a ≤4096-px mask whose pixels cover whole level-0 blocks."""
    import dask.array as da

    from napari_rckd._widgets.annotation_session import labels_layer

    viewer = make_napari_viewer()
    big = da.zeros((40000, 30000, 3), np.uint8, chunks=(4096, 4096, 3))
    image = viewer.add_image(
        [big, big[::4, ::4]], rgb=True, scale=(0.25, 0.25), metadata={"path": "/nonexistent.svs"}
    )
    layer = labels_layer(image)
    assert layer.data.shape == (4000, 3000) and layer.metadata["mask_downsample"] == 10
    assert tuple(layer.scale) == pytest.approx((2.5, 2.5))
    assert tuple(layer.translate) == pytest.approx((1.125, 1.125))  # centre of 10 px blocks


def test_no_slide_layer_is_a_message_not_a_crash(make_napari_viewer):
    from napari_rckd._widgets.annotate import AnnotateWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((10, 10), np.uint8), name="plain")
    widget = AnnotateWidget(viewer)
    with pytest.raises(RckdError, match="Open a slide first"):
        widget.session.create_layers(widget.slide_box.currentText())
    with pytest.raises(RckdError, match="Nothing to save"):
        widget.session.save()
    widget.create_button.click()  # the widget shows the same sentence
    assert "Open a slide first" in widget.status.text()
    assert len(viewer.layers) == 1


def test_napari_saves_the_layers_through_the_plugin_writers(make_napari_viewer, slide_copy):
    import tifffile

    from napari_rckd.io.annotations import read_annotations

    viewer, widget = _open(make_napari_viewer, slide_copy)
    widget.session.create_layers(viewer.layers[0].name)
    widget.shapes.add_rectangles(np.array([[10.0, 20.0], [90.0, 120.0]]))
    widget.labels.data[5:9, 5:9] = 1
    out = slide_copy.parent
    widget.shapes.save(str(out / "regions.geojson"), plugin="napari-rckd")
    widget.labels.save(str(out / "mask.ome.tif"), plugin="napari-rckd")
    (region,) = read_annotations(out / "regions.geojson")
    assert region.name == "tumour" and region.bounds() == (10.0, 20.0, 90.0, 120.0)
    with tifffile.TiffFile(out / "mask.ome.tif") as tif:
        assert tif.is_ome and tif.asarray().sum() == 16
        assert 'PhysicalSizeX="0.499"' in tif.ome_metadata


def test_closing_the_widget_releases_its_keys_and_events(make_napari_viewer, slide_copy):
    """Alt-A, Alt-S and Alt-1..9 belong to the widget while it is open, and no longer after."""
    from napari.utils.key_bindings import KeyBinding

    viewer, widget = _open(make_napari_viewer, slide_copy)
    widget.session.create_layers(viewer.layers[0].name)
    keys = [KeyBinding.from_str(k) for k in ("Alt-A", "Alt-S", "Alt-1", "Alt-9")]
    assert all(key in viewer.keymap for key in keys)
    edits = []
    widget.session.edited.connect(lambda: edits.append(1))
    widget.close()
    assert not any(key in viewer.keymap for key in keys)
    widget.shapes.add_rectangles(np.array([[10.0, 10.0], [90.0, 90.0]]))
    assert edits == []  # the layers' edits no longer reach the (closed) widget's session
    viewer.add_image(np.zeros((4, 4), np.uint8))  # the viewer's events no longer reach it
