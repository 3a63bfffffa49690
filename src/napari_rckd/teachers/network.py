"""Teachers that are neural networks: a user's TorchScript file, or a trained RCKD student.

The TorchScript contract (also in docs/teachers.md):

* input: float32 tensor B×3×H×W, RGB in [0, 1], at the teacher's mpp, H and W multiples of 32
  (tiles are reflect-padded to that and the output cropped back);
* output: float tensor B×C×H×W of **logits**; channel 0 is the nuclear-pixel logit and, when
  C ≥ 2, channel 1 is a nucleus-boundary logit used to separate touching nuclei;
* the teacher's resolution is the module's float attribute ``mpp`` when it has one, else the
  ``mpp`` given to :func:`napari_rckd.teachers.get_teacher` (default 0.5 µm/px).

Instances come from the probability, separated by the boundary map when there is one (see
:func:`napari_rckd.teachers.instances.instances_from_probability`); `nuclei_from_logits` is that
step. Every network, named (``learned``, ``csat``) or given as a file, runs through the same
batched `napari_rckd.models.runner.ModelRunner` as the other checkpoints: ``predict`` for one
tile at any mpp, ``predict_batch`` for a batch of windows at the teacher's own.

A network teacher can carry a *prior*, another teacher whose nuclear probability is averaged
with its own before instances are found (`with_classical_prior`). Left out of training, the
learned teacher and the classical detector fail on different images, and their average beat
both on every held-out source (docs/teachers.md); the network's contours still split nuclei.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.special import expit

from napari_rckd.errors import RckdError
from napari_rckd.files import sha256_prefix
from napari_rckd.models.runner import ModelRunner, to_numpy
from napari_rckd.teachers.base import ResamplingTeacher, TeacherOutput
from napari_rckd.teachers.classical import ClassicalTeacher
from napari_rckd.teachers.instances import INSTANCES_VERSION, instances_from_probability

PAD_MULTIPLE = 32


class NetworkTeacher(ResamplingTeacher):
    """Runs a module returning B×C×H×W logits through the batched `ModelRunner` and turns
    them into TeacherOutputs: one tile (``predict``) or a batch at its mpp (``predict_batch``)."""

    def __init__(
        self,
        module,
        path: Path,
        mpp: float,
        name: str,
        device: str | None = None,
        use_boundary: bool = True,
    ):
        # channels_last, bf16 autocast on CUDA, inference_mode: as every checkpoint runs
        self.runner = ModelRunner(module, device)  # None and "auto" pick the best available
        self.device = str(self.runner.device)
        self.use_boundary = use_boundary
        self.path = path
        self.mpp = float(mpp)
        self.name = name
        self.digest = sha256_prefix(path)  # an identity that follows the weights
        self.prior: ClassicalTeacher | None = None  # averaged in by with_classical_prior

    @property
    def identity(self) -> str:
        own = f"{self.name}:{self.digest}:mpp={self.mpp:g}:instances={INSTANCES_VERSION}"
        return own if self.prior is None else f"{own}+{self.prior.identity}"

    def logits(self, tiles: np.ndarray) -> np.ndarray:
        """C×H×W float32 logits of one H×W×3 tile, or B×C×H×W of a B×H×W×3 batch."""
        batch = tiles[None] if tiles.ndim == 3 else tiles
        height, width = batch.shape[1:3]
        pad_y, pad_x = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
        if pad_y or pad_x:
            mode = "reflect" if pad_y < height and pad_x < width else "edge"
            batch = np.pad(batch, ((0, 0), (0, pad_y), (0, pad_x), (0, 0)), mode=mode)
        output = self.runner.forward(batch)
        self._check_output(output, batch.shape)
        logits = to_numpy(output[:, :, :height, :width])
        return logits[0] if tiles.ndim == 3 else logits

    def _check_output(self, output, shape: tuple[int, ...]) -> None:
        import torch

        if not isinstance(output, torch.Tensor) or output.ndim != 4 or output.shape[0] != shape[0]:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise RckdError(
                f"teacher model {self.path} returned {got}, not B×C×H×W logits; "
                "see the TorchScript contract in docs/teachers.md"
            )
        if tuple(output.shape[2:]) != tuple(shape[1:3]):
            raise RckdError(
                f"teacher model {self.path} returned {tuple(output.shape[2:])} pixels for a "
                f"{tuple(shape[1:3])} input; its output must match the input's size"
            )

    def predict_batch(self, tiles: np.ndarray) -> list[TeacherOutput]:
        """Outputs for a B×H×W×3 uint8 batch already at ``self.mpp``: one model call, while the
        classical prior (if any) runs on CPU threads beside it; then each tile's instances on
        the same threads (scipy and scikit-image let go of the GIL: 1.1× on two cores)."""
        workers = min(len(tiles), os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="nuclei-post") as pool:
            priors = [
                None if self.prior is None else pool.submit(self.prior.nuclear_probability, tile)
                for tile in tiles
            ]
            logits = self.logits(tiles)
            # every prior was queued before these, so a worker waiting on one never starves it
            found = [
                pool.submit(self._nuclei, each, prior)
                for each, prior in zip(logits, priors, strict=True)
            ]
            return [future.result() for future in found]

    def _nuclei(self, logits: np.ndarray, prior) -> TeacherOutput:
        prior = None if prior is None else prior.result()
        return nuclei_from_logits(logits, self.mpp, self.use_boundary, prior)

    def _predict_native(self, tile: np.ndarray) -> TeacherOutput:
        return self.predict_batch(tile[None])[0]


def nuclei_from_logits(
    logits: np.ndarray, mpp: float, use_boundary: bool, prior: np.ndarray | None = None
) -> TeacherOutput:
    """Nuclear probability and instances from one tile's C×H×W logits (channel 0 nuclear,
    channel 1 the contour map when ``use_boundary``), the probability averaged with ``prior``'s
    when one is given."""
    prob = expit(logits[0])
    if prior is not None:
        prob = (prob + prior) / 2
    boundary = None
    if use_boundary and logits.shape[0] >= 2:
        boundary = expit(logits[1])
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
            f"{path} is a {config.task!r} checkpoint, not a nuclei model (a dense stage-1 or "
            "segmentation checkpoint); pass it to the option for its task instead."
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
