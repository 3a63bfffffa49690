"""napari sample data (File > Open Sample): thin wrappers over `napari_rckd.io.samples`."""

from __future__ import annotations

from napari_rckd._reader import slide_layer_data
from napari_rckd.io import open_slide


def synthetic_he_slide():
    """The deterministic synthetic H&E slide at 0.5 µm/px, generated once into the cache."""
    from napari_rckd.io.samples import synthetic_sample_path

    return [slide_layer_data(open_slide(synthetic_sample_path()))]


def cmu1_small_region():
    """The public OpenSlide CMU-1-Small-Region Aperio slide, downloaded once with pooch."""
    from napari_rckd.io.samples import cmu1_small_region_path

    return [slide_layer_data(open_slide(cmu1_small_region_path()))]
