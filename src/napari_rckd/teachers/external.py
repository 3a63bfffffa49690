"""Adapters for third-party nuclei models: cellpose and InstanSeg.

Neither is a dependency of napari-rckd. Each adapter imports its package when it is built and,
when the package or its weights are missing, raises an RckdError that says what to install.
"""

from __future__ import annotations

import importlib
import importlib.metadata

import numpy as np
from scipy.special import expit

from napari_rckd.errors import RckdError
from napari_rckd.teachers.base import ResamplingTeacher, TeacherOutput

NUCLEUS_DIAMETER_UM = 8.0  # typical H&E nucleus, to tell cellpose what size to look for


def _require(module: str, distribution: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RckdError(
            f"the {purpose} teacher needs the {distribution!r} package and its model weights: "
            f"run `pip install {distribution}` (weights download on first use, so run it once "
            "with internet access), or choose --teacher builtin"
        ) from None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _weights_error(purpose: str, error: Exception) -> RckdError:
    return RckdError(
        f"{purpose} is installed but its model weights could not be loaded ({error}); "
        "run it once with internet access so that it downloads them"
    )


class CellposeTeacher(ResamplingTeacher):
    """cellpose's generalist model; the probability is the sigmoid of its cell-probability map."""

    name = "cellpose"

    def __init__(self, mpp: float = 0.5, device: str | None = None):
        _require("cellpose", "cellpose", "cellpose")
        import torch
        from cellpose import models

        self.mpp = mpp
        self.version = _version("cellpose")
        gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        legacy = self.version.split(".")[0] in {"1", "2", "3"}
        try:  # cellpose < 4 has a dedicated nuclei model; 4 has one generalist model
            kwargs = {"model_type": "nuclei"} if legacy else {}
            self.model = models.CellposeModel(gpu=gpu, **kwargs)
        except Exception as error:  # noqa: BLE001  (download and file errors vary by version)
            raise _weights_error("cellpose", error) from error
        self.legacy = legacy

    @property
    def identity(self) -> str:
        return f"cellpose:{self.version}:mpp={self.mpp:g}"

    def _predict_native(self, tile: np.ndarray) -> TeacherOutput:
        kwargs = {"channels": [0, 0]} if self.legacy else {}
        masks, flows, _ = self.model.eval(tile, diameter=NUCLEUS_DIAMETER_UM / self.mpp, **kwargs)
        prob = expit(np.asarray(flows[2], dtype=np.float32))
        return TeacherOutput(prob.astype(np.float32), np.asarray(masks, dtype=np.int32))


class InstansegTeacher(ResamplingTeacher):
    """InstanSeg's brightfield nuclei model; it gives instances only, so the probability is
    the instance mask (0 or 1)."""

    name = "instanseg"

    def __init__(self, mpp: float = 0.5, device: str | None = None):
        module = _require("instanseg", "instanseg-torch", "InstanSeg")
        self.mpp = mpp
        self.version = _version("instanseg-torch")
        try:
            self.model = module.InstanSeg("brightfield_nuclei", verbosity=0, device=device)
        except Exception as error:  # noqa: BLE001
            raise _weights_error("InstanSeg", error) from error

    @property
    def identity(self) -> str:
        return f"instanseg:{self.version}:brightfield_nuclei:mpp={self.mpp:g}"

    def _predict_native(self, tile: np.ndarray) -> TeacherOutput:
        labels, _ = self.model.eval_small_image(tile, pixel_size=self.mpp)
        labels = np.asarray(labels.squeeze().cpu().numpy(), dtype=np.int32)
        if labels.ndim == 3:  # nuclei first when a model also returns cells
            labels = labels[0]
        return TeacherOutput((labels > 0).astype(np.float32), labels)
