"""Measuring nuclei teachers against instance ground truth, one row per source.

A ground-truth folder holds sources (sub-folders, or the folder itself) of images ``X.tif|png``
beside ``X_label.tif`` instance maps. The resolution of each image comes from a ``manifest.csv``
(column ``mpp``) in the folder or one of its two parents, or from an explicit ``mpp``.
Sources without any label map (e.g. semantic-only sets) are skipped.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.metrics.nuclei import aggregated_jaccard_index, panoptic_quality, pixel_dice

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
LABEL_SUFFIX = "_label.tif"


@dataclass(frozen=True)
class GroundTruthImage:
    source: str
    image_path: Path
    label_path: Path
    mpp: float

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """The RGB uint8 image (alpha dropped) and its instance map."""
        return read_rgb(self.image_path), read_labels(self.label_path)


def read_rgb(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise RckdError(
            f"{path} is not an RGB(A) 8-bit image (shape {image.shape}, {image.dtype}); "
            "ground-truth images must be H&E RGB"
        )
    return np.ascontiguousarray(image[..., :3])


def read_labels(path: Path) -> np.ndarray:
    import tifffile

    labels = tifffile.imread(path)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise RckdError(
            f"{path} is not a 2-D integer instance map (shape {labels.shape}, {labels.dtype})"
        )
    return labels.astype(np.int32)


def manifest_mpps(folder: Path) -> dict[Path, float]:
    """mpp per file from the nearest manifest.csv (paths in it are relative to the manifest)."""
    for candidate in (folder, *list(folder.parents)[:2]):
        manifest = candidate / "manifest.csv"
        if manifest.is_file():
            mpps = {}
            with manifest.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    value = (row.get("mpp") or "").strip().lstrip("~")
                    if row.get("path") and value:
                        mpps[(candidate / row["path"]).resolve()] = float(value)
            return mpps
    return {}


def _source_images(folder: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for label_path in sorted(folder.glob(f"*{LABEL_SUFFIX}")):
        stem = label_path.name[: -len(LABEL_SUFFIX)]
        images = [
            folder / f"{stem}{s}" for s in IMAGE_SUFFIXES if (folder / f"{stem}{s}").is_file()
        ]
        if not images:
            raise RckdError(f"{label_path} has no image beside it ({stem}.tif or {stem}.png)")
        pairs.append((images[0], label_path))
    return pairs


def find_ground_truth(data_dir: str | Path, mpp: float | None = None) -> list[GroundTruthImage]:
    """Every labelled image under ``data_dir`` with its source name and mpp."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise RckdError(f"nuclei ground-truth folder {data_dir} does not exist; pass --data DIR")
    folders = [data_dir, *sorted(p for p in data_dir.iterdir() if p.is_dir())]
    mpps = manifest_mpps(data_dir.resolve())
    found = []
    for folder in folders:
        pairs = _source_images(folder)
        if not pairs:
            if folder != data_dir:
                log.info("skipping %s: no *%s instance maps", folder.name, LABEL_SUFFIX)
            continue
        for image_path, label_path in pairs:
            image_mpp = mpp if mpp is not None else mpps.get(image_path.resolve())
            if image_mpp is None:
                raise RckdError(
                    f"the resolution of {image_path} is unknown; give it an mpp in manifest.csv "
                    "or pass --mpp"
                )
            found.append(GroundTruthImage(folder.name, image_path, label_path, image_mpp))
    if not found:
        raise RckdError(
            f"no ground truth in {data_dir}: expected images X.tif|png beside X{LABEL_SUFFIX}"
        )
    return found


def score(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pixel Dice, AJI and PQ of one predicted instance map."""
    return {
        "dice": pixel_dice(truth, labels),
        "aji": aggregated_jaccard_index(truth, labels),
        "pq": panoptic_quality(truth, labels).pq,
    }


def evaluate_teacher(
    teacher,
    images: Iterable[GroundTruthImage],
    per_image: list[dict] | None = None,
    track: Callable[[Iterable, int], Iterable] | None = None,
) -> list[dict]:
    """One row per source: mean and per-image minimum of Dice, AJI and PQ, and the speed.

    ``tiles_s`` counts 256² tiles of input per second of ``predict`` (resampling included),
    so teachers working at different resolutions compare on what a user feeds them. When
    ``per_image`` is a list, every image's scores are appended to it. ``track(images, count)``
    may wrap the images (a progress bar).
    """
    import time

    per_source: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    pixels: dict[str, int] = {}
    images = list(images)
    for item in images if track is None else track(images, len(images)):
        image, truth = item.load()
        start = time.perf_counter()
        output = teacher.predict(image, item.mpp)
        seconds[item.source] = seconds.get(item.source, 0.0) + time.perf_counter() - start
        pixels[item.source] = pixels.get(item.source, 0) + image.shape[0] * image.shape[1]
        scores = score(truth, output.labels)
        log.debug("%s %s %s", teacher.name, item.image_path.name, scores)
        per_source.setdefault(item.source, []).append(scores)
        if per_image is not None:
            per_image.append(
                {"teacher": teacher.name, "source": item.source, "image": item.image_path.name}
                | scores
            )
    rows = []
    for source, scores in per_source.items():
        row = {"teacher": teacher.name, "source": source, "images": len(scores)}
        for key in ("dice", "aji", "pq"):
            values = [s[key] for s in scores]
            row[key] = float(np.mean(values))
            row[f"{key}_min"] = float(np.min(values))
        row["tiles_s"] = pixels[source] / 256**2 / max(seconds[source], 1e-9)
        rows.append(row)
    return rows
