"""Sample data: the synthetic slide is generated once into the cache; CMU-1 fails clearly offline."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.io import SlideError, open_slide, samples


@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(samples.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(samples, "SYNTHETIC_SIZE", 1024)
    return tmp_path


def test_synthetic_sample_is_written_once_and_reused(small_cache):
    from napari_rckd._sample_data import synthetic_he_slide

    data, kwargs, kind = synthetic_he_slide()[0]
    files = list(small_cache.glob("synthetic-he-*.ome.tif"))
    assert len(files) == 1 and kind == "image"
    assert kwargs["scale"] == (0.5, 0.5) and len(data) == 2
    first_written = files[0].stat().st_mtime_ns
    synthetic_he_slide()
    assert files[0].stat().st_mtime_ns == first_written
    assert not list(small_cache.glob("*.tmp"))  # the atomic write left nothing behind


def test_cmu1_offline_gives_a_clear_message(small_cache, monkeypatch):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(pooch, "retrieve", offline)
    from napari_rckd._sample_data import cmu1_small_region

    with pytest.raises(SlideError, match="CMU-1-Small-Region.svs could not be downloaded"):
        cmu1_small_region()


def test_cmu1_pinned_hash_is_the_public_file():
    data = shared_path("slides/cmu-1-small-region.svs").read_bytes()
    assert hashlib.sha256(data).hexdigest() == samples.CMU1_SHA256


def test_cmu1_from_the_cache_opens_without_download(small_cache, monkeypatch):
    import shutil

    shutil.copy(
        shared_path("slides/cmu-1-small-region.svs"), small_cache / "CMU-1-Small-Region.svs"
    )
    with open_slide(samples.cmu1_small_region_path()) as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert np.asarray(slide.levels[0][:8, :8]).shape == (8, 8, 3)
