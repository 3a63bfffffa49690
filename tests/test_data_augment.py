"""Augmentation: geometry moves image and targets together, colour touches the image only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from napari_rckd.training.data.augment import Augment, colour_jitter, geometric


def _real_tile() -> torch.Tensor:
    from skimage.io import imread

    rgb = imread(shared_path("tiles/crc-val-he-7k/TUM-TCGA-DRHQMTQA.png"))[..., :3]
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("scale", [0.0, 0.3])
def test_geometry_is_shared(scale):
    image = _real_tile()
    target = image[:1].clone()  # a target that *is* the image's first channel
    mask = (image[1] * 4).long()  # integer classes 0..3
    for seed in range(8):
        rng = np.random.default_rng(seed)
        out_image, out_target, out_mask = geometric(rng, (image, target, mask), scale=scale)
        assert out_image.shape == image.shape and out_mask.dtype == torch.int64
        torch.testing.assert_close(out_target[0], out_image[0])
        assert set(out_mask.unique().tolist()) <= set(
            mask.unique().tolist()
        )  # nearest: no new classes
        if scale == 0:  # a pure rotation/flip permutes pixels
            torch.testing.assert_close(out_image.sum(), image.sum())


def test_rotations_and_flips_all_occur():
    image = torch.arange(16.0).view(1, 4, 4)
    seen = {
        tuple(geometric(np.random.default_rng(s), (image,))[0].flatten().tolist())
        for s in range(200)
    }
    assert len(seen) == 8  # the dihedral group of the square


def test_colour_changes_image_only():
    image = _real_tile()
    target = torch.rand(1, *image.shape[1:])
    augment = Augment(flips=False, rotations=False)
    out_image, out_target = augment(np.random.default_rng(1), image, target)
    torch.testing.assert_close(out_target, target)
    assert (out_image - image).abs().mean() > 0.005
    assert out_image.min() >= 0 and out_image.max() <= 1


def test_hed_jitter_is_identity_at_zero_and_keeps_structure():
    image = _real_tile()
    same = colour_jitter(
        np.random.default_rng(0), image, hed=1e-9, brightness=0, contrast=0, saturation=0
    )
    torch.testing.assert_close(same, image.clamp_min(1e-3), atol=2e-3, rtol=0)
    jittered = colour_jitter(
        np.random.default_rng(0), image, hed=0.05, brightness=0, contrast=0, saturation=0
    )
    correlation = np.corrcoef(jittered[0].flatten(), image[0].flatten())[0, 1]
    assert 0.95 < correlation < 1.0  # new stain, same tissue


def test_strong_augment_zooms_and_jitters_more_than_the_default():
    strong, light = Augment.strong(), Augment()
    assert strong.scale > light.scale == 0
    for name in ("hed", "brightness", "contrast", "saturation"):
        assert getattr(strong, name) > getattr(light, name)


def test_stain_augment_fades_and_darkens_hematoxylin_without_moving_the_background():
    """`Augment.stain` scales each stain's density up to ±25 % but shifts it little, so over
    many draws a real tile's nuclei get both fainter and darker while glass stays glass."""
    from skimage.color import rgb2hed

    stain, light = Augment.stain(), Augment()
    assert stain.hed > light.hed and stain.hed_shift < stain.hed and stain.scale == 0
    image = _real_tile()
    nuclei = torch.from_numpy(rgb2hed(image.permute(1, 2, 0).numpy())[..., 0] > 0.08)
    assert 0.02 < nuclei.float().mean() < 0.6  # the tile has nuclei and stroma
    darkness = []
    for seed in range(40):
        out = colour_jitter(
            np.random.default_rng(seed), image, stain.hed, 0, 0, 0, hed_shift=stain.hed_shift
        )
        darkness.append(float(1 - out.mean(0)[nuclei].mean()))
    base = float(1 - image.mean(0)[nuclei].mean())
    assert min(darkness) < 0.9 * base and max(darkness) > 1.05 * base
    white = torch.ones(3, 8, 8)
    faded = colour_jitter(np.random.default_rng(0), white, 0.25, 0, 0, 0, hed_shift=0.03)
    assert faded.min() > 0.85  # glass: a shift of 0.03 OD at most per stain
