"""The frame order of a tiled DICOM file that does not declare it.

TILED_FULL means row-major, but files without DimensionOrganizationType exist whose frames run
down the columns instead (the shared prostate biopsy, for one); read row-major they show as a
scrambled mosaic. Neighbouring frames continue each other across their shared edge, so the
order whose edges match better is the one the file was written in.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

# Frame pairs compared: enough tissue seams to outvote blank ones, few enough decodes to stay fast.
PAIRS = 16
# Column-major only when its seams are clearly better: row-major is the standard's order.
MARGIN = 0.5


def runs_down_columns(frame, across: int, down: int) -> bool:
    """True when frame k+1 continues frame k below it rather than to its right.

    ``frame(k)`` decodes frame k; frames that cannot be decoded are left out of the vote.
    """
    if across < 2 or down < 2:  # one row or one column: both orders are the same
        return False
    # pairs that are neighbours in either order, away from the padded last row and column
    candidates = [
        k
        for k in range(across * down - 1)
        if k % across < across - 2 and k // across < down - 1
        if k % down < down - 2 and k // down < across - 1
    ]
    step = max(1, len(candidates) // PAIRS)
    beside = below = 0.0
    for k in candidates[::step][:PAIRS]:
        try:
            first, second = frame(k).astype(np.int16), frame(k + 1).astype(np.int16)
        except Exception:  # a damaged frame: the slide reports it when that tile is read
            continue
        beside += float(np.abs(first[:, -1] - second[:, 0]).mean())
        below += float(np.abs(first[-1] - second[0]).mean())
    logger.debug("frame seams: %.1f beside, %.1f below", beside, below)
    return below < beside * MARGIN
