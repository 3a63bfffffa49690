"""Models: CSAT (registered in timm as ``rckd_csat`` on import), dense and classification models
on any timm backbone, and the safetensors checkpoint format. See docs/models.md."""

from napari_rckd.models.assembly import Classifier, DenseModel
from napari_rckd.models.checkpoint import load_backbone, load_checkpoint, save_checkpoint
from napari_rckd.models.config import ModelConfig
from napari_rckd.models.csat import Csat
from napari_rckd.models.factory import create_backbone, create_model

__all__ = [
    "Classifier",
    "Csat",
    "DenseModel",
    "ModelConfig",
    "create_backbone",
    "create_model",
    "load_backbone",
    "load_checkpoint",
    "save_checkpoint",
]
