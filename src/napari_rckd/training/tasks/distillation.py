"""RCKD stage 1: the student's dense output learns the teacher's nuclear probability map.

The loss is binary cross-entropy with logits plus soft Dice: BCE gives every pixel a
gradient, Dice keeps the sparse nuclear class from being drowned by background. Extra
target channels (instance boundaries, say) are learned the same way, weighted per channel.
With ``decisions`` the student learns the teacher's nuclei (channel 0 > 0.5 as 0/1), not its
hesitation. Training a teacher on ground truth is the same objective with hard targets; a batch
may then carry a ``mask`` (same shape as ``target``, 1 = known) so that, e.g., images with
nuclear masks but no instances teach the nuclear channel and not the boundary one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from napari_rckd.errors import RckdError
from napari_rckd.training.tasks.base import Task, soft_dice


class DistillationTask(Task):
    """Response-based distillation of a nuclei teacher into a dense student.

    Batches hold ``image`` (B×3×H×W in [0, 1]) and ``target`` (B×C×H×W in [0, 1], channel
    0 the teacher's nuclear probability); the model must return B×C×H×W logits.
    Validation reports ``dice`` (student vs teacher nuclei, both thresholded at 0.5), the
    primary metric, plus ``loss`` and ``mae`` (mean absolute probability error).
    """

    primary_metric = "dice"
    mode = "max"

    def __init__(
        self,
        model: nn.Module,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        channel_weights: Sequence[float] | None = None,
        decisions: bool = False,
    ) -> None:
        super().__init__(model)
        self.decisions = decisions
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.channel_weights = None if channel_weights is None else tuple(channel_weights)

    def _logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["image"]).float()
        target = batch["target"].float()
        if self.decisions:
            target = torch.cat([(target[:, :1] > 0.5).float(), target[:, 1:]], dim=1)
        if logits.shape != target.shape:
            raise RckdError(
                f"the student predicts {tuple(logits.shape)} but the teacher targets are "
                f"{tuple(target.shape)}; create the dense model with num_outputs="
                f"{target.shape[1]} and make it return logits at input resolution"
            )
        return logits, target

    def _weights(self, channels: int, device: torch.device) -> torch.Tensor:
        if self.channel_weights is None:
            return torch.ones(channels, device=device)
        if len(self.channel_weights) != channels:
            raise RckdError(
                f"DistillationTask got {len(self.channel_weights)} channel weights for "
                f"{channels} target channels; give one weight per channel"
            )
        return torch.tensor(self.channel_weights, device=device)

    def forward(self, batch: dict) -> dict:
        logits, target = self._logits(batch)
        mask = batch.get("mask")
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        probability = logits.sigmoid()
        if mask is None:
            bce = bce.mean((0, 2, 3))
        else:  # unknown pixels teach nothing; a channel unknown in the whole batch adds 0
            mask = mask.float()
            bce = (bce * mask).sum((0, 2, 3)) / mask.sum((0, 2, 3)).clamp_min(1)
            probability, target = probability * mask, target * mask
        dice_loss = 1 - soft_dice(probability, target, dims=(0, 2, 3))  # per channel
        weights = self._weights(target.shape[1], logits.device)
        per_channel = self.bce_weight * bce + self.dice_weight * dice_loss
        loss = (weights * per_channel).sum() / weights.sum()
        return {
            "loss": loss,
            "output": logits,
            "bce": bce[0].detach(),
            "dice_loss": dice_loss[0].detach(),
        }

    def validation_sums(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self(batch)
        student = out["output"][:, 0].sigmoid()
        teacher = batch["target"][:, 0].float()
        student_nuclei, teacher_nuclei = student > 0.5, teacher > 0.5
        count = torch.tensor(float(student.shape[0]), device=student.device)
        return {
            "loss_sum": out["loss"].detach() * count,
            "count": count,
            "intersection": (student_nuclei & teacher_nuclei).sum().double(),
            "student_pixels": student_nuclei.sum().double(),
            "teacher_pixels": teacher_nuclei.sum().double(),
            "abs_error": (student - teacher).abs().sum().double(),
            "pixels": torch.tensor(float(student.numel()), device=student.device).double(),
        }

    def summarise(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        denominator = sums["student_pixels"] + sums["teacher_pixels"]
        # Both empty means full agreement on "no nuclei here".
        dice = 2 * sums["intersection"] / denominator if denominator > 0 else torch.tensor(1.0)
        return {
            "loss": float(sums["loss_sum"] / sums["count"]),
            "dice": float(dice),
            "mae": float(sums["abs_error"] / sums["pixels"]),
        }
