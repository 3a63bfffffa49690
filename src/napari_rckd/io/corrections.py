"""Nuclei corrections beside a slide: the sidecar folder a user's fixes are saved into.

A corrected region is an image crop at the nuclei model's resolution with the instance map
the user made from the model's answer. The sidecar ``<slide>.corrections/`` is a *nuclei
folder*, the format ``train-teacher``, ``evaluate nuclei`` and ``finetune --task nuclei`` read::

    CMU-1.svs.corrections/
      manifest.csv                      path,mpp of every crop (relative to this folder)
      corrections.json                  the slide, its hash and one record per region
      cmu-1/region-0001.tif             RGB crop at the model's µm/px
      cmu-1/region-0001_label.tif       the corrected instance map (uint16/uint32, 0 = background)
      answers/region-0001_model.tif     the model's answer the user started from
      context/region-0001.tif           unlabelled tissue around the region (replay, optional)

A region's record holds its bounds in level-0 pixels of the slide, the µm/px of its crop, the
model that answered, what the user changed against that answer (nuclei ``added``, ``removed``,
``edited``, ``kept``) and the sha256 prefixes of its files. Every file is written atomically;
a new region always gets a new id (never reused, even after a region's files are deleted),
so earlier corrections are never overwritten; `CorrectionsFolder.save` with ``region=`` updates
one region the user reopened. Qt-free and torch-free.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_rckd.atomic import atomic_open, atomic_path, write_json_atomic
from napari_rckd.errors import RckdError
from napari_rckd.files import sha256_prefix

SIDECAR_SUFFIX = ".corrections"
RECORD_FILE = "corrections.json"
MANIFEST_FILE = "manifest.csv"
FORMAT = "napari-rckd-corrections"
FORMAT_VERSION = 1
LABEL_SUFFIX = "_label.tif"  # as teachers.evaluation and training.data.nuclei read them
ANSWERS = "answers"
CONTEXT = "context"
MATCH_IOU = 0.5  # a corrected nucleus is the model's nucleus when they overlap by more


@dataclass
class Changes:
    """What a corrected instance map changed against the model's answer."""

    model: int = 0  # nuclei in the model's answer
    corrected: int = 0  # nuclei after correction
    added: int = 0  # corrected nuclei no model nucleus matches (IoU > 0.5)
    removed: int = 0  # model nuclei no corrected nucleus matches
    edited: int = 0  # matched, but their pixels differ
    kept: int = 0  # matched and identical

    def text(self) -> str:
        return (
            f"+{self.added} added, −{self.removed} removed, {self.edited} edited, "
            f"{self.kept} kept ({self.model} → {self.corrected} nuclei)"
        )


@dataclass
class Region:
    """One saved region (a record of ``corrections.json``)."""

    id: int
    bounds: dict  # y, x, height, width in level-0 pixels of the slide
    mpp: float  # µm per pixel of the saved crop
    model: str  # identity of the nuclei model that answered
    changes: Changes
    image: str  # paths relative to the sidecar folder
    labels: str
    answer: str | None = None
    context: str | None = None
    context_bounds: dict | None = None
    hashes: dict = field(default_factory=dict)
    created: str = ""
    updated: str = ""

    @property
    def name(self) -> str:
        return region_name(self.id)

    def summary(self) -> str:
        b = self.bounds
        return (
            f"{self.name}: {b['width']}×{b['height']} px at ({b['x']}, {b['y']}), "
            f"{self.changes.text()}"
        )

    @classmethod
    def from_dict(cls, data: dict) -> Region:
        data = dict(data)
        data["changes"] = Changes(**data.get("changes", {}))
        return cls(**data)


def region_name(region_id: int) -> str:
    return f"region-{region_id:04d}"


def sidecar_for(slide_path: str | Path) -> Path:
    """The corrections folder beside ``slide_path`` (``X.svs`` -> ``X.svs.corrections``)."""
    slide_path = Path(slide_path)
    return slide_path.with_name(slide_path.name + SIDECAR_SUFFIX)


def source_name(slide_path: str | Path) -> str:
    """The sub-folder (a nuclei *source*) the crops of a slide go into: its stem, plain."""
    stem = Path(slide_path).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-").lower() or "slide"


def slide_fingerprint(path: str | Path) -> str:
    """A cheap identity of a (possibly many-GB) slide file: sha256 of its size and first and
    last 4 MiB, 16 hex digits. Enough to tell a slide from another or from a re-export."""
    import hashlib

    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(4 << 20))
        if size > 8 << 20:
            handle.seek(size - (4 << 20))
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def count_changes(model: np.ndarray, corrected: np.ndarray) -> Changes:
    """Match nuclei one to one by IoU > 0.5 and count what the user changed."""
    from napari_rckd.metrics.nuclei import overlaps

    table = overlaps(model, corrected)
    iou = table.iou
    matched = iou > MATCH_IOU  # at most one partner per nucleus: IoU > 0.5 is unique
    pairs = np.argwhere(matched)
    identical = sum(
        1 for i, j in pairs if table.intersection[i, j] == table.true_area[i] == table.pred_area[j]
    )
    n_model, n_corrected = iou.shape
    return Changes(
        model=n_model,
        corrected=n_corrected,
        added=int(n_corrected - matched.any(0).sum()),
        removed=int(n_model - matched.any(1).sum()),
        edited=int(len(pairs) - identical),
        kept=int(identical),
    )


# -- checks ---------------------------------------------------------------------------------


def check_pair(image: np.ndarray, labels: np.ndarray, name: str | Path) -> np.ndarray:
    """The labels as int32 if ``image`` (RGB) and ``labels`` make a usable correction;
    otherwise one RckdError sentence naming ``name``."""
    image, labels = np.asarray(image), np.asarray(labels)
    if image.size == 0 or labels.size == 0:
        raise RckdError(f"{name} is empty (an image of no pixels); draw a region and save again")
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise RckdError(
            f"{name} is not an RGB 8-bit image (shape {image.shape}, {image.dtype}); "
            "corrections need the H&E crop they label"
        )
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise RckdError(
            f"{name}: the labels are {labels.dtype}, not integers; save an instance map "
            "(0 = background, one whole number per nucleus)"
        )
    if labels.shape != image.shape[:2]:
        raise RckdError(
            f"{name}: the labels are {labels.shape[0]}×{labels.shape[1]} px but the image is "
            f"{image.shape[0]}×{image.shape[1]}; a label map must match its image pixel for pixel"
        )
    if labels.min() < 0:
        raise RckdError(f"{name}: the labels hold negative ids; use 0 for background, ids > 0")
    return labels.astype(np.int32)


def check_mpp(mpp, name: str | Path) -> float:
    if mpp is None or not np.isfinite(float(mpp)) or float(mpp) <= 0:
        raise RckdError(
            f"{name} has no µm per pixel; give it one (a manifest.csv row path,mpp beside it)"
        )
    return float(mpp)


def read_pair(image_path: Path, label_path: Path, mpp) -> tuple[np.ndarray, np.ndarray]:
    """A nuclei-folder image and its instance map, checked (any of the refusals above)."""
    import imageio.v3 as iio
    import tifffile

    check_mpp(mpp, image_path)
    for path in (image_path, label_path):
        if not path.is_file() or path.stat().st_size == 0:
            raise RckdError(f"{path} is empty or missing; save the region again or remove it")
    try:
        image = np.asarray(iio.imread(image_path))
        labels = tifffile.imread(label_path)
    except Exception as error:  # a corrupt file is reported, not skipped
        raise RckdError(f"{image_path} or its labels cannot be read ({error})") from None
    labels = check_pair(image, labels, label_path)
    return np.ascontiguousarray(image[..., :3]), labels


# -- the folder -----------------------------------------------------------------------------


class CorrectionsFolder:
    """The corrections saved for one slide (created on the first save).

    ``slide_path`` names the slide (its hash and source name are recorded); ``folder``
    defaults to its sidecar.
    """

    def __init__(self, slide_path: str | Path, folder: str | Path | None = None):
        self.slide_path = Path(slide_path)
        self.folder = Path(folder) if folder is not None else sidecar_for(self.slide_path)
        self.source = source_name(self.slide_path)

    # reading
    def record(self) -> dict:
        path = self.folder / RECORD_FILE
        if not path.is_file():
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "regions": [],
                    "next_id": 1}  # fmt: skip
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise RckdError(f"{path} cannot be read ({error}); restore it from a backup") from None
        if data.get("format") != FORMAT:
            raise RckdError(f"{path} is not a napari-rckd corrections record")
        return data

    def regions(self) -> list[Region]:
        """Every saved region, oldest first."""
        return [Region.from_dict(r) for r in self.record()["regions"]]

    def region(self, region_id: int) -> Region:
        for region in self.regions():
            if region.id == int(region_id):
                return region
        raise RckdError(f"{self.folder} has no {region_name(int(region_id))}")

    def load(self, region_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Region]:
        """(image, corrected labels, the model's answer or None, record) of a saved region."""
        import tifffile

        region = self.region(region_id)
        image, labels = read_pair(
            self.folder / region.image, self.folder / region.labels, region.mpp
        )
        answer = None
        if region.answer and (self.folder / region.answer).is_file():
            answer = tifffile.imread(self.folder / region.answer).astype(np.int32)
        return image, labels, answer, region

    # writing
    def save(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        mpp: float,
        *,
        bounds: dict,
        model: str,
        answer: np.ndarray | None = None,
        context: np.ndarray | None = None,
        context_bounds: dict | None = None,
        region: int | None = None,
    ) -> Region:
        """Write a region (a new id, or ``region`` to update one that was reopened).

        ``answer`` is the model's instance map the user started from (the changes are
        counted against it); ``context`` an unlabelled crop around the region at ``mpp``.
        """
        name = f"region {region_name(region)}" if region is not None else "the new region"
        labels = check_pair(image, labels, name)
        mpp = check_mpp(mpp, name)
        image = np.ascontiguousarray(np.asarray(image)[..., :3])
        if answer is not None:
            answer = check_pair(image, answer, f"the model's answer for {name}")
        if not self.slide_path.is_file() and not (self.folder / RECORD_FILE).is_file():
            raise RckdError(f"slide {self.slide_path} does not exist; corrections go beside it")
        record = self.record()
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        old = None
        if region is None:
            region_id = int(record.get("next_id", 1))
            record["next_id"] = region_id + 1
        else:
            region_id = int(region)
            old = self.region(region_id)
        stem = region_name(region_id)
        files = {
            "image": f"{self.source}/{stem}.tif",
            "labels": f"{self.source}/{stem}{LABEL_SUFFIX}",
        }
        if old is not None:
            files = {"image": old.image, "labels": old.labels}
        _write_tif(self.folder / files["image"], image, rgb=True)
        _write_tif(self.folder / files["labels"], _compact(labels))
        if answer is None and old is not None and old.answer:
            import tifffile

            answer = tifffile.imread(self.folder / old.answer).astype(np.int32)
        if answer is not None:
            files["answer"] = f"{ANSWERS}/{stem}_model.tif"
            _write_tif(self.folder / files["answer"], _compact(answer))
        if context is not None:
            files["context"] = f"{CONTEXT}/{stem}.tif"
            _write_tif(
                self.folder / files["context"], np.ascontiguousarray(context[..., :3]), rgb=True
            )
        elif old is not None and old.context:
            files["context"] = old.context
            context_bounds = old.context_bounds
        changes = count_changes(answer, labels) if answer is not None else Changes(
            corrected=int(len(np.unique(labels[labels > 0])))
        )  # fmt: skip
        entry = Region(
            id=region_id,
            bounds={k: int(bounds[k]) for k in ("y", "x", "height", "width")},
            mpp=mpp,
            model=str(model),
            changes=changes,
            context_bounds=context_bounds,
            hashes={k: sha256_prefix(self.folder / v) for k, v in files.items()},
            created=old.created if old is not None else now,
            updated=now,
            **files,
        )
        regions = [r for r in record["regions"] if int(r["id"]) != region_id]
        regions.append(asdict(entry))
        record["regions"] = sorted(regions, key=lambda r: int(r["id"]))
        record["slide"] = self.slide_path.name
        if self.slide_path.is_file():
            record["slide_sha256_16"] = slide_fingerprint(self.slide_path)
        record["source"] = self.source
        self._write_manifest(record)
        write_json_atomic(self.folder / RECORD_FILE, record)
        return entry

    def _write_manifest(self, record: dict) -> None:
        """manifest.csv: path,mpp of every crop, read by every nuclei-folder command."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path", "mpp", "kind", "note"])
        for r in record["regions"]:
            writer.writerow([r["image"], f"{r['mpp']:g}", "corrected", r["model"]])
            if r.get("context"):
                writer.writerow([r["context"], f"{r['mpp']:g}", "context", "unlabelled"])
        with atomic_open(self.folder / MANIFEST_FILE, "w", encoding="utf-8") as handle:
            handle.write(text.getvalue())


def _compact(labels: np.ndarray) -> np.ndarray:
    """uint16 when the ids fit (the shared nuclei sets' type), uint32 otherwise."""
    return labels.astype(np.uint16 if int(labels.max(initial=0)) < 65536 else np.uint32)


def _write_tif(path: Path, array: np.ndarray, rgb: bool = False) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        tifffile.imwrite(
            temporary, array, photometric="rgb" if rgb else "minisblack", compression="zlib"
        )


def find_sidecars(paths) -> list[Path]:
    """The corrections folders of ``paths``: a sidecar itself, or a slide that has one."""
    found = []
    for path in map(Path, paths):
        folder = path if path.name.endswith(SIDECAR_SUFFIX) else sidecar_for(path)
        if (folder / RECORD_FILE).is_file():
            found.append(folder)
    return found
