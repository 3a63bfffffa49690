"""argparse types that refuse impossible numbers while the command line is parsed, and flags
several commands share.

Checked there, a bad ``--lr`` or ``--steps`` stops the command before it writes anything
into ``--out`` (a teacher cache, a config), and argparse names the flag in its message.
"""

from __future__ import annotations

import argparse
import math

from napari_rckd.defaults import DECODERS
from napari_rckd.limits import MAX_LR


def add_decoder_argument(parser: argparse.ArgumentParser) -> None:
    """``--decoder`` of the commands that build dense models (`models.assembly.decoder_widths`)."""
    parser.add_argument(
        "--decoder",
        choices=DECODERS,
        default="standard",
        help="dense decoder: 64 channels at every level (standard), the encoder's own widths "
        "up to 64 (light: an eighth of the decoder MACs on EfficientNet-B0; the same model "
        "for backbones 64 wide throughout), or standard with a stride-2 refiner read from the "
        "image (detail: the thin gaps between touching nuclei; a standard checkpoint's weights "
        "load into it); default standard",
    )


def add_pixel_size_arguments(parser: argparse.ArgumentParser, what: str = "slides") -> None:
    """``--slide-mpp`` and ``--mpp-table``: the pixel size of files that do not record it."""
    parser.add_argument(
        "--slide-mpp",
        type=float,
        help=f"µm per pixel of {what} whose file does not say it (e.g. 0.25 at 40x)",
    )
    parser.add_argument(
        "--mpp-table",
        metavar="CSV",
        help="µm per pixel per file for images whose file does not say it: a CSV with path "
        "and mpp columns, paths relative to it (e.g. a data set's manifest.csv)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def learning_rate(text: str) -> float:
    value = positive_float(text)
    if value > MAX_LR:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_LR:g} (typical: 1e-4 to 1e-2), got {text!r}"
        )
    return value


def share(text: str) -> float:
    """A proportion strictly between 0 and 1 (a share of training crops)."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.3), got {text!r}")
    return value
