"""argparse types that refuse impossible numbers while the command line is parsed.

Checked there, a bad ``--lr`` or ``--steps`` stops the command before it writes anything
into ``--out`` (a teacher cache, a config), and argparse names the flag in its message.
"""

from __future__ import annotations

import argparse
import math

from napari_rckd.limits import MAX_LR


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
