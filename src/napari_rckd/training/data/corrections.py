"""The crops a nuclei fine-tune learns from (`training.nuclei_finetune`): the corrected regions
of nuclei folders, split by region, mixed with *replay* (the starting model's answers on the
context crops and slides of the corrections, and any labelled or unlabelled ``replay`` folder)
so that the model does not forget what it knew."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.training.run_notes import tell

log = logging.getLogger(__name__)


def find_corrections(folders: Sequence[str | os.PathLike]) -> tuple[list, list]:
    """Every corrected (labelled) image of ``folders`` as `GroundTruthImage`, each checked
    (empty, sizes, mpp, integer labels), and the unlabelled context crops beside them."""
    from napari_rckd.io.corrections import CONTEXT, read_pair
    from napari_rckd.teachers.evaluation import find_ground_truth, manifest_mpps

    if not folders:
        raise RckdError("give at least one corrections folder (a nuclei folder) to learn from")
    images, context = [], []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise RckdError(
                f"corrections folder {folder} does not exist; give the slide's .corrections "
                "folder or a folder of X.tif beside X_label.tif"
            )
        found = find_ground_truth(folder)
        for item in found:
            read_pair(item.image_path, item.label_path, item.mpp)  # refuses a bad one, named
        images += found
        if (folder / CONTEXT).is_dir():
            mpps = manifest_mpps(folder.resolve())
            for path in sorted((folder / CONTEXT).glob("*.tif")):
                if mpps.get(path.resolve()):
                    context.append((path, mpps[path.resolve()]))
    names = [str(i.image_path.resolve()) for i in images]
    if len(set(names)) < len(names):
        raise RckdError("a corrections folder was given twice; give each once")
    return images, context


def split_regions(count: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, held-out) region indices: ``round(count × share)`` whole regions held out,
    at least one left to train on; none held out from fewer than two."""
    if not 0 <= share < 1:
        raise RckdError(f"--holdout share must be at least 0 and below 1, got {share}")
    held = min(count - 1, int(round(count * share))) if count >= 2 else 0
    order = np.random.default_rng(seed).permutation(count)
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def sidecar_slides(folders: Sequence[Path], slide_mpp: float | None = None) -> list[Path]:
    """The slides the corrections sidecars among ``folders`` were made from, when present and
    readable with a pixel size (one that is not is left out of the replay, and the run says so)."""
    from napari_rckd.io import open_slide
    from napari_rckd.io.corrections import RECORD_FILE

    slides = []
    for folder in map(Path, folders):
        record = folder / RECORD_FILE
        if record.is_file():
            name = json.loads(record.read_text(encoding="utf-8")).get("slide")
            path = folder.parent / name if name else None
            if path is None or not path.is_file():
                continue
            try:
                with open_slide(path, mpp=slide_mpp) as slide:
                    if slide.mpp is None:
                        raise RckdError("it does not record its pixel size (give --slide-mpp)")
            except Exception as error:  # the corrections still train; the replay is smaller
                tell(f"replay: left out slide {path.name}, which cannot be used ({error})")
                continue
            slides.append(path)
    return slides


def training_data(
    images,
    context,
    replay,
    slides,
    teacher,
    replay_share,
    crops: dict,
    count: int,
    cache_dir: Path,
    slide_mpp=None,
) -> tuple:
    """(dataset, replay share used, what the replay holds): ``count`` augmented crops of the
    corrected ``images``, about ``replay_share`` of them replaced by replay."""
    from napari_rckd.training.data.augment import Augment
    from napari_rckd.training.data.mixed import MixedDataset
    from napari_rckd.training.data.nuclei import NucleiCropDataset

    augment = Augment.strong()
    crops = dict(crops, augment=augment)
    train = NucleiCropDataset(
        _as_nuclei_images(images), crops["size"], crops["mpp"], count, crops["seed"], augment
    )
    if replay_share == 0:
        return train, 0.0, "none (--replay 0)"
    replay_data, note = _replay(replay, context, slides, teacher, crops, cache_dir, slide_mpp)
    if replay_data is None:
        return train, 0.0, note
    return MixedDataset(train, replay_data, replay_share, crops["seed"]), replay_share, note


def _as_nuclei_images(images) -> list:
    from napari_rckd.training.data.nuclei import NucleiImage

    return [NucleiImage(i.source, i.image_path, i.label_path, i.mpp) for i in images]


def _replay(replay, context, slides, teacher, crops: dict, cache_dir: Path, slide_mpp):
    """The replay dataset (or None) and a sentence saying what it holds."""
    from torch.utils.data import ConcatDataset

    from napari_rckd.teachers.evaluation import find_ground_truth
    from napari_rckd.training.data.nuclei import NucleiCropDataset

    parts, said = [], []
    labelled, unlabelled = [], list(slides)
    for path in map(Path, replay):
        if not path.exists():
            raise RckdError(
                f"replay {path} does not exist; give a nuclei folder, a slide or a folder of slides"
            )
        try:
            labelled += find_ground_truth(path) if path.is_dir() else []
        except RckdError:  # no instance maps: unlabelled tissue the starting model answers
            unlabelled.append(path)
        else:
            if not path.is_dir():
                unlabelled.append(path)
    if labelled:
        count = crops["count"] * 4
        parts.append(NucleiCropDataset(
            _as_nuclei_images(labelled), crops["size"], crops["mpp"], count, crops["seed"] + 2,
            crops["augment"],
        ))  # fmt: skip
        said.append(f"ground truth of {len(labelled)} labelled images")
    if context:
        parts.append(_answered_crops(context, teacher, crops))
        said.append(f"the starting model's answers on the {len(context)} context crops")
    if unlabelled:
        parts.append(_slide_tiles(unlabelled, teacher, crops, cache_dir, slide_mpp))
        said.append(
            f"its answers on {crops['count']} tissue tiles of "
            + ", ".join(p.name for p in unlabelled)
        )
    if not parts:
        return (
            None,
            "none (no context crops, slides or labelled sources given or found): corrections alone",
        )
    return ConcatDataset(parts), "; ".join(said)


def _answered_crops(context, teacher, crops: dict):
    """The starting model's soft answers (nuclear probability, contours) on context crops."""
    from skimage.segmentation import find_boundaries

    from napari_rckd.teachers.base import resize_image
    from napari_rckd.teachers.evaluation import read_rgb
    from napari_rckd.training.data.nuclei import NucleiCropDataset

    data, size = [], crops["size"]
    for path, mpp in context:
        image = read_rgb(path)
        scale = mpp / crops["mpp"]
        if abs(scale - 1) > 0.02:
            image = resize_image(
                image, (round(image.shape[0] * scale), round(image.shape[1] * scale))
            )
        output = teacher.predict(image, crops["mpp"])
        targets = np.stack([output.prob, find_boundaries(output.labels, mode="inner")]).astype(
            np.float32
        )
        masks = np.ones_like(targets)
        pad = [(0, max(0, size - image.shape[0])), (0, max(0, size - image.shape[1]))]
        if any(p for _, p in pad):
            image = np.pad(image, [*pad, (0, 0)], mode="reflect")
            targets = np.pad(targets, [(0, 0), *pad])
            masks = np.pad(masks, [(0, 0), *pad])
        data.append((image, targets, masks))
    return NucleiCropDataset.from_targets(
        data, size, crops["count"], crops["seed"] + 3, crops["augment"]
    )


def _slide_tiles(paths, teacher, crops: dict, cache_dir: Path, slide_mpp):
    from napari_rckd.io import find_slides
    from napari_rckd.training.data.sampling import SlidePool
    from napari_rckd.training.data.stage1 import TissueTileDataset
    from napari_rckd.training.recipes.common import check_slides_have_mpp, fill_cache

    slides = find_slides(paths)
    check_slides_have_mpp(slides, slide_mpp)
    tiles = TissueTileDataset(
        SlidePool(slides, slide_mpp), teacher, cache_dir, count=crops["count"],
        size=crops["size"], mpp=crops["mpp"], seed=crops["seed"] + 4, augment=crops["augment"],
        boundaries=True,
    )  # fmt: skip
    fill_cache([tiles])
    return tiles
