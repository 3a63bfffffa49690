"""Open napari with a slide (or the synthetic sample slide) and the plugin's widgets docked."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

# The plugin's widgets by display name, docked as tabs on start. Later issues add theirs
# here, so `napari-rckd view` always opens the whole tool.
DOCKED_WIDGETS: tuple[str, ...] = ("Analyze slide", "Annotate slide", "Train student")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help="slide to open (default: the synthetic sample)")
    parser.add_argument("--mpp", type=float, help="override the µm per pixel the file records")


def run(args: argparse.Namespace) -> int:
    from napari_rckd._reader import slide_layer_data
    from napari_rckd.io import open_slide
    from napari_rckd.io.samples import synthetic_sample_path

    path = args.slide or synthetic_sample_path()
    slide = open_slide(path, mpp=args.mpp)  # bad input fails here, before a window opens

    import napari

    viewer = napari.Viewer(title=f"napari-rckd: {slide.path.name}")
    add_slide(viewer, slide_layer_data(slide))
    dock_widgets(viewer)
    napari.run()
    return 0


def add_slide(viewer, layer_data: tuple):
    """Add the slide layer and fit the whole slide in view."""
    data, kwargs, _ = layer_data
    layer = viewer.add_image(data, **kwargs)
    viewer.reset_view()
    return layer


def dock_widgets(viewer) -> dict:
    """Dock the plugin's widgets as tabs of one dock; return them by display name."""
    window = viewer.window
    return {
        name: window.add_plugin_dock_widget("napari-rckd", name, tabify=True)[1]
        for name in DOCKED_WIDGETS
    }
