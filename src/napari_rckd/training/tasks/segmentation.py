"""RCKD stage 2: cancer-region (semantic) segmentation from sparsely painted masks.

Masks use 0 for "not painted" and k for class k-1, the way a napari Labels layer is drawn.
Unpainted pixels carry no label, so they are ignored by the loss and the metrics rather
than treated as a background class the user never meant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from napari_rckd.errors import RckdError
from napari_rckd.metrics.classification import confusion_matrix, segmentation_report
from napari_rckd.training.tasks.base import ClassTask, check_class_count, check_labels, soft_dice

IGNORE = -1  # mask value 0 (unlabelled) minus one


class SegmentationTask(ClassTask):
    """Cross-entropy (plus optional soft Dice) on ``image`` -> ``mask``, B×C×H×W logits.

    Validation reports mIoU over labelled pixels (the primary metric), pixel accuracy
    and per-class IoU.
    """

    primary_metric = "miou"
    mode = "max"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 0.0,
    ) -> None:
        super().__init__(model, num_classes, class_names, class_weights)
        self.dice_weight = dice_weight

    def _logits_and_target(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["image"]).float()
        mask = batch["mask"].long()
        check_class_count(logits, self.num_classes)
        if logits.shape[-2:] != mask.shape[-2:]:
            raise RckdError(
                f"the model predicts {tuple(logits.shape[-2:])} pixels but the masks are "
                f"{tuple(mask.shape[-2:])}; use a dense model that returns input resolution"
            )
        check_labels(mask, 0, self.num_classes, "mask")
        return logits, mask - 1

    def forward(self, batch: dict) -> dict:
        logits, target = self._logits_and_target(batch)
        labelled = target != IGNORE
        # A batch with nothing painted has no loss; 0 × logits keeps the graph (and DDP) whole
        # where cross-entropy over zero pixels would return NaN.
        if not labelled.any():
            loss = logits.sum() * 0.0
        else:
            loss = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE)
            if self.dice_weight:
                probability = logits.softmax(1) * labelled.unsqueeze(1)
                one_hot = F.one_hot(target.clamp(min=0), self.num_classes).permute(0, 3, 1, 2)
                one_hot = one_hot * labelled.unsqueeze(1)  # (B, C, H, W), zero where unpainted
                dice = soft_dice(probability, one_hot.float(), dims=(0, 2, 3)).mean()
                loss = loss + self.dice_weight * (1 - dice)
        return {"loss": loss, "output": logits, "labelled_fraction": labelled.float().mean()}

    def validation_sums(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self(batch)
        target = batch["mask"].long() - 1
        count = torch.tensor(float(len(target)), device=target.device)
        return {
            "loss_sum": out["loss"].detach() * count,
            "count": count,
            "confusion": confusion_matrix(
                out["output"].argmax(1), target, self.num_classes, ignore_index=IGNORE
            ),
        }

    def summarise(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        metrics = {"loss": float(sums["loss_sum"] / sums["count"])}
        metrics.update(segmentation_report(sums["confusion"].cpu(), self.class_names))
        return metrics
