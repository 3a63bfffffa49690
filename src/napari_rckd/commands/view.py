"""Open napari with a slide (or the synthetic sample slide) and the plugin's widgets docked.

The window fills the screen (maximised, and sized to the screen where no window manager
does that), with the slide fitted, Analyze slide in front and a µm scale bar.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


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

    from napari_rckd._widgets.viewer import show_slide

    viewer = napari.Viewer(title=f"napari-rckd: {slide.path.name}")
    show_slide(viewer, slide_layer_data(slide))
    napari.run()
    return 0
