"""Tile-sparse, multiscale result arrays in zarr v3 (memory or a directory), OME-Zarr laid out.

A result for a whole slide at 0.5 µm/px can be 100,000² pixels, so it is never an array in RAM:
each result is a zarr group of pyramid levels chunked by the tile grid with fill value 0. Only
chunks that were written exist (zarr skips all-zero chunks). Writes go to level 0 and mark the
chunks above them dirty; ``flush()`` (the predictor calls it once per batch, readers before
reading) rebuilds each dirty coarse chunk whole from the level below, so a batch costs one
aligned write per touched chunk and level instead of a read-modify-write per tile and level:
``mode`` of 2×2 blocks for labels and classes (a mean would invent ids), ``mean`` for
probabilities. In memory (live analysis) the levels are ``TileArray``s, sparse numpy tiles
that the worker writes and the viewer slices without zarr's event-loop round trips; the
group then holds only the metadata. The group carries OME-NGFF 0.5
``multiscales`` metadata with µm scales and the half-pixel translation that puts result
pixels over the slide's pixels.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import numpy as np
import zarr

from napari_rckd.errors import RckdError
from napari_rckd.inference.tile_array import TileArray
from napari_rckd.inference.tiling import Box

log = logging.getLogger(__name__)

# kind -> how a 2×2 block becomes one pixel of the next pyramid level
KINDS = {"labels": "mode", "classes": "mode", "probability": "mean"}
OME_VERSION = "0.5"


def open_root(path: str | Path | None = None, mode: str = "a") -> zarr.Group:
    """The zarr v3 group that holds result stores: in memory when ``path`` is None, else on disk."""
    store = zarr.storage.MemoryStore() if path is None else zarr.storage.LocalStore(str(path))
    try:
        return zarr.open_group(store, mode=mode, zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as error:
        raise RckdError(
            f"no result store at {path}: {error}; write results there first."
        ) from error


def downsample2(array: np.ndarray, method: str) -> np.ndarray:
    """Halve the last two axes (odd sizes round up by repeating the edge) by block mode or mean."""
    pad = [(0, 0)] * (array.ndim - 2) + [(0, array.shape[-2] % 2), (0, array.shape[-1] % 2)]
    if any(p[1] for p in pad):
        array = np.pad(array, pad, mode="edge")
    blocks = np.stack(
        [array[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]
    )  # (4, ..., H/2, W/2)
    if method == "mean":
        mean = blocks.mean(axis=0, dtype=np.float64)
        if np.issubdtype(array.dtype, np.integer):
            mean = np.rint(mean)
        return mean.astype(array.dtype)
    # mode: votes per candidate; ties go to foreground so small objects survive a level longer
    votes = sum((blocks == blocks[j]).astype(np.int8) for j in range(4)) * 2 + (blocks != 0)
    return np.take_along_axis(blocks, votes.argmax(axis=0)[None], axis=0)[0]


def _level_shapes(shape: tuple[int, int], tile: int, n_levels: int | None) -> list[tuple[int, int]]:
    shapes = [tuple(shape)]
    while (n_levels is None and max(shapes[-1]) > tile) or (
        n_levels is not None and len(shapes) < n_levels
    ):
        shapes.append(tuple(math.ceil(s / 2) for s in shapes[-1]))
    return shapes


class ResultStore:
    """One multiscale result (e.g. the nuclei labels of a slide for one model) in a zarr group.

    ``levels[k]`` has shape ``(*channels, H_k, W_k)``; level 0 is at ``mpp`` µm/px over the
    slide's level 0 (model pixels, see ``TileGrid``), level k at ``mpp * 2**k``.
    """

    def __init__(self, group: zarr.Group, levels: list[TileArray] | None = None):
        meta = group.attrs.get("napari_rckd")
        if meta is None:
            raise RckdError(f"zarr group {group.path!r} is not a napari-rckd result store.")
        self.group = group
        self.name = meta["name"]
        self.kind = meta["kind"]
        self.mpp = float(meta["mpp"])
        self.slide_mpp = float(meta["slide_mpp"])
        self.tile = int(meta["tile"])
        self.channels = list(meta["channels"]) if meta["channels"] is not None else None
        # zarr arrays on disk, numpy tiles in memory: both sliced as [..., y0:y1, x0:x1]
        self.levels: list = levels or [group[str(k)] for k in range(meta["n_levels"])]
        self._dirty: set[tuple[int, int]] = set()  # level-1 chunks (row, col) to rebuild
        # level-0 boxes written, for a viewer that shows just those (None: not tracked)
        self._unflushed: list[Box] | None = None
        self._changes: list[Box] | None = None
        self._lock = threading.RLock()  # a viewer may read (and flush) while the worker writes

    @classmethod
    def create(
        cls,
        root: zarr.Group,
        name: str,
        shape: tuple[int, int],
        tile: int,
        dtype,
        kind: str,
        mpp: float,
        slide_mpp: float,
        channels: list[str] | None = None,
        n_levels: int | None = None,
    ) -> ResultStore:
        """Create the (empty, lazily chunked) arrays and OME metadata of a result named ``name``.

        ``shape`` is the result's level-0 (height, width) in model pixels, ``tile`` the chunk side
        (use the tile grid's core size), ``channels`` names a leading channel axis if any.
        """
        if kind not in KINDS:
            raise RckdError(f"result kind {kind!r} is not one of {sorted(KINDS)}.")
        if name in root:
            raise RckdError(
                f"a result named {name!r} already exists in this store; open it with "
                "ResultStore.open or choose another name."
            )
        group = root.create_group(name)
        lead = (len(channels),) if channels else ()
        shapes = _level_shapes(shape, tile, n_levels)
        in_memory = isinstance(root.store, zarr.storage.MemoryStore)
        levels = []
        for k, level_shape in enumerate(shapes):
            if in_memory:
                levels.append(TileArray(lead + level_shape, dtype, tile))
                continue
            group.create_array(
                str(k),
                shape=lead + level_shape,
                chunks=lead + (min(tile, level_shape[0]), min(tile, level_shape[1])),
                dtype=dtype,
                fill_value=0,
                compressors="auto",
            )
        group.attrs["ome"] = _ome_metadata(name, kind, mpp, slide_mpp, len(shapes), channels)
        group.attrs["napari_rckd"] = dict(
            name=name,
            kind=kind,
            mpp=mpp,
            slide_mpp=slide_mpp,
            tile=tile,
            channels=channels,
            n_levels=len(shapes),
        )
        log.debug("created result %s %s at %.3g µm/px, %d levels", name, shape, mpp, len(shapes))
        return cls(group, levels or None)

    @classmethod
    def open(cls, root: zarr.Group, name: str) -> ResultStore:
        if name not in root:
            raise RckdError(f"no result named {name!r} in this store (it holds {sorted(root)}).")
        return cls(root[name])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.levels[0].shape[-2:])

    def scale_um(self, level: int = 0) -> float:
        return self.mpp * 2**level

    def translate_um(self, level: int = 0) -> float:
        """Offset of pixel (0, 0)'s centre from the slide's level-0 pixel (0, 0) centre, in µm."""
        return 0.5 * (self.scale_um(level) - self.slide_mpp)

    def track_changes(self) -> None:
        """Start recording where writes land, for ``take_changes``."""
        with self._lock:
            self._unflushed, self._changes = [], []

    def take_changes(self) -> list[Box]:
        """The level-0 boxes written since the last call whose pyramid is rebuilt (flushed):
        every level under them is final. Empty unless ``track_changes`` was called."""
        with self._lock:
            taken = self._changes or []
            if self._changes is not None:
                self._changes = []
            return taken

    def read(self, box: Box, level: int = 0, flush: bool = True) -> np.ndarray:
        """Pixels of ``box`` (integer level-``level`` coordinates, clipped to the array)."""
        if level > 0 and flush:
            self.flush()
        array = self.levels[level]
        box = _clip(box, array.shape[-2:])
        return np.asarray(array[(..., *box.slices())])

    def write(self, box: Box, data: np.ndarray) -> None:
        """Write level-0 ``data`` at ``box`` (parts outside the array are dropped) and mark the
        pyramid chunks above it for the next ``flush()``."""
        if tuple(data.shape[-2:]) != (int(box.height), int(box.width)):
            raise RckdError(
                f"result {self.name!r}: data of shape {data.shape} does not fit box {tuple(box)}."
            )
        clipped = _clip(box, self.shape)
        if clipped.is_empty():
            return
        inner = Box(
            clipped.y0 - box.y0, clipped.x0 - box.x0, clipped.y1 - box.y0, clipped.x1 - box.x0
        )
        data = data[(..., *inner.slices())]
        self.levels[0][(..., *clipped.slices())] = data
        with self._lock:
            if len(self.levels) > 1:
                self._dirty.update(_chunks_under(clipped.scaled(0.5), self.tile))
            if self._unflushed is not None:
                self._unflushed.append(clipped)

    def flush(self) -> None:
        """Rebuild the pyramid above the writes since the last flush: level by level, every
        dirty chunk whole from the (already rebuilt) level below."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            size, method = self.tile, KINDS[self.kind]
            for k in range(1, len(self.levels)):
                level = self.levels[k]
                for row, first, last in _runs(dirty):  # chunks of every level are tile × tile
                    box = _clip(
                        Box(row * size, first * size, (row + 1) * size, (last + 1) * size),
                        level.shape[-2:],
                    )
                    below = self.read(box.scaled(2), level=k - 1, flush=False)
                    block = downsample2(below, method)[..., : int(box.height), : int(box.width)]
                    level[(..., *box.slices())] = block
                dirty = {(row // 2, col // 2) for row, col in dirty}
            if self._unflushed:
                self._changes.extend(self._unflushed)
                self._unflushed = []

    def dask_levels(self) -> list:
        """The pyramid as dask arrays (chunks = tiles) for a napari multiscale layer."""
        import dask.array as da

        self.flush()
        return [
            da.from_zarr(level)
            if isinstance(level, zarr.Array)
            else da.from_array(level, chunks=(*level.shape[:-2], self.tile, self.tile))
            for level in self.levels
        ]

    @property
    def nbytes_in_memory(self) -> int:
        """Bytes of the in-memory (live) levels' tiles; 0 for a store on disk."""
        return sum(level.nbytes for level in self.levels if isinstance(level, TileArray))

    def release(self, box: Box) -> int:
        """Rebuild the pyramid, then give back the in-memory tiles under level-0 ``box`` that
        hold only zeros, at every level (a live result evicted there); returns the bytes."""
        self.flush()
        released = 0
        for k, level in enumerate(self.levels):
            if isinstance(level, TileArray):
                f = 2**k
                released += level.release_empty(
                    int(box.y0) // f, int(box.x0) // f, -(-int(box.y1) // f), -(-int(box.x1) // f)
                )
        return released

    def nbytes_stored(self) -> int:
        """Bytes the result occupies in its store (compressed chunks and metadata)."""
        self.flush()
        return sum(
            level.nbytes_stored() if isinstance(level, zarr.Array) else level.nbytes
            for level in self.levels
        )


def _chunks_under(box: Box, size: int) -> set[tuple[int, int]]:
    """(row, col) of the ``size``-square chunks that ``box`` touches."""
    rows = range(int(box.y0 // size), math.ceil(box.y1 / size))
    cols = range(int(box.x0 // size), math.ceil(box.x1 / size))
    return {(r, c) for r in rows for c in cols}


def _runs(chunks: set[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(row, first col, last col) of each horizontal run of adjacent chunks: one zarr read and
    one write per run, as every zarr call pays a round trip to zarr's event-loop thread."""
    runs: list[tuple[int, int, int]] = []
    for row, col in sorted(chunks):
        if runs and runs[-1][0] == row and runs[-1][2] == col - 1:
            runs[-1] = (row, runs[-1][1], col)
        else:
            runs.append((row, col, col))
    return runs


def _clip(box: Box, shape: tuple[int, int]) -> Box:
    return Box(*(int(v) for v in box)).intersect(Box(0, 0, shape[0], shape[1]))


def _ome_metadata(name, kind, mpp, slide_mpp, n_levels, channels) -> dict:
    space = {"type": "space", "unit": "micrometer"}
    axes = [{"name": "y", **space}, {"name": "x", **space}]
    lead_scale, lead_shift = [], []
    if channels:
        axes.insert(0, {"name": "c", "type": "channel"})
        lead_scale, lead_shift = [1.0], [0.0]
    datasets = []
    for k in range(n_levels):
        scale = mpp * 2**k
        shift = 0.5 * (scale - slide_mpp)
        transforms = [
            {"type": "scale", "scale": lead_scale + [scale, scale]},
            {"type": "translation", "translation": lead_shift + [shift, shift]},
        ]
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    multiscale = {"name": name, "axes": axes, "datasets": datasets, "type": KINDS[kind]}
    ome = {"version": OME_VERSION, "multiscales": [multiscale]}
    if kind == "labels":
        ome["image-label"] = {"version": OME_VERSION}
    return ome
