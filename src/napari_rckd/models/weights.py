"""Reading and writing weight files without ever unpickling arbitrary objects.

safetensors files are read as they are; ``.pt``/``.pth``/``.bin`` files only through
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
A napari-rckd checkpoint keeps its JSON metadata under one key of the safetensors header.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from napari_rckd.atomic import atomic_path
from napari_rckd.errors import RckdError
from napari_rckd.files import check_readable

METADATA_KEY = "napari_rckd"
CHECKPOINT_FORMAT = "napari-rckd-checkpoint"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def read_weights(
    path: Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Tensors of a weight file and its napari-rckd metadata (None when it has none)."""
    path = Path(path)
    check_readable(path, "weights file")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
                header = handle.metadata() or {}
        except (SafetensorError, OSError) as error:
            raise RckdError(f"{path} is not a readable safetensors file ({error}).") from error
        return tensors, _parse_metadata(path, header.get(METADATA_KEY))
    if path.suffix in WEIGHT_SUFFIXES:
        return _read_torch_file(path, map_location)
    raise RckdError(
        f"weights file {path} has suffix {path.suffix!r}; use one of {WEIGHT_SUFFIXES}."
    )


def write_checkpoint_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write a safetensors file atomically (temp file + rename): a crash never leaves half of one."""
    header = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=header)


def _read_torch_file(path: Path, map_location) -> tuple[dict, dict | None]:
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise RckdError(
            f"refused to load {path}: it holds pickled objects other than tensors, which could run "
            "code; re-save it as a plain state dict or as .safetensors."
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise RckdError(f"{path} is not a readable PyTorch weights file ({error}).") from error
    if not isinstance(data, dict):
        raise RckdError(f"{path} holds a {type(data).__name__}, not a dict of weights.")
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else None
    if metadata is not None and metadata.get("format") != CHECKPOINT_FORMAT:
        metadata = None
    for key in ("state_dict", "model"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    return tensors, metadata


def _parse_metadata(path: Path, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise RckdError(f"{path} has corrupt napari-rckd metadata ({error}).") from error
    if not isinstance(metadata, dict) or metadata.get("format") != CHECKPOINT_FORMAT:
        raise RckdError(f"{path} has napari-rckd metadata of an unknown format.")
    return metadata
