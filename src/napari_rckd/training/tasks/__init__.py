"""Training objectives: each a module holding ``model`` that returns ``{"loss", "output", ...}``."""

from napari_rckd.training.tasks.base import Task, move_batch
from napari_rckd.training.tasks.classification import ClassificationTask
from napari_rckd.training.tasks.distillation import DistillationTask
from napari_rckd.training.tasks.segmentation import SegmentationTask

__all__ = ["ClassificationTask", "DistillationTask", "SegmentationTask", "Task", "move_batch"]
