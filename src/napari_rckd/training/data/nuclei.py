"""Supervised nuclei data for training a teacher: ground-truth images resampled to one mpp.

A folder holds sources (sub-folders) of H&E images ``X.tif|png`` with either an instance map
``X_label.tif`` (nuclear foreground and boundaries are both known) or a binary mask
``X_mask.png`` (foreground only: the boundary target is masked out of the loss). Every image is
resampled once to the model's mpp, so 20x and 40x sources teach the same physical scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_rckd.errors import RckdError
from napari_rckd.teachers.evaluation import IMAGE_SUFFIXES, LABEL_SUFFIX, manifest_mpps, read_rgb
from napari_rckd.training.data.augment import Augment, item_rng
from napari_rckd.training.data.labelled import to_tensor

log = logging.getLogger(__name__)

MASK_SUFFIX = "_mask.png"


@dataclass(frozen=True)
class NucleiImage:
    source: str
    image_path: Path
    target_path: Path  # an instance map (``_label.tif``) or a binary mask (``_mask.png``)
    mpp: float

    @property
    def has_instances(self) -> bool:
        return self.target_path.name.endswith(LABEL_SUFFIX)


def find_nuclei_images(data_dir: str | Path, holdout: Sequence[str] = ()) -> list[NucleiImage]:
    """Every labelled image below ``data_dir`` whose source does not start with a ``holdout``.

    A holdout is a prefix, so ``monuseg`` leaves out ``monuseg-train`` and
    ``monuseg-train-semantic`` alike: images of one cohort never sit on both sides.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise RckdError(f"nuclei training folder {data_dir} does not exist; pass --data DIR")
    mpps = manifest_mpps(data_dir.resolve())
    found = []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        if any(folder.name.startswith(prefix) for prefix in holdout):
            continue
        for target in sorted([*folder.glob(f"*{LABEL_SUFFIX}"), *folder.glob(f"*{MASK_SUFFIX}")]):
            suffix = LABEL_SUFFIX if target.name.endswith(LABEL_SUFFIX) else MASK_SUFFIX
            stem = target.name[: -len(suffix)]
            images = [
                folder / f"{stem}{s}" for s in IMAGE_SUFFIXES if (folder / f"{stem}{s}").is_file()
            ]
            if not images:
                raise RckdError(f"{target} has no image beside it ({stem}.tif or {stem}.png)")
            mpp = mpps.get(images[0].resolve())
            if mpp is None:
                raise RckdError(
                    f"the resolution of {images[0]} is unknown; give it an mpp in manifest.csv"
                )
            found.append(NucleiImage(folder.name, images[0], target, mpp))
    if not found:
        raise RckdError(
            f"no labelled nuclei images in {data_dir}: expected sub-folders of X.tif|png beside "
            f"X{LABEL_SUFFIX} or X{MASK_SUFFIX}"
        )
    return found


def resampled_targets(item: NucleiImage, mpp: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """(RGB uint8, instance or 0/1 map int32, has_instances) at ``mpp``."""
    import tifffile
    from skimage.transform import resize

    from napari_rckd.teachers.base import resize_image

    image = read_rgb(item.image_path)
    if item.has_instances:
        target = tifffile.imread(item.target_path).astype(np.int32)
    else:
        import imageio.v3 as iio

        target = (np.asarray(iio.imread(item.target_path)) > 0).astype(np.int32)
        target = target[..., 0] if target.ndim == 3 else target
    if target.shape != image.shape[:2]:
        raise RckdError(
            f"{item.target_path} is {target.shape} but its image is {image.shape[:2]}; "
            "a label map must match its image pixel for pixel"
        )
    scale = item.mpp / mpp
    if abs(scale - 1) > 0.02:
        shape = (round(image.shape[0] * scale), round(image.shape[1] * scale))
        image = resize_image(image, shape)
        target = resize(target, shape, order=0, preserve_range=True, anti_aliasing=False)
        target = target.astype(np.int32)
    return image, target, item.has_instances


def target_channels(target: np.ndarray, has_instances: bool) -> tuple[np.ndarray, np.ndarray]:
    """Targets (nuclei, boundary) and their loss masks, each 2×H×W float32.

    The boundary is every nucleus's inner contour: where two nuclei touch the two contours
    separate them. A binary mask knows no contours, so its boundary weight is zero.
    """
    from skimage.segmentation import find_boundaries

    nuclei = (target > 0).astype(np.float32)
    if has_instances:
        boundary = find_boundaries(target, mode="inner").astype(np.float32)
        known = np.ones_like(nuclei)
    else:
        boundary, known = np.zeros_like(nuclei), np.zeros_like(nuclei)
    return np.stack([nuclei, boundary]), np.stack([np.ones_like(nuclei), known])


class NucleiCropDataset(Dataset):
    """Random ``size``-px crops of labelled nuclei images at ``mpp``, ``count`` per epoch.

    Images are drawn in proportion to their area, so a 1000² MoNuSeg image counts for more
    than a 400² CPM-15 crop. With ``augment=None`` the crops are fixed by ``seed``
    (validation). Items: ``image`` 3×H×W, ``target`` and ``mask`` 2×H×W (nuclei, boundary).
    """

    def __init__(
        self,
        images: Sequence[NucleiImage],
        size: int = 256,
        mpp: float = 0.5,
        count: int = 1000,
        seed: int = 0,
        augment: Augment | None = None,
    ):
        if not images:
            raise RckdError("no nuclei images to train on")
        self.size, self.count, self.seed, self.augment = size, count, seed, augment
        self.data = []
        for item in images:
            image, target, has_instances = resampled_targets(item, mpp)
            pad = [(0, max(0, size - image.shape[0])), (0, max(0, size - image.shape[1]))]
            if any(p for _, p in pad):  # small crops: reflect the image, mask the padding
                image = np.pad(image, [*pad, (0, 0)], mode="reflect")
                targets, masks = target_channels(np.pad(target, pad), has_instances)
                masks[:, image.shape[0] - pad[0][1] :, :] = 0
                masks[:, :, image.shape[1] - pad[1][1] :] = 0
            else:
                targets, masks = target_channels(target, has_instances)
            self.data.append((image, targets, masks))
        self._weigh()
        log.info("%d nuclei images at %g µm/px", len(self.data), mpp)

    @classmethod
    def from_targets(
        cls, data: Sequence[tuple], size: int, count: int, seed: int = 0, augment=None
    ) -> NucleiCropDataset:
        """Crops of images whose targets are already made: ``data`` holds (RGB H×W×3 uint8,
        targets 2×H×W float32, masks 2×H×W float32) at least ``size`` px a side (e.g. a
        model's soft answers, for replay)."""
        if not data:
            raise RckdError("no nuclei images to train on")
        dataset = cls.__new__(cls)
        dataset.size, dataset.count, dataset.seed, dataset.augment = size, count, seed, augment
        dataset.data = list(data)
        dataset._weigh()
        return dataset

    def _weigh(self) -> None:
        areas = np.array([d[0].shape[0] * d[0].shape[1] for d in self.data], float)
        self.weights = areas / areas.sum()

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = item_rng() if self.augment is not None else np.random.default_rng([self.seed, index])
        which = int(rng.choice(len(self.data), p=self.weights))
        image, targets, masks = self.data[which]
        top = int(rng.integers(image.shape[0] - self.size + 1))
        left = int(rng.integers(image.shape[1] - self.size + 1))
        window = np.s_[top : top + self.size, left : left + self.size]
        rgb = to_tensor(np.ascontiguousarray(image[window]))
        target = torch.from_numpy(np.ascontiguousarray(targets[(slice(None), *window)]))
        mask = torch.from_numpy(np.ascontiguousarray(masks[(slice(None), *window)]))
        if self.augment is not None:
            rgb, target, mask = self.augment(rng, rgb, target, mask)
        return {"image": rgb, "target": target, "mask": mask}
