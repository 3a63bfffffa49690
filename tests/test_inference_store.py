"""Result stores: tile-sparse zarr v3, deferred pyramid updates, OME metadata, bounded memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import zarr

from napari_rckd.errors import RckdError
from napari_rckd.inference.store import ResultStore, downsample2, open_root
from napari_rckd.inference.tile_array import TileArray
from napari_rckd.inference.tiling import Box, TileGrid


def test_downsample_mode_keeps_ids_and_mean_averages():
    labels = np.array([[7, 7, 0, 3], [7, 0, 0, 5], [1, 2, 9, 9], [0, 0, 9, 4]], np.uint32)
    np.testing.assert_array_equal(downsample2(labels, "mode"), [[7, 0], [0, 9]])
    # a 2-2 tie goes to foreground; odd sizes repeat the edge
    np.testing.assert_array_equal(downsample2(np.array([[0, 4], [4, 0]]), "mode"), [[4]])
    assert downsample2(np.ones((3, 5), np.uint8), "mode").shape == (2, 3)
    prob = np.array([[[0.0, 1.0], [0.5, 0.5]]], np.float32)
    np.testing.assert_allclose(downsample2(prob, "mean"), [[[0.5]]])


def _written_store(root, order, kind="labels", dtype=np.uint32, channels=None):
    grid = TileGrid(shape=(300, 520), tile=64)
    store = ResultStore.create(
        root, kind, grid.shape, grid.tile, dtype, kind, mpp=0.5, slide_mpp=0.25, channels=channels
    )
    full = np.zeros(((len(channels),) if channels else ()) + grid.shape, dtype)
    tiles = [(r, c) for r in range(grid.rows) for c in range(grid.cols) if (r + c) % 3]
    for row, col in order(tiles):
        core = grid.core(row, col)
        rng = np.random.default_rng(grid.index(row, col))  # a tile's data, whatever the order
        values = rng.integers(1, 50, size=full[..., : int(core.height), : int(core.width)].shape)
        data = (values / 50).astype(dtype) if kind == "probability" else values.astype(dtype)
        store.write(core, data)
        full[(..., *core.slices())] = data
    store.flush()  # rebuild the coarse levels above every write, as the predictor does per batch
    return store, full


@pytest.mark.parametrize(
    "kind, dtype, channels", [("labels", np.uint32, None), ("probability", np.float32, ["a", "b"])]
)
def test_pyramid_after_tile_writes_equals_downsampling_the_whole(kind, dtype, channels):
    store, full = _written_store(open_root(), lambda t: t[::-1], kind, dtype, channels)
    assert [lvl.shape[-2:] for lvl in store.levels] == [
        (300, 520),
        (150, 260),
        (75, 130),
        (38, 65),
        (19, 33),
    ]
    expected = full
    for level in store.levels:
        np.testing.assert_array_equal(np.asarray(level[...]), expected)
        expected = downsample2(expected, "mean" if kind == "probability" else "mode")
    # the same writes in another order give the same pyramid
    again, _ = _written_store(open_root(), lambda t: t, kind, dtype, channels)
    for a, b in zip(store.levels, again.levels, strict=True):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]))
    # in memory the levels are numpy tiles, read and written without zarr
    assert all(isinstance(level, TileArray) for level in store.levels)
    assert store.nbytes_stored() == sum(level.nbytes for level in store.levels)
    dask = store.dask_levels()
    np.testing.assert_array_equal(
        dask[1][..., 5:40, 7:90].compute(), store.levels[1][..., 5:40, 7:90]
    )


def test_directory_store_reopens_with_ome_multiscales(tmp_path):
    root = open_root(tmp_path / "results.zarr")
    store, full = _written_store(root, lambda t: t)
    reopened = ResultStore.open(open_root(tmp_path / "results.zarr", mode="r"), "labels")
    assert all(isinstance(level, zarr.Array) for level in reopened.levels)
    np.testing.assert_array_equal(reopened.read(Box(0, 0, 300, 520)), full)
    ome = json.loads((tmp_path / "results.zarr" / "labels" / "zarr.json").read_text())[
        "attributes"
    ]["ome"]
    multiscale = ome["multiscales"][0]
    assert ome["version"] == "0.5" and "image-label" in ome
    assert [a["unit"] for a in multiscale["axes"]] == ["micrometer", "micrometer"]
    transforms = [d["coordinateTransformations"] for d in multiscale["datasets"]]
    assert [t[0]["scale"] for t in transforms] == [
        [0.5, 0.5],
        [1.0, 1.0],
        [2.0, 2.0],
        [4.0, 4.0],
        [8.0, 8.0],
    ]
    assert transforms[0][1]["translation"] == [0.125, 0.125]  # result pixel centre over the slide's
    assert reopened.translate_um(2) == pytest.approx(0.5 * (2.0 - 0.25))
    chunks = list((tmp_path / "results.zarr" / "labels" / "0" / "c").rglob("*"))
    assert 0 < len([c for c in chunks if c.is_file()]) < 5 * 9  # untouched tiles never hit the disk
    levels = reopened.dask_levels()
    assert levels[0].chunksize == (64, 64)
    np.testing.assert_array_equal(
        levels[1][:10, :10].compute(), np.asarray(reopened.levels[1][:10, :10])
    )
    with pytest.raises(RckdError, match="already exists"):
        ResultStore.create(root, "labels", (10, 10), 8, np.uint8, "labels", 0.5, 0.25)
    with pytest.raises(RckdError, match="no result named"):
        ResultStore.open(root, "nuclei")
    with pytest.raises(RckdError, match="does not fit"):
        store.write(Box(0, 0, 64, 64), np.zeros((10, 10), np.uint32))


def test_a_100k_square_store_written_at_a_few_tiles_stays_small(tmp_path):
    tracemalloc.start()
    try:
        root = open_root(tmp_path / "big.zarr")
        grid = TileGrid(shape=(100_000, 100_000), tile=512)
        store = ResultStore.create(
            root, "nuclei", grid.shape, grid.tile, np.uint32, "labels", 0.5, 0.25
        )
        rng = np.random.default_rng(1)
        for row, col in [(0, 0), (97, 113), (195, 195), (40, 7)]:
            core = grid.core(row, col)
            store.write(
                core, rng.integers(0, 2**20, (int(core.height), int(core.width)), dtype=np.uint32)
            )
        store.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense = 100_000 * 100_000 * 4
    assert len(store.levels) == 9  # down to one 512² chunk
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {dense / 2**30:.0f} GiB result"
    on_disk = sum(p.stat().st_size for p in (tmp_path / "big.zarr").rglob("*") if p.is_file())
    assert on_disk < 40 * 2**20 and on_disk == pytest.approx(store.nbytes_stored(), rel=0.1)
    # reading far from the written tiles gives the fill value, from no chunk at all
    assert not store.read(Box(50_000, 50_000, 50_100, 50_100)).any()
    assert store.read(Box(97 * 512, 113 * 512, 97 * 512 + 2, 113 * 512 + 2)).all()


def test_changes_are_reported_once_their_pyramid_is_rebuilt():
    store = ResultStore.create(open_root(), "labels", (64, 64), 16, np.uint32, "labels", 0.5, 0.25)
    store.write(Box(0, 0, 8, 8), np.ones((8, 8), np.uint32))
    assert store.take_changes() == []  # not tracked: nothing recorded
    store.track_changes()
    store.write(Box(40, 50, 48, 70), np.full((8, 20), 7, np.uint32))  # clipped to the array
    assert store.take_changes() == []  # written, but coarse levels not rebuilt yet
    store.flush()
    assert store.take_changes() == [Box(40, 50, 48, 64)]
    assert store.take_changes() == []
    assert store.levels[1][20:24, 25:32].min() == 7  # level 1 is final
