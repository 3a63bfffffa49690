"""Augmentation in torch: geometry shared by image and targets, colour on the image only.

The teacher saw the original colours, so its response is the right target for any stain
variation of the input: colour jitter teaches the student stain invariance for free.
Geometry must move image and target together. Randomness comes from a numpy Generator
passed in, so a dataset item is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# skimage's H&E(+DAB) stain vectors (Ruifrok & Johnston), rows = stains in optical density
_RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_OD_FLOOR = 1e-3  # avoids log(0) on pure black pixels
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def item_rng() -> np.random.Generator:
    """A generator drawn from torch's RNG, which DataLoader seeds per worker and per epoch."""
    return np.random.default_rng(int(torch.randint(2**62, ())))


@dataclass
class Augment:
    """Random flips, 90° rotations and an optional zoom-in up to ``1 + scale`` on every
    tensor; HED, brightness, contrast and saturation jitter on the image only (``hed`` scales
    each stain's density by up to ±hed, ``hed_shift`` shifts it, None: by up to ±hed)."""

    flips: bool = True
    rotations: bool = True
    scale: float = 0.0
    hed: float = 0.03
    hed_shift: float | None = None
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1

    @classmethod
    def strong(cls) -> Augment:
        """The jitter teachers and nuclei fine-tunes train with: zoom-in up to 1.2x and about 1.5x
        the default colour jitter, for models that must hold on stains and scales they never saw."""
        return cls(scale=0.2, hed=0.05, brightness=0.15, contrast=0.15, saturation=0.15)

    @classmethod
    def stain(cls) -> Augment:
        """Each stain's density scaled by up to ±25 % (a small shift, no zoom): a student whose
        teacher answered on the original colours learns that faint and dark nuclei are nuclei.
        Strong HED jitter generalised best across centres in Tellez et al. 2019 (Med. Image
        Anal. 58:101544)."""
        return cls(hed=0.25, hed_shift=0.03)

    def __call__(
        self, rng: np.random.Generator, image: torch.Tensor, *others: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``image`` 3×H×W float in [0, 1]; ``others`` C×H×W float or H×W int (nearest)."""
        tensors = geometric(rng, (image, *others), self.flips, self.rotations, self.scale)
        image = colour_jitter(
            rng, tensors[0], self.hed, self.brightness, self.contrast, self.saturation,
            self.hed_shift,
        )  # fmt: skip
        return (image, *tensors[1:])


def geometric(
    rng: np.random.Generator,
    tensors: tuple[torch.Tensor, ...],
    flips: bool = True,
    rotations: bool = True,
    scale: float = 0.0,
) -> tuple[torch.Tensor, ...]:
    """The same random flip, rotation and zoom applied to every tensor (last two dims = H, W)."""
    turns = int(rng.integers(4)) if rotations else 0
    flip = bool(rng.random() < 0.5) if flips else False
    zoom = math.exp(float(rng.uniform(0, math.log1p(scale)))) if scale > 0 else 1.0
    corner = rng.random(2).tolist()
    out = []
    for tensor in tensors:
        if zoom > 1.0:
            tensor = _zoom(tensor, zoom, corner)
        if turns:
            tensor = torch.rot90(tensor, turns, dims=(-2, -1))
        if flip:
            tensor = torch.flip(tensor, dims=(-1,))
        out.append(tensor)
    return tuple(out)


def _zoom(tensor: torch.Tensor, zoom: float, corner: list[float]) -> torch.Tensor:
    """Enlarge by ``zoom`` and crop back to the original size at a random (shared) place."""
    height, width = tensor.shape[-2:]
    big = (round(height * zoom), round(width * zoom))
    integer = not tensor.is_floating_point()
    batch = tensor.reshape(1, -1, height, width)
    if integer:  # labels: nearest, never invent in-between classes
        batch = F.interpolate(batch.float(), size=big, mode="nearest").to(tensor.dtype)
    else:
        batch = F.interpolate(batch, size=big, mode="bilinear", align_corners=False)
    top = int(corner[0] * (big[0] - height))
    left = int(corner[1] * (big[1] - width))
    crop = batch[..., top : top + height, left : left + width]
    return crop.reshape(*tensor.shape[:-2], height, width)


def colour_jitter(
    rng: np.random.Generator,
    image: torch.Tensor,
    hed: float = 0.03,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    hed_shift: float | None = None,
) -> torch.Tensor:
    """Stain (HED: densities scaled by up to ±``hed`` and shifted by up to ±``hed_shift``,
    None: ``hed``) then brightness, contrast and saturation jitter of a 3×H×W image in [0, 1]."""
    if hed > 0:
        shift = hed if hed_shift is None else hed_shift
        alpha = torch.from_numpy(rng.uniform(1 - hed, 1 + hed, (3, 1))).float()
        beta = torch.from_numpy(rng.uniform(-shift, shift, (3, 1))).float()
        od = -torch.log(image.clamp_min(_OD_FLOOR)).reshape(3, -1)  # (3, H*W)
        stains = _HED_FROM_RGB.T @ od  # (3 stains, H*W)
        od = _RGB_FROM_HED.T @ (stains * alpha + beta)
        image = torch.exp(-od).reshape(image.shape)
    if brightness > 0:
        image = image * float(rng.uniform(1 - brightness, 1 + brightness))
    if contrast > 0:
        mean = image.mean()
        image = (image - mean) * float(rng.uniform(1 - contrast, 1 + contrast)) + mean
    if saturation > 0:
        grey = (image * _LUMA).sum(0, keepdim=True)
        image = (image - grey) * float(rng.uniform(1 - saturation, 1 + saturation)) + grey
    return image.clamp(0, 1).contiguous()
