"""create_model: a dense or classification model on any timm backbone, with or without ImageNet weights."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
import torch.nn as nn

from napari_rckd.errors import RckdError
from napari_rckd.models import csat  # noqa: F401  (registers rckd_csat before any lookup)
from napari_rckd.models.assembly import Classifier, DenseModel
from napari_rckd.models.config import ModelConfig
from napari_rckd.models.weights import read_weights

log = logging.getLogger(__name__)

Pretrained = bool | str | Path


def create_model(config: ModelConfig, pretrained: Pretrained = False) -> nn.Module:
    """Build ``config``'s model; ``pretrained`` is False, True (timm's ImageNet weights) or a file.

    A file holds the backbone's ImageNet weights as timm names them (a ``.safetensors``, or a
    ``.pth``/``.pt``/``.bin`` read with ``weights_only=True``); a napari-rckd checkpoint goes
    through ``load_backbone`` instead.
    """
    backbone = create_backbone(config.backbone, pretrained)
    if config.task == "dense":
        return DenseModel(config, backbone)
    return Classifier(config, backbone)


def create_backbone(name: str, pretrained: Pretrained = False) -> nn.Module:
    """timm's multi-scale feature extractor for ``name`` (``features_only=True``)."""
    if not timm.is_model(name):
        raise RckdError(
            f"backbone {name!r} is not a timm model; use a name from timm.list_models(), "
            "e.g. 'rckd_csat', 'efficientnet_b0', 'convnextv2_atto' or 'resnet18'."
        )
    if pretrained is False or pretrained is None:
        return timm.create_model(name, features_only=True)
    if pretrained is True:
        return _from_timm_hub(name)
    return _from_file(name, Path(pretrained))


def _from_timm_hub(name: str) -> nn.Module:
    if name.startswith("rckd_csat"):  # its pretrained tag is the RCKD student, not ImageNet
        raise RckdError(
            f"{name!r} has no ImageNet weights (the paper's are not public); start from the "
            "shipped RCKD weights with --init csat, or from random ones with --init none."
        )
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise RckdError(
            f"timm has no published ImageNet weights for {name!r}; pass pretrained=<path to a "
            ".safetensors or .pth state dict of this backbone>, or pretrained=False to start random."
        )
    try:
        return timm.create_model(name, features_only=True, pretrained=True)
    except OSError as error:  # huggingface_hub's offline / not-cached errors are OSErrors
        raise RckdError(
            f"could not download ImageNet weights for {name!r} ({type(error).__name__}; offline?): "
            "connect once to fill the Hugging Face cache, or pass pretrained=<path to a "
            ".safetensors or .pth file of timm's weights for this backbone>."
        ) from error


def _from_file(name: str, path: Path) -> nn.Module:
    tensors, metadata = read_weights(path)
    if metadata is not None:
        raise RckdError(
            f"{path} is a napari-rckd checkpoint, not ImageNet weights; load its backbone with "
            "napari_rckd.models.load_backbone(model, path)."
        )
    _check_weights_fit(name, tensors, path)
    # timm maps the names into the feature extractor, reading the file with weights_only=True.
    backbone = timm.create_model(
        name, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    )
    log.info("loaded %s weights from %s", name, path)
    return backbone


def _check_weights_fit(name: str, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """timm loads feature extractors non-strictly; make sure every backbone weight is in the file."""
    model = timm.create_model(name)
    classifier = model.pretrained_cfg.get("classifier") or ()
    head = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    expected = {
        k: v.shape
        for k, v in model.state_dict().items()
        if not k.startswith(("head.", *head)) and not k.endswith("num_batches_tracked")
    }
    misfit = [k for k, shape in expected.items() if k not in tensors or tensors[k].shape != shape]
    if misfit:
        raise RckdError(
            f"{path} does not hold weights for backbone {name!r} ({len(misfit)} of "
            f"{len(expected)} missing or of another shape, e.g. {misfit[0]!r}); give the file "
            "of that exact timm model, with timm's parameter names."
        )
