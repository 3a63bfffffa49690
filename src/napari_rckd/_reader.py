"""napari reader contribution: a slide file -> one RGB multiscale image layer in µm."""

from __future__ import annotations

import logging
from pathlib import Path

from napari_rckd.io.opener import SLIDE_SUFFIXES

log = logging.getLogger(__name__)


def napari_get_reader(path):
    """Return `read_slides` if every path looks like a slide we read, else None (never raises)."""
    try:
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        if paths and all(Path(p).suffix.lower() in SLIDE_SUFFIXES for p in paths):
            return read_slides
    except Exception:  # napari asks every reader; an odd argument is simply not ours
        return None
    return None


def read_slides(path) -> list[tuple]:
    """Open each slide lazily; a bad file raises `SlideError` naming it and the problem."""
    from napari_rckd.io import open_slide

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [slide_layer_data(open_slide(p)) for p in paths]


def slide_layer_data(slide) -> tuple:
    """LayerData for a `Slide`: µm scale and units when the mpp is known, pixels otherwise."""
    kwargs = {
        "name": layer_name(slide.path),
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "metadata": slide_metadata(slide),
        # napari's own dask cache (a quarter of the machine's RAM by default) would keep every
        # slide pixel ever shown: browsing a large slide grew by gigabytes. The slide's bounded
        # tile cache serves repeated reads instead.
        "cache": False,
    }
    if slide.mpp is not None:
        kwargs["scale"] = (slide.mpp, slide.mpp)
        kwargs["units"] = ("um", "um")
    else:
        notify_no_mpp(slide)
    return (slide.levels, kwargs, "image")


def notify_no_mpp(slide) -> None:
    """Tell the user, in napari and on the terminal, that the slide is shown in pixels."""
    from napari.utils.notifications import show_warning

    message = (
        f"{slide.path.name} does not record its pixel size, so it is shown in pixels; set its "
        "µm per pixel in Analyze slide (mpp) or open it with `napari-rckd view --mpp`."
    )
    log.warning(message)
    show_warning(message)


def layer_name(path: Path) -> str:
    """The file name without its slide suffix; `.ome.tif` counts as one suffix."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", path.suffix):
        if suffix and name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def slide_metadata(slide) -> dict:
    """What the widgets need later: the open `Slide` (for fast reads) and its facts."""
    return {
        "slide": slide,
        "path": str(slide.path),
        "mpp": slide.mpp,
        "magnification": slide.magnification,
        "vendor": slide.vendor,
        "compression": slide.compression,
        "tile_shape": slide.tile_shape,
        "downsamples": slide.downsamples,
        "associated": list(slide.associated),
    }
