"""The result cache: keyed by (model, layer, level, tile), least recently used out, bytes bounded."""

from __future__ import annotations

import threading

import numpy as np

from napari_rckd.inference.cache import ResultCache


def test_the_byte_bound_holds_and_the_least_recently_used_go_first():
    tile_bytes = 64 * 64 * 4
    cache = ResultCache(max_bytes=10 * tile_bytes + 100)
    for col in range(25):
        cache.put_result("csat", "nuclei", 0, (0, col), np.full((64, 64), col, np.float32))
        if col >= 2:  # keep (0, 1) in use: it must survive while newer tiles arrive
            assert cache.get_result("csat", "nuclei", 0, (0, 1)) is not None
        assert cache.nbytes <= cache.max_bytes
    assert len(cache) == 10 and cache.nbytes == 10 * tile_bytes
    kept = [col for col in range(25) if cache.get_result("csat", "nuclei", 0, (0, col)) is not None]
    assert kept == [1, *range(16, 25)]
    assert cache.get_result("csat", "nuclei", 0, (0, 20))[0, 0] == 20
    # the key tells models, layers and levels apart
    assert cache.get_result("other", "nuclei", 0, (0, 20)) is None
    assert cache.get_result("csat", "cancer", 0, (0, 20)) is None
    assert cache.get_result("csat", "nuclei", 1, (0, 20)) is None
    assert ResultCache.key("csat", "nuclei", 0, (0, 20)) in cache
    # a result larger than the whole bound is not kept rather than flushing everything
    cache.put_result("csat", "nuclei", 0, (9, 9), np.zeros(cache.max_bytes + 1, np.uint8))
    assert len(cache) == 10 and cache.get_result("csat", "nuclei", 0, (9, 9)) is None


def test_the_bound_holds_under_concurrent_writers():
    cache = ResultCache(max_bytes=50_000)

    def writer(model: str) -> None:
        rng = np.random.default_rng(len(model))
        for i in range(300):
            cache.put_result(
                model, "subtype", 2, (i, 0), np.zeros(int(rng.integers(100, 5000)), np.uint8)
            )

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "bb", "ccc")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 < cache.nbytes <= 50_000
