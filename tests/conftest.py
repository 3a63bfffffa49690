"""Shared fixtures: where the real data lives, and the GPU marker's skip."""

from __future__ import annotations

from pathlib import Path

import pytest

# Tests share one process with napari viewers: load triton with its own LLVM as the viewer's
# process does (see napari_rckd._widgets), whichever test happens to import timm first.
import napari_rckd._widgets  # noqa: F401

# Real pathology data shared by the team, beside the checkout; never copied into the repo.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(relative: str) -> Path:
    """A file or folder under the shared data, or a skip that says why it is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real test data {relative!r} not found beside the checkout (../shared/data)")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("real test data not found beside the checkout (../shared/data)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def crop_path(tmp_path_factory):
    """A 768² crop of real tissue from CMU-1-Small-Region as a small tiled TIFF (no mpp tag)."""
    import tifffile

    from napari_rckd.io import open_slide

    with open_slide(shared_path("slides/cmu-1-small-region.svs")) as slide:
        pixels = slide.read_region(0, 1000, 800, 768, 768)
    path = tmp_path_factory.mktemp("crop") / "crop.tif"
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="jpeg", photometric="rgb")
    return path
