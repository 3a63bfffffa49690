"""Teachers that are neural networks: a user's TorchScript file, or a trained RCKD student.

The TorchScript contract (also in docs/teachers.md):

* input: float32 tensor B×3×H×W, RGB in [0, 1], at the teacher's mpp, H and W multiples of 32
  (tiles are reflect-padded to that and the output cropped back);
* output: float tensor B×C×H×W of **logits**; channel 0 is the nuclear-pixel logit and, when
  C ≥ 2, channel 1 is a nucleus-boundary logit used to separate touching nuclei;
* the teacher's resolution is the module's float attribute ``mpp`` when it has one, else the
  ``mpp`` given to :func:`napari_rckd.teachers.get_teacher` (default 0.5 µm/px).

Instances come from the probability, separated by the boundary map when there is one (see
:func:`napari_rckd.teachers.base.instances_from_probability`); `nuclei_from_logits` is that
step, shared with live inference's batched students.

A network teacher can carry a *prior*, another teacher whose nuclear probability is averaged
with its own before instances are found (`with_classical_prior`). Left out of training, the
learned teacher and the classical detector fail on different images, and their average beat
both on every held-out source (docs/teachers.md); the network's contours still split nuclei.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.inference.runner import resolve_device
from napari_rckd.teachers.base import (
    INSTANCES_VERSION,
    ResamplingTeacher,
    TeacherOutput,
    instances_from_probability,
)
from napari_rckd.teachers.classical import ClassicalTeacher

PAD_MULTIPLE = 32


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's sha256: a teacher identity that follows the weights."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class NetworkTeacher(ResamplingTeacher):
    """Runs a module returning B×C×H×W logits and turns them into a TeacherOutput."""

    def __init__(
        self,
        module,
        path: Path,
        mpp: float,
        name: str,
        device: str | None = None,
        use_boundary: bool = True,
    ):
        import torch

        self.module = module.eval()
        self.use_boundary = use_boundary
        self.path = path
        self.mpp = float(mpp)
        self.name = name
        self.device = resolve_device(device)  # None and "auto" pick the best available
        # channels_last: the memory format convolutions run fastest in, as in training and
        # `inference.runner` (the learned teacher's forward 1.2-1.4x on one CPU thread)
        self.memory_format = torch.channels_last
        self.module.to(self.device, memory_format=self.memory_format)
        self.digest = file_digest(path)
        self.prior: ClassicalTeacher | None = None  # averaged in by with_classical_prior

    @property
    def identity(self) -> str:
        own = f"{self.name}:{self.digest}:mpp={self.mpp:g}:instances={INSTANCES_VERSION}"
        return own if self.prior is None else f"{own}+{self.prior.identity}"

    def logits(self, tile: np.ndarray) -> np.ndarray:
        """C×H×W float32 logits of one tile."""
        import torch
        import torch.nn.functional as F

        height, width = tile.shape[:2]
        tile = np.require(tile, requirements="W")  # a read-only slide tile: copy, do not warn
        image = torch.from_numpy(tile).to(self.device).permute(2, 0, 1)[None].float() / 255
        pad_y, pad_x = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
        mode = "reflect" if pad_y < height and pad_x < width else "replicate"
        image = F.pad(image, (0, pad_x, 0, pad_y), mode=mode)
        image = image.contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            output = self.module(image)
        if not isinstance(output, torch.Tensor) or output.ndim != 4 or output.shape[0] != 1:
            shape = (
                tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            )
            raise RckdError(
                f"teacher model {self.path} returned {shape}, not B×C×H×W logits; "
                "see the TorchScript contract in docs/teachers.md"
            )
        if tuple(output.shape[2:]) != tuple(image.shape[2:]):
            raise RckdError(
                f"teacher model {self.path} returned {tuple(output.shape[2:])} pixels for a "
                f"{tuple(image.shape[2:])} input; its output must match the input's size"
            )
        return output[0, :, :height, :width].float().cpu().numpy()

    def _predict_native(self, tile: np.ndarray) -> TeacherOutput:
        prior = None if self.prior is None else self.prior.nuclear_probability(tile)
        return nuclei_from_logits(self.logits(tile), self.mpp, self.use_boundary, prior)


def nuclei_from_logits(
    logits: np.ndarray, mpp: float, use_boundary: bool, prior: np.ndarray | None = None
) -> TeacherOutput:
    """Nuclear probability and instances from one tile's C×H×W logits (channel 0 nuclear,
    channel 1 the contour map when ``use_boundary``), the probability averaged with ``prior``'s
    when one is given."""
    prob = 1 / (1 + np.exp(-logits[0]))
    if prior is not None:
        prob = (prob + prior) / 2
    boundary = None
    if use_boundary and logits.shape[0] >= 2:
        boundary = 1 / (1 + np.exp(-logits[1]))
    return TeacherOutput(prob.astype(np.float32), instances_from_probability(prob, mpp, boundary))


def with_classical_prior(teacher: NetworkTeacher, name: str) -> NetworkTeacher:
    """``teacher`` averaging its nuclear probability with the classical detector's, which runs
    at the teacher's mpp on the same resampled tile (spec ``hybrid``, ``X+classical``)."""
    teacher.prior = ClassicalTeacher(mpp=teacher.mpp)
    teacher.name = name
    return teacher


def has_contour_channel(config) -> bool:
    """Whether a dense checkpoint's channel 1 is a contour map (a learned teacher and its
    students name it ``boundary``); otherwise later channels may be classes."""
    return list(getattr(config, "class_names", []) or [])[1:2] == ["boundary"]


def load_torchscript_teacher(path: Path, mpp: float | None = None, device: str | None = None):
    """A TorchScript file as a teacher. TorchScript runs code from the file: trust it as a program."""
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as error:
        raise RckdError(
            f"{path} is not a TorchScript model ({str(error).splitlines()[0]}); "
            "save one with torch.jit.save(torch.jit.script(model), path)"
        ) from None
    module_mpp = getattr(module, "mpp", None)
    chosen = mpp if mpp is not None else (module_mpp if module_mpp is not None else 0.5)
    return NetworkTeacher(module, path, chosen, name=f"torchscript:{path.stem}", device=device)


def load_student_teacher(
    path: Path, mpp: float | None = None, device: str | None = None, name: str | None = None
):
    """A trained dense checkpoint as a teacher: sigmoid of its output channel 0, and channel 1
    as the contour map when the checkpoint names it ``boundary`` (a learned teacher)."""
    from napari_rckd.models import load_checkpoint

    model, metadata = load_checkpoint(path)
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "task", "dense") != "dense":
        raise RckdError(
            f"{path} is a {config.task} model; a student teacher must be a dense (stage-1 or "
            "segmentation) checkpoint"
        )
    model_mpp = getattr(config, "input_mpp", None) or (metadata or {}).get("input_mpp")
    chosen = mpp if mpp is not None else (model_mpp or 0.5)
    return NetworkTeacher(
        model,
        path,
        chosen,
        name=name or f"student:{path.parent.name}/{path.stem}",
        device=device,
        use_boundary=has_contour_channel(config),
    )
