"""Checkpoints: one safetensors file whose header says what the model is and where it came from.

The header's ``napari_rckd`` entry is JSON: ``format``, ``format_version``, ``package_version``,
``config`` (a ModelConfig) and ``provenance`` (teacher, data, steps, metrics, ...). Nothing is
pickled, so a checkpoint from anyone can be opened safely and inspected without torch.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from napari_rckd import __version__
from napari_rckd.defaults import DECODERS, HEADS
from napari_rckd.errors import RckdError
from napari_rckd.models.config import ModelConfig
from napari_rckd.models.factory import create_model
from napari_rckd.models.weights import CHECKPOINT_FORMAT, read_weights, write_checkpoint_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_OUTPUTS = 10_000  # classes or channels: far more than any tissue or nuclei model has
BACKBONE_PREFIX = "backbone."


def save_checkpoint(path: str | Path, model: nn.Module, provenance: dict[str, Any]) -> Path:
    """Write ``model`` (with its ``config``) and ``provenance`` to ``path`` atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise RckdError(f"checkpoint path {path} must end in .safetensors.")
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise RckdError("save_checkpoint needs a model from create_model (it has no ModelConfig).")
    try:
        json.dumps(provenance)
    except TypeError as error:
        raise RckdError(f"checkpoint provenance must be plain JSON data ({error}).") from error
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": config.to_dict(),
        "provenance": provenance,
    }
    # safetensors needs contiguous tensors; channels_last weights are views it cannot write.
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_checkpoint_file(path, tensors, metadata)
    log.info("saved checkpoint %s (%d tensors)", path, len(tensors))
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model, metadata).

    The model comes back in eval mode, ready for inference; call ``.train()`` to fine-tune.
    """
    path = Path(path)
    tensors, metadata = _read_checkpoint(path, map_location)
    model = create_model(ModelConfig.from_dict(metadata["config"]))
    _load_strict(model, tensors, path, what=f"a {metadata['config']['task']} model")
    return model.to(map_location).eval(), metadata


def load_backbone(
    model: nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load the backbone of a checkpoint (e.g. RCKD stage 1, dense) into ``model``, any head.

    Returns the checkpoint's metadata so the caller can record where the backbone came from.
    """
    path = Path(path)
    tensors, metadata = _read_checkpoint(path, map_location)
    source = metadata["config"]["backbone"]
    target = model.config.backbone
    if source != target:
        raise RckdError(
            f"checkpoint {path} has backbone {source!r} but the model has {target!r}; "
            f"create the model with backbone={source!r}."
        )
    backbone_tensors = {
        k.removeprefix(BACKBONE_PREFIX): v
        for k, v in tensors.items()
        if k.startswith(BACKBONE_PREFIX)
    }
    _load_strict(model.backbone, backbone_tensors, path, what=f"backbone {target!r}")
    return metadata


def _read_checkpoint(path: Path, map_location) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, metadata = read_weights(path, map_location)
    if metadata is None:
        raise RckdError(
            f"{path} has no napari-rckd metadata, so it is not a checkpoint written by "
            "save_checkpoint; to use plain backbone weights pass it as create_model(..., pretrained=path)."
        )
    _check_keys(path, metadata, METADATA_SCHEMA, "")
    _check_keys(path, metadata["config"], CONFIG_SCHEMA, "config.")
    if metadata["format_version"] > FORMAT_VERSION:
        raise RckdError(
            f"{path} is checkpoint format {metadata['format_version']}, newer than this "
            f"napari-rckd ({__version__}) reads; upgrade napari-rckd."
        )
    return tensors, metadata


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(low: int, high: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _rgb(value) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(_number(item) for item in value)


# Header key -> (required, test, what it must be). A header is read before any model is
# built from it, so a damaged or hostile one cannot ask for 10⁹ outputs or a NaN resolution.
METADATA_SCHEMA = {
    "format_version": (True, _integer(1, 10**6), "a positive integer"),
    "config": (True, lambda v: isinstance(v, dict), "a JSON object"),
    "provenance": (False, lambda v: isinstance(v, dict), "a JSON object"),
}
CONFIG_SCHEMA = {
    "task": (True, lambda v: isinstance(v, str), "a task name"),
    "backbone": (True, lambda v: isinstance(v, str), "a timm model name"),
    "num_outputs": (True, _integer(1, MAX_OUTPUTS), f"an integer from 1 to {MAX_OUTPUTS:,}"),
    "input_mpp": (True, lambda v: _number(v) and 0 < v <= 1000, "µm per pixel, finite and > 0"),
    "tile_size": (False, _integer(1, 2**16), "an integer from 1 to 65,536"),
    "class_names": (False, _strings, "a list of names"),
    "class_colors": (False, _strings, "a list of '#rrggbb' colours"),
    "mean": (False, _rgb, "three finite numbers"),
    "std": (False, _rgb, "three finite numbers"),
    "head": (False, lambda v: v in HEADS, f"one of {', '.join(HEADS)}"),
    "decoder": (False, lambda v: v in DECODERS, f"one of {', '.join(DECODERS)}"),
}


def _check_keys(path: Path, data: dict, schema: dict, prefix: str) -> None:
    """Raise one sentence naming the first header key that is missing or out of range."""
    for key, (required, test, meaning) in schema.items():
        if key not in data:
            if required:
                raise RckdError(
                    f"{path} is not a usable checkpoint: its header lacks {prefix}{key}; "
                    "re-save it with save_checkpoint or use another file."
                )
        elif not test(data[key]):
            raise RckdError(
                f"{path} is not a usable checkpoint: its header's {prefix}{key} must be "
                f"{meaning}, not {str(data[key])[:40]!r}; re-save it or use another file."
            )


def _load_strict(
    module: nn.Module, tensors: dict[str, torch.Tensor], path: Path, what: str
) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape
    )
    if missing or unexpected or wrong_shape:
        example = (missing or unexpected or wrong_shape)[0]
        raise RckdError(
            f"checkpoint {path} does not fit {what}: {len(missing)} weights missing, "
            f"{len(unexpected)} unexpected, {len(wrong_shape)} of another shape (e.g. {example!r}); "
            "it was written for another architecture."
        )
    module.load_state_dict(tensors, strict=True)
