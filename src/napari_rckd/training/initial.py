"""Where stage 2 starts, and how a fine-tuned checkpoint records it.

A start is a napari-rckd checkpoint (usually RCKD stage 1; ``csat`` names the shipped
RCKD-CSAT student), timm's ImageNet weights or random weights. Two stage-1 runs both leave a ``best.safetensors``, so the file name alone
cannot say which one a model came from: the record holds the path as given, a hash of the
file and a summary of the checkpoint's own provenance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from napari_rckd import zoo
from napari_rckd.errors import RckdError
from napari_rckd.files import sha256_prefix

DEFAULT_BACKBONE = "rckd_csat"


@dataclass(frozen=True)
class Init:
    """A resolved start: ``name`` is "none", "imagenet", "csat" or a checkpoint path as given."""

    name: str
    backbone: str
    path: Path | None = None
    metadata: dict = field(default_factory=dict)  # the checkpoint's napari-rckd header

    @property
    def imagenet(self) -> bool:
        return self.name == "imagenet"

    @property
    def trained_mpp(self) -> float | None:
        """µm per pixel the checkpoint's model was trained at (None without a checkpoint)."""
        return self.metadata.get("config", {}).get("input_mpp") if self.path else None

    def identity(self) -> dict:
        """What a fine-tuned checkpoint records as its ``provenance.init``."""
        if self.path is None:
            return {"name": self.name, "backbone": self.backbone}
        own = self.metadata.get("provenance", {})
        return {
            "name": self.path.name,
            "path": self.name,
            "sha256": sha256_prefix(self.path),
            "backbone": self.backbone,
            "provenance": summary(own),
        }

    def load_into(self, model) -> None:
        """Load the checkpoint's backbone into ``model`` (nothing to do otherwise)."""
        if self.path is not None:
            from napari_rckd.models import load_backbone

            load_backbone(model, self.path)


def resolve_init(
    init: str | os.PathLike | None, backbone: str | None, flag: str = "--init"
) -> Init:
    """``init`` ("none", "imagenet", "csat", a checkpoint path, or None for `default_init`) with
    the backbone to build: ``backbone`` when given (it must match a checkpoint's), else the
    checkpoint's. ``flag`` names the option in error messages."""
    if init is None:
        init = default_init(backbone)
    if str(init) in ("none", "imagenet"):
        return Init(str(init), backbone or DEFAULT_BACKBONE)
    from napari_rckd.models.shipped import shipped_weights
    from napari_rckd.models.weights import read_weights

    shipped = zoo.find(str(init))
    path = (
        shipped_weights(shipped.name, stage2=True)
        if shipped and shipped.stage2_weights
        else Path(init)
    )
    _, metadata = read_weights(path)
    if metadata is None or "config" not in metadata:
        raise RckdError(
            f"{flag} {path} is not a napari-rckd checkpoint; give a stage-1 .safetensors "
            "from `napari-rckd pretrain`, 'imagenet' or 'none'"
        )
    trained = metadata["config"]["backbone"]
    if backbone is not None and backbone != trained:
        raise RckdError(
            f"{flag} {path.name} holds a {trained!r} backbone but --backbone is {backbone!r}; "
            f"drop --backbone or pass --backbone {trained}"
        )
    return Init(str(init), trained, path, metadata)


def nuclei_start(
    spec: str, backbone: str, decoder: str, mpp: float, grow_detail: bool = False
) -> Init:
    """A nuclei model to start a teacher or stage-1 run from: a zoo name's shipped weights or a
    checkpoint, refused in one sentence unless it is a two-output (nuclei, contour) model of
    ``backbone``, ``decoder`` and ``mpp``. With ``grow_detail`` a standard-decoder model may
    start a ``detail`` one (its refiner starts at zero: `models.assembly.DetailRefiner`)."""
    from napari_rckd.models.shipped import shipped_weights
    from napari_rckd.models.weights import read_weights

    named = zoo.find(spec)
    path = shipped_weights(named.name) if named is not None and named.weights else Path(spec)
    _, metadata = read_weights(path)
    if metadata is None or "config" not in metadata:
        raise RckdError(f"--init {path} is not a napari-rckd checkpoint; give a nuclei model")
    have = metadata["config"]
    if have.get("task") != "dense" or have.get("num_outputs") != 2:
        raise RckdError(
            f"--init {spec} is not a nuclei model with a contour output ({have.get('task')}, "
            f"{have.get('num_outputs')} outputs); start from learned, csat or a train-teacher "
            "checkpoint"
        )
    theirs = (have["backbone"], have.get("decoder", "standard"), have["input_mpp"])
    grows = grow_detail and theirs[1] == "standard" and decoder == "detail"
    if theirs != (backbone, decoder, mpp) and not (grows and theirs[::2] == (backbone, mpp)):
        raise RckdError(
            f"--init {spec} is a {theirs[0]} with a {theirs[1]} decoder at {theirs[2]:g} "
            f"µm/px; pass --backbone {theirs[0]} --decoder {theirs[1]} --mpp {theirs[2]:g} to "
            "start from it"
        )
    return Init(spec, theirs[0], path, metadata)


def load_nuclei_weights(model, start: Init) -> None:
    """All of ``start``'s weights into ``model``; only a detail refiner it lacks starts new."""
    from napari_rckd.models.weights import read_weights

    tensors, _ = read_weights(start.path)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or any(not k.startswith("detail.") for k in missing):
        raise RckdError(
            f"--init {start.name} does not fit the model to train ({len(missing)} tensors "
            f"missing, {len(unexpected)} unexpected); start from a model of the same backbone"
        )


def default_init(backbone: str | None) -> str:
    """Stage 2's start when none is named: the zoo's shipped RCKD-CSAT student for CSAT, random
    for any other backbone (no student of theirs ships)."""
    if backbone not in (None, DEFAULT_BACKBONE):
        return "none"
    return next(m.name for m in zoo.models() if m.stage2_weights)


def summary(provenance: dict) -> dict:
    """The plain entries of a provenance (values and lists of values), without the nested
    records (validation metrics, its own init) and tile fingerprints, so chains of
    fine-tuning stay short."""

    def plain(value) -> bool:
        return value is None or isinstance(value, (str, int, float, bool))

    return {
        key: value
        for key, value in provenance.items()
        if (plain(value) or (isinstance(value, list) and all(plain(v) for v in value)))
        and not key.endswith("_sha256")
    }
