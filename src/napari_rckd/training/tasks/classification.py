"""RCKD stage 2: tile classification (tissue class or subtype) with cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from napari_rckd.metrics.classification import classification_report, confusion_matrix
from napari_rckd.training.tasks.base import ClassTask, check_class_count, check_labels


class ClassificationTask(ClassTask):
    """Cross-entropy on ``image`` -> ``label`` (int64 class index), B×C logits from the model.

    ``class_weights`` counter class imbalance in the loss; ``label_smoothing`` softens
    over-confident fits on small annotated sets. Validation reports accuracy,
    balanced accuracy (the primary metric: fair to rare classes), macro F1 and per-class F1.
    """

    primary_metric = "balanced_accuracy"
    mode = "max"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(model, num_classes, class_names, class_weights)
        self.label_smoothing = label_smoothing

    def forward(self, batch: dict) -> dict:
        logits = self.model(batch["image"]).float()
        labels = batch["label"].long()
        check_class_count(logits, self.num_classes)
        check_labels(labels, 0, self.num_classes - 1, "class label")
        loss = F.cross_entropy(
            logits, labels, weight=self.class_weights, label_smoothing=self.label_smoothing
        )
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "output": logits, "accuracy": accuracy.detach()}

    def validation_sums(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self(batch)
        count = torch.tensor(float(len(batch["label"])), device=out["loss"].device)
        predicted = out["output"].argmax(1)
        return {
            "loss_sum": out["loss"].detach() * count,
            "count": count,
            "confusion": confusion_matrix(predicted, batch["label"], self.num_classes),
        }

    def summarise(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        metrics = {"loss": float(sums["loss_sum"] / sums["count"])}
        metrics.update(classification_report(sums["confusion"].cpu(), self.class_names))
        return metrics
