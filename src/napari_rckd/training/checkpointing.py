"""The files a run leaves in its out_dir, written atomically so a crash never corrupts them.

- ``last.safetensors``, ``best.safetensors``: model weights with provenance metadata,
  through `napari_rckd.models.save_checkpoint` for project models (so they load anywhere
  a model loads) and as plain safetensors for any other ``nn.Module``.
- ``last.state.pt``: what resuming needs besides the weights: optimizer moments, step,
  epoch, position in the epoch, best metric, validation history, config and every rank's
  RNG states. Only tensors and plain containers, so it loads with ``weights_only=True``.

The weights are replaced before the state: a crash between the two renames can at worst
leave weights one checkpoint newer than the optimizer moments, never a broken file.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from napari_rckd.atomic import atomic_path
from napari_rckd.errors import RckdError
from napari_rckd.files import check_readable

LAST_WEIGHTS = "last.safetensors"
BEST_WEIGHTS = "best.safetensors"
LAST_STATE = "last.state.pt"


@dataclass
class TrainState:
    """Where the run is; saved with every checkpoint and restored on resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    bad_validations: int = 0  # validations since the last improvement (early stopping)
    history: list[dict] = field(default_factory=list)


def _is_project_model(model: nn.Module) -> bool:
    try:
        from napari_rckd.models import ModelConfig
    except ImportError:
        return False
    return isinstance(getattr(model, "config", None), ModelConfig)


def save_weights(path: Path, model: nn.Module, provenance: dict) -> None:
    """Write the model's weights (with ``provenance``) atomically as safetensors."""
    if _is_project_model(model):
        from napari_rckd.models import save_checkpoint

        save_checkpoint(path, model, provenance)
        return
    # safetensors wants contiguous, unshared CPU tensors; channels_last weights are neither.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"provenance": json.dumps(provenance)}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def load_weights_into(path: Path, model: nn.Module) -> None:
    """Load weights saved by `save_weights` into an existing model of the same architecture."""
    check_readable(path, "checkpoint")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise RckdError(
            f"cannot read the checkpoint {path}: {error}; delete it to start over"
        ) from error
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise RckdError(
            f"the checkpoint {path} belongs to another architecture ({len(missing)} weights "
            f"missing, {len(unexpected)} unexpected); resume with the same model or use a new out_dir"
        )


def capture_rng() -> dict:
    """This process's random states (Python, NumPy, torch CPU and CUDA) as plain values."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    path: Path, state: TrainState, optimizer: torch.optim.Optimizer, config: dict, rng: list
) -> None:
    payload = {
        "train_state": asdict(state),
        "optimizer": optimizer.state_dict(),
        "config": config,
        "rng": rng,  # one entry per rank, in rank order
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_state(path: Path) -> dict:
    """The trainer state saved by `save_state`, loaded without unpickling arbitrary objects.

    The message never passes on PyTorch's advice to retry with ``weights_only=False``:
    a state file that needs it holds code, and loading it would run that code.
    """
    check_readable(path, "trainer state")
    start_over = "delete it (and last.safetensors) to start the run over"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise RckdError(
            f"refused to load the trainer state {path}: it holds objects other than tensors, "
            f"which could run code; {start_over}"
        ) from error
    except Exception as error:  # torch raises RuntimeError, EOFError, zipfile errors, ...
        raise RckdError(
            f"the trainer state {path} is damaged ({type(error).__name__}); {start_over}"
        ) from error
    fields = {f.name for f in dataclasses.fields(TrainState)}
    state = payload.get("train_state") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not set(state) <= fields or "optimizer" not in payload:
        raise RckdError(f"the trainer state {path} is not one napari-rckd wrote; {start_over}")
    payload["train_state"] = TrainState(**state)
    return payload
