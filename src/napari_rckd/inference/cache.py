"""Per-tile model outputs kept in memory, keyed by (model, layer, level, tile), bounded in bytes.

Panning back over a region must not recompute it, yet a long session must not grow without
limit: the least recently used results are evicted first. The LRU itself is the slide reader's
thread-safe ``TileCache``; this adds the result key and a readable size.
"""

from __future__ import annotations

import numpy as np

from napari_rckd.io.tiles import TileCache

# Enough for ~250 nuclei windows of 384² (labels + probability) without threatening a laptop.
RESULT_CACHE_BYTES = 256 * 2**20
# The live result layers (every level of every result) hold at most this much; tiles seen least
# recently are evicted first. With the cache above, live analysis keeps at most 768 MB of
# results whatever the slide's size and however long the session; a 1080p view of nuclei at
# 0.25 µm/px on a 20x slide takes about 90 MB (labels, probability, their pyramids).
LIVE_RESULTS_BYTES = 512 * 2**20


class ResultCache(TileCache):
    """A thread-safe LRU of per-tile results (one array per key), at most ``max_bytes``."""

    def __init__(self, max_bytes: int = RESULT_CACHE_BYTES):
        super().__init__(max_bytes)

    @staticmethod
    def key(model: str, layer: str, level: int, tile: tuple[int, int]) -> tuple:
        return (model, layer, int(level), int(tile[0]), int(tile[1]))

    def get_result(
        self, model: str, layer: str, level: int, tile: tuple[int, int]
    ) -> np.ndarray | None:
        return self.get(self.key(model, layer, level, tile))

    def put_result(
        self, model: str, layer: str, level: int, tile: tuple[int, int], result: np.ndarray
    ) -> None:
        self.put(self.key(model, layer, level, tile), result)

    @property
    def nbytes(self) -> int:
        """Bytes held now (never more than ``max_bytes``)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._tiles)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._tiles
