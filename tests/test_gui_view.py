"""`napari-rckd view`: the slide opens in µm with every plugin widget docked."""

from __future__ import annotations

import pytest

from conftest import shared_path

pytestmark = pytest.mark.gui


def test_view_opens_the_slide_with_the_widgets_docked(monkeypatch, make_napari_viewer):
    import napari

    from napari_rckd.cli import main
    from napari_rckd.commands.view import DOCKED_WIDGETS

    path = shared_path("slides/cmu-1-small-region.svs")
    viewers = []

    def test_viewer(**kwargs):  # napari's fixture viewer: isolated plugin registry, closed after
        viewers.append(make_napari_viewer(**kwargs))
        return viewers[-1]

    monkeypatch.setattr(napari, "Viewer", test_viewer)
    monkeypatch.setattr(napari, "run", lambda: None)  # return instead of entering the event loop
    assert main(["view", str(path)]) == 0
    (viewer,) = viewers
    (layer,) = viewer.layers
    assert layer.name == "cmu-1-small-region" and layer.multiscale
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    docked = set(viewer.window.dock_widgets)
    assert all(any(name in title for title in docked) for name in DOCKED_WIDGETS), docked


def test_view_of_a_missing_slide_is_one_sentence_and_no_window(capsys):
    from napari_rckd.cli import main

    assert main(["view", "no-such-slide.svs"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no-such-slide.svs" in error and error.count("\n") == 0
