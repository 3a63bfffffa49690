"""A sparse tiled array in plain numpy: the levels of in-memory (live) results.

zarr v3 runs every read and write through its event-loop thread: a viewer re-slicing an
in-memory result after a pan waited on that thread while the worker kept it busy with
writes, and every tile written paid round trips. This array reads and writes numpy tiles on
the calling thread: no I/O, no locks. Tiles never written read as 0 (napari's "nothing here"). A read racing a write may see
part of a tile's old pixels; the refresh that follows the write shows the new ones.
"""

from __future__ import annotations

import math

import numpy as np


class TileArray:
    """``shape`` = (*lead, H, W): the last two axes are cut into ``tile``-square numpy tiles."""

    def __init__(self, shape: tuple[int, ...], dtype, tile: int):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)
        self.tile = int(tile)
        self._lead = self.shape[:-2]
        self._tiles: dict[tuple[int, int], np.ndarray] = {}
        self._tile_bytes = math.prod(self._lead) * self.tile**2 * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes held by the tiles written so far (and not released)."""
        return len(self._tiles) * self._tile_bytes

    def release_empty(self, y0: int, x0: int, y1: int, x1: int) -> int:
        """Drop the tiles touching [y0, y1) × [x0, x1) that hold only zeros (they read as
        zeros anyway); returns the bytes given back."""
        size, released = self.tile, 0
        for row in range(max(0, y0) // size, -(-y1 // size)):
            for col in range(max(0, x0) // size, -(-x1 // size)):
                tile = self._tiles.get((row, col))
                if tile is not None and not tile.any():
                    del self._tiles[(row, col)]
                    released += self._tile_bytes
        return released

    def put(self, y: int, x: int, data: np.ndarray) -> None:
        """Write ``data`` (*lead, h, w) with its top-left pixel at (y, x), inside the array."""
        size = self.tile
        height, width = data.shape[-2:]
        for row in range(y // size, -(-(y + height) // size)):
            for col in range(x // size, -(-(x + width) // size)):
                tile = self._tiles.get((row, col))
                if tile is None:
                    tile = np.zeros((*self._lead, size, size), self.dtype)
                ty0, tx0 = max(y, row * size), max(x, col * size)
                ty1, tx1 = min(y + height, (row + 1) * size), min(x + width, (col + 1) * size)
                tile[
                    ..., ty0 - row * size : ty1 - row * size, tx0 - col * size : tx1 - col * size
                ] = data[..., ty0 - y : ty1 - y, tx0 - x : tx1 - x]
                self._tiles[(row, col)] = tile  # a new tile appears only once it is filled

    def block(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """The pixels of [y0, y1) × [x0, x1) (inside the array), all lead axes."""
        out = np.zeros((*self._lead, y1 - y0, x1 - x0), self.dtype)
        size = self.tile
        for row in range(y0 // size, -(-y1 // size)):
            for col in range(x0 // size, -(-x1 // size)):
                tile = self._tiles.get((row, col))
                if tile is None:
                    continue
                ty0, tx0 = max(y0, row * size), max(x0, col * size)
                ty1, tx1 = min(y1, (row + 1) * size), min(x1, (col + 1) * size)
                out[..., ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = tile[
                    ..., ty0 - row * size : ty1 - row * size, tx0 - col * size : tx1 - col * size
                ]
        return out

    def __getitem__(self, key) -> np.ndarray:
        key = _full_key(key, self.ndim)
        spatial = []
        for index, n in zip(key[-2:], self.shape[-2:], strict=True):
            if isinstance(index, slice):
                spatial.append(range(*index.indices(n)))
            else:
                index = int(index) + (n if int(index) < 0 else 0)
                if not 0 <= index < n:
                    raise IndexError(f"index {index} is out of bounds for size {n}")
                spatial.append(index)
        ranges = [r if isinstance(r, range) else range(r, r + 1) for r in spatial]
        if not len(ranges[0]) or not len(ranges[1]):
            out = np.zeros((*self._lead, len(ranges[0]), len(ranges[1])), self.dtype)
        else:
            (ya, yb), (xa, xb) = ((min(r), max(r) + 1) for r in ranges)
            out = self.block(ya, xa, yb, xb)
            if ranges[0].step != 1:  # strided or reversed: pick the rows from the bounding block
                out = out[..., np.asarray(ranges[0]) - ya, :]
            if ranges[1].step != 1:
                out = out[..., np.asarray(ranges[1]) - xa]
        squeeze = tuple(slice(None) if isinstance(s, range) else 0 for s in spatial)
        return out[(*key[:-2], *squeeze)]

    def __setitem__(self, key, value) -> None:
        """Write a rectangle of every lead channel: ``array[..., y0:y1, x0:x1] = value``."""
        key = _full_key(key, self.ndim)
        whole_lead = all(k == slice(None) for k in key[:-2])
        if not whole_lead or any(
            not isinstance(k, slice) or k.step not in (None, 1) for k in key[-2:]
        ):
            raise IndexError("a TileArray is written in rectangles: array[..., y0:y1, x0:x1]")
        (y0, y1, _), (x0, x1, _) = (
            k.indices(n) for k, n in zip(key[-2:], self.shape[-2:], strict=True)
        )
        shape = (*self._lead, max(0, y1 - y0), max(0, x1 - x0))
        self.put(y0, x0, np.broadcast_to(np.asarray(value, self.dtype), shape))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype=dtype)


def _full_key(key, ndim: int) -> tuple:
    """``key`` as one entry (int or slice) per axis, Ellipsis expanded."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (ndim - len(key) + 1) + key[at + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices: {len(key)} for an array of {ndim} dimensions")
    return key + (slice(None),) * (ndim - len(key))
