"""napari renders our labels layers through its numba fast path, not the numpy fallback that
stalled panning by 100+ ms per re-slice (issue: napari never stutters while live runs)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_labels_colouring_takes_napari_s_numba_path():
    pytest.importorskip("numba", reason="numba comes with napari-rckd[qt]")
    from napari.utils.colormaps import _accelerated_cmap as accelerated

    assert accelerated.zero_preserving_modulo is not accelerated.zero_preserving_modulo_numpy
    labels = np.arange(0, 70000, 7, dtype=np.int32).reshape(100, 100)
    fast = accelerated.zero_preserving_modulo(labels, 255, np.uint8)
    np.testing.assert_array_equal(
        fast, accelerated.zero_preserving_modulo_numpy(labels, 255, np.uint8)
    )
