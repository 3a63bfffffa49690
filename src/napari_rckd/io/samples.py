"""Sample slides kept in a per-user cache: the synthetic H&E slide and CMU-1-Small-Region."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from napari_rckd.io.slide import SlideError

logger = logging.getLogger(__name__)

CACHE_ENV = "NAPARI_RCKD_CACHE"
SYNTHETIC_SIZE = 8192
SYNTHETIC_SEED = 0
# bump when the generator's output changes, so stale caches are not reused
SYNTHETIC_VERSION = 1
CMU1_URL = "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs"
CMU1_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"


def cache_dir() -> Path:
    """``$NAPARI_RCKD_CACHE`` if set, else the OS's user cache folder for napari-rckd."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-rckd"))


def synthetic_sample_path() -> Path:
    """The synthetic slide, generated (about 20 s) on first use and reused afterwards."""
    return synthetic_slide_path(SYNTHETIC_SIZE, SYNTHETIC_SEED)


def synthetic_slide_path(size: int, seed: int) -> Path:
    """A synthetic slide of ``size``² px in the cache, generated once (minutes for 64k px)."""
    from napari_rckd.io.synthetic import make_synthetic_slide

    path = cache_dir() / f"synthetic-he-{size}-seed{seed}-v{SYNTHETIC_VERSION}.ome.tif"
    if not path.exists():
        logger.info("generating a %d² synthetic slide in %s (once)", size, path.parent)
        make_synthetic_slide(path, size=size, seed=seed)
    return path


def cmu1_small_region_path() -> Path:
    """Download CMU-1-Small-Region.svs once (hash-checked); a clear error when offline."""
    import pooch

    try:
        return Path(
            pooch.retrieve(
                CMU1_URL,
                known_hash=f"sha256:{CMU1_SHA256}",
                fname="CMU-1-Small-Region.svs",
                path=cache_dir(),
                progressbar=False,
            )
        )
    except Exception as error:
        raise SlideError(
            f"CMU-1-Small-Region.svs could not be downloaded from {CMU1_URL} "
            f"({type(error).__name__}); connect to the internet once, or copy the file into "
            f"{cache_dir()} (or set {CACHE_ENV})."
        ) from error
