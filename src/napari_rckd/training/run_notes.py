"""What a training run says about itself, on the terminal and in the run folder's ``run.log``.

Every run of `pretrain`, `finetune` and `train-teacher` states the weights it starts from
(with the provenance their file records), the teacher it learns from, how validation was
split and why, how the data's pixel size was handled, and where the model went. The lines are
INFO log records of this module; `run_log` copies the package's records into ``OUT/run.log``
for the length of the run, so the folder keeps its own account next to the checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

RUN_LOG = "run.log"
PACKAGE_LOGGER = "napari_rckd"
# Provenance entries worth a reader's time, in the order they are told.
TOLD = (
    "stage",
    "teacher",
    "sources",
    "holdout",
    "training_data",
    "step",
    "tiles",
    "mpp",
    "licence",
    "recipe",
)


@contextlib.contextmanager
def run_log(out_dir: Path) -> Iterator[Path | None]:
    """Copy the package's INFO (and worse) records into ``out_dir/run.log`` during the block.

    Only rank 0 writes (under torchrun the others would say the same). The file is appended
    to, so a resumed run adds to the account of the first. A run refused before it wrote
    anything else leaves no folder behind that it made.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        yield None
        return
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RUN_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger(PACKAGE_LOGGER)
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:  # a script without logging set up
        package.setLevel(logging.INFO)
    package.addHandler(handler)
    failed = True
    try:
        yield path
        failed = False
    finally:
        package.removeHandler(handler)
        handler.close()
        package.setLevel(level)
        if failed and made and [p.name for p in out_dir.iterdir()] == [RUN_LOG]:
            path.unlink()
            out_dir.rmdir()


def tell(line: str) -> None:
    """One line of the run's account."""
    log.info(line)


def provenance_text(provenance: dict | None) -> str:
    """The telling entries of a checkpoint's provenance as ``key value; ...`` (lists counted
    when long), or "none recorded"."""
    if not provenance:
        return "none recorded"
    parts = []
    for key in TOLD:
        value = provenance.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value)) if len(value) <= 4 else f"{len(value)} items"
        parts.append(f"{key} {value}")
    return "; ".join(parts) or "none recorded"


def weights_text(path: Path, metadata: dict | None, label: str | None = None) -> str:
    """``label (file, sha256 ...; provenance: ...)`` of a weight file."""
    from napari_rckd.files import sha256_prefix

    name = label or str(path)
    provenance = (metadata or {}).get("provenance")
    return (
        f"{name} ({path.name}, sha256 {sha256_prefix(path)}; provenance: "
        f"{provenance_text(provenance)})"
    )


def init_line(start) -> str:
    """Where stage 2 starts (`training.initial.Init`)."""
    from napari_rckd import zoo

    if start.name == "none":
        return f"start weights: random ({start.backbone}, --init none)"
    if start.imagenet:
        return f"start weights: timm's ImageNet weights of {start.backbone} (--init imagenet)"
    label = (
        f"the shipped RCKD-CSAT student {start.name!r}"
        if getattr(zoo.find(start.name), "stage2_weights", None)
        else start.name
    )
    return f"start weights: {weights_text(start.path, start.metadata, label)}"


def teacher_line(spec: str, teacher, role: str = "teacher") -> str:
    """The nuclei teacher a run learns from, with its weights' provenance when it has any."""
    path = teacher_weights(spec)
    if path is None:
        return f"{role}: {spec} ({teacher.name}; no napari-rckd weights, so no provenance)"
    from napari_rckd.models.weights import read_weights

    _, metadata = read_weights(path)
    return f"{role}: {spec}, weights {weights_text(path, metadata, str(spec))}"


def teacher_weights(spec: str | os.PathLike) -> Path | None:
    """The napari-rckd weight file behind a nuclei model spec, if there is one."""
    from napari_rckd.defaults import PRIOR_SUFFIX
    from napari_rckd.models.shipped import shipped_weights

    text = str(spec).strip().removesuffix(PRIOR_SUFFIX)
    if text.lower() in ("builtin", "hybrid", "learned"):
        return shipped_weights("learned")
    if text.lower() == "csat":
        return shipped_weights("csat")
    return Path(text) if text.endswith(".safetensors") and Path(text).is_file() else None


def split_line(
    groups: Sequence[str],
    train_index,
    val_index,
    source: str,
    unit: str = "tiles",
    singletons: bool = True,
) -> str:
    """How validation was split: N groups (sources) on each side, named by ``source``; with
    ``singletons``, a warning when every group is one file."""
    groups = [str(g) for g in groups]
    train_groups = {groups[i] for i in train_index}
    val_groups = {groups[i] for i in val_index}
    line = (
        f"validation: split by group ({source}): {len(train_groups)} groups train "
        f"({len(train_index)} {unit}), {len(val_groups)} other groups validate "
        f"({len(val_index)} {unit}); no group is on both sides"
    )
    if singletons and len(set(groups)) == len(groups):
        line += (
            f"; every group is a single file, so copies of one image could sit on both "
            f"sides: give a groups.csv (class,group,file) if the {unit} come from fewer sources"
        )
    return line


def model_line(result) -> str:
    """Where the model went, and how the run ended."""
    best = "none" if result.best_metric is None else f"{result.best_metric:.4f}"
    return (
        f"model: {result.best_checkpoint} (best {result.primary_metric} {best} at step "
        f"{result.best_step}); last: {result.last_checkpoint}; run {result.status} at step "
        f"{result.step}"
    )


def slide_mpp_line(
    paths: Sequence[Path],
    mpp: float,
    slide_mpp: float | None,
    mpp_table: dict[str, float] | None,
    what: str = "tiles",
) -> str:
    """How the slides' pixel sizes were found and the scale the model reads them at."""
    from napari_rckd.io import open_slide

    found: dict[str, list[str]] = {}
    for path in paths:
        with open_slide(path) as slide:
            recorded = slide.mpp
        if recorded is not None:
            how = f"{recorded:.4g} µm/px from the file"
        elif str(Path(path).resolve()) in (mpp_table or {}):
            how = f"{mpp_table[str(Path(path).resolve())]:.4g} µm/px from --mpp-table"
        else:
            how = f"{slide_mpp:.4g} µm/px from --slide-mpp"
        found.setdefault(how, []).append(Path(path).name)
    told = [
        f"{', '.join(names) if len(names) <= 3 else f'{len(names)} slides'} at {how}"
        for how, names in found.items()
    ]
    return f"pixel size: {what} cut at {mpp:g} µm/px from {'; '.join(told)}"
