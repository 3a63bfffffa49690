"""Nuclei instances stitched across tiles: none cut, none doubled at a seam, ids globally unique,
and the same result whatever order the tiles are computed in.

Each tile is labelled over its window (core + halo). A tile *owns* the instances whose centroid
lies in its core, and writes them whole, halo pixels included. Because cores partition the
image, every nucleus has an owner; because the halo is at least one nucleus diameter wide, an
owned nucleus lies entirely inside its owner's window and is never cut.

Where two tiles' labellers disagree near a seam, the conflicts are settled by rules that do not
depend on which tile came first, so a viewer's tiles (in pan order) and a whole-slide run (in
grid order) give the same labels:

* duplicates: two claims from different tiles that share at least half of the smaller one's
  pixels are one nucleus seen twice. The claim with more of the shared pixels in its own core
  keeps the nucleus whole (ties: the lower tile index) and the other is removed entirely;
* other overlaps (a boundary pixel both claim): the pixel goes to the claim from the tile whose
  core holds the pixel, else to the lower tile index.

Both rules compare two claims at a time, so stitching is exactly order-independent wherever at
most two tiles' claims meet; only where three claims pile on one nucleus (a tile corner) could
the order still change a few pixels.

Ids are ``tile_index * stride + local_id``: unique across tiles, and the same whatever order the
tiles are computed in, so a Labels layer stays consistent.
"""

from __future__ import annotations

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.inference.store import ResultStore
from napari_rckd.inference.tiling import Box, TileGrid

# Room for this many instances per tile: a 512² core at 0.5 µm/px holds at most ~1,500 nuclei.
ID_STRIDE = 4096
# Two claims sharing at least this fraction of the smaller one's pixels are one nucleus.
DUPLICATE_OVERLAP = 0.5


def label_dtype(grid: TileGrid, stride: int = ID_STRIDE) -> np.dtype:
    """The smallest unsigned dtype that holds every id this grid can produce."""
    return np.dtype(np.uint32 if len(grid) * stride < 2**32 else np.uint64)


def owned_instances(labels: np.ndarray, core: Box) -> np.ndarray:
    """Keep the instances whose centroid lies in ``core`` (window coordinates), renumbered
    1..k in order of their original ids; everything else becomes 0."""
    flat = labels.reshape(-1)
    if flat.size and flat.min() >= 0 and flat.max() <= flat.size:  # a labeller's ids: count them
        ids, inverse = np.arange(int(flat.max()) + 1), flat.astype(np.intp)  # (no sort needed)
    else:
        ids, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(-1)
    area = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    area[area == 0] = np.nan  # ids no pixel has: no centroid, never owned
    rows = np.repeat(np.arange(labels.shape[0], dtype=np.float64), labels.shape[1])
    cols = np.tile(np.arange(labels.shape[1], dtype=np.float64), labels.shape[0])
    # +0.5: pixel i spans [i, i+1), so a centroid on a core border goes to exactly one side
    cy = np.bincount(inverse, weights=rows) / area + 0.5
    cx = np.bincount(inverse, weights=cols) / area + 0.5
    owned = (ids > 0) & (cy >= core.y0) & (cy < core.y1) & (cx >= core.x0) & (cx < core.x1)
    renumber = np.zeros(len(ids), np.int64)
    renumber[owned] = np.arange(1, owned.sum() + 1)
    return renumber[inverse].reshape(labels.shape)


def home_tiles(grid: TileGrid, region: Box) -> np.ndarray:
    """The index of the tile whose core holds each pixel of ``region`` (grid pixels, inside)."""
    rows = np.arange(int(region.y0), int(region.y1)) // grid.tile
    cols = np.arange(int(region.x0), int(region.x1)) // grid.tile
    return rows[:, None] * grid.cols + cols[None, :]


def paste_instances(
    existing: np.ndarray,
    local: np.ndarray,
    tile: int,
    home: np.ndarray,
    stride: int = ID_STRIDE,
    max_overlap: float = DUPLICATE_OVERLAP,
) -> tuple[np.ndarray, set[int]]:
    """``existing`` with the instances of tile ``tile`` (``local`` ids 1..k) merged in as
    ``tile * stride + id``, by the order-independent rules of this module; ``home`` is the tile
    index whose core holds each pixel. Returns the merged labels and the existing ids removed
    as duplicates (their pixels outside this region are the caller's to clear)."""
    merged = existing.copy()
    local = local.astype(np.int64)
    both = (local > 0) & (existing > 0)
    dropped, removed = set(), set()
    if both.any():
        new_area = np.bincount(local.reshape(-1))
        old_ids, old_area = np.unique(existing[existing > 0], return_counts=True)
        pairs, shared = np.unique(
            np.stack([local[both], existing[both].astype(np.int64)]), axis=1, return_counts=True
        )
        verdicts = []  # (new, old, the new claim wins) for every duplicate pair
        for (new, old), count in zip(pairs.T, shared, strict=True):
            if count < max_overlap * min(new_area[new], old_area[np.searchsorted(old_ids, old)]):
                continue
            on_pair = both & (local == new) & (existing == old)
            old_tile = old // stride
            new_own = int((on_pair & (home == tile)).sum())
            old_own = int((on_pair & (home == old_tile)).sum())
            verdicts.append((new, old, (new_own, -tile) > (old_own, -old_tile)))
        dropped = {int(new) for new, _, wins in verdicts if not wins}
        removed = {int(old) for new, old, wins in verdicts if wins and new not in dropped}
        if removed:
            merged[np.isin(merged, list(removed))] = 0
    claim = local > 0
    if dropped:
        claim &= ~np.isin(local, list(dropped))
    old_tile = merged.astype(np.int64) // stride
    # a claimed pixel goes to the tile whose core holds it, else to the lower tile index
    wins = (merged == 0) | ((home == tile) & (home != old_tile))
    wins |= (home != old_tile) & (home != tile) & (tile < old_tile)
    write = claim & wins
    merged[write] = (local[write] + tile * stride).astype(existing.dtype)
    return merged, removed


def stitch_instances(
    store: ResultStore,
    grid: TileGrid,
    row: int,
    col: int,
    window_labels: np.ndarray,
    stride: int = ID_STRIDE,
) -> int:
    """Merge one tile's window labels into ``store`` (a labels result on ``grid``).

    Returns the number of instances the tile owns. Reads and rewrites the window's region (and
    the window of a duplicate it removes), from a single writer thread, in any tile order.
    """
    if window_labels.shape != (grid.window_size, grid.window_size):
        raise RckdError(
            f"tile ({row}, {col}) labels have shape {window_labels.shape}, expected the "
            f"{grid.window_size}² window (tile {grid.tile} + 2 × halo {grid.halo})."
        )
    if store.shape != grid.shape:
        raise RckdError(
            f"result {store.name!r} has shape {store.shape} but the tile grid covers {grid.shape}; "
            "create the store with the grid's shape and tile."
        )
    local = owned_instances(window_labels, grid.core_in_window(row, col))
    count = int(local.max(initial=0))
    if count >= stride:
        raise RckdError(
            f"tile ({row}, {col}) holds {count} instances, more than the id stride {stride} "
            "allows; use smaller tiles or a larger stride."
        )
    window = grid.window(row, col)
    region = window.intersect(grid.extent())
    inner = Box(
        region.y0 - window.y0, region.x0 - window.x0, region.y1 - window.y0, region.x1 - window.x0
    )
    index = grid.index(row, col)
    existing = store.read(region)
    merged, removed = paste_instances(
        existing, local[inner.slices()], index, home_tiles(grid, region), stride
    )
    changed = np.nonzero(merged != existing)
    if changed[0].size:  # write only the changed box: fewer chunks to write and to re-pyramid
        y0, x0 = (int(c.min()) for c in changed)
        y1, x1 = (int(c.max()) + 1 for c in changed)
        top, left = int(region.y0), int(region.x0)
        store.write(Box(top + y0, left + x0, top + y1, left + x1), merged[y0:y1, x0:x1])
    for old in removed:  # a duplicate may reach past this window: clear it in its owner's
        owner = divmod(old // stride, grid.cols)
        elsewhere = grid.window(*owner).intersect(grid.extent())
        pixels = store.read(elsewhere)
        if (pixels == old).any():
            store.write(elsewhere, np.where(pixels == old, 0, pixels))
    return count


def clear_owned(store: ResultStore, grid: TileGrid, row: int, col: int, stride: int = ID_STRIDE):
    """Remove the instances tile (row, col) owns (a live tile evicted to bound memory); the
    rest stay whole, and stitching the tile again gives the same labels as before."""
    region = grid.window(row, col).intersect(grid.extent())
    pixels = store.read(region)
    mine = (pixels // stride == grid.index(row, col)) & (pixels > 0)
    if mine.any():
        store.write(region, np.where(mine, 0, pixels))
