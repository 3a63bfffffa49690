"""What every task shares: the model it trains, batch transfer, validation accumulation.

A task turns a batch (a dict of tensors from a dataset) into ``{"loss", "output", ...}``
and a validation loader into metrics. Validation sums counts (confusion matrices, Dice
numerators) rather than averaging per-batch scores, so the result is the exact metric of
the whole set, and summing those counts across processes makes it exact under DDP too.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from napari_rckd.errors import RckdError
from napari_rckd.training.distributed import all_reduce_sum


def move_batch(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """The batch's tensors on ``device`` (image batches channels_last when asked)."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            # non_blocking overlaps the copy with compute when the loader pins memory
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


def soft_dice(
    probability: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...]
) -> torch.Tensor:
    """Soft Dice 2Σpt / (Σp + Σt) summed over ``dims``; 1 when both are empty."""
    intersection = (probability * target).sum(dims)
    total = probability.sum(dims) + target.sum(dims)
    return (2 * intersection + 1.0) / (total + 1.0)


class Task(nn.Module):
    """Base of the training objectives: owns ``model``, names its primary metric.

    Subclasses implement ``forward(batch)``, ``validation_sums(batch)`` (tensors to add up
    over the validation set) and ``summarise(sums)`` (those totals -> metrics).
    """

    primary_metric = "loss"
    mode = "min"  # "max" when a larger primary metric is better

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def validation_sums(self, batch: dict) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def summarise(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def is_better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the primary metric beats ``best`` (None: nothing yet)."""
        if best is None:
            return value == value  # a NaN never counts as an improvement
        return value > best if self.mode == "max" else value < best

    @torch.no_grad()
    def evaluate(self, loader: Iterable[dict]) -> dict[str, float]:
        """Metrics over the whole loader, summed across processes under DDP."""
        was_training = self.training
        self.eval()
        device = next(self.model.parameters()).device
        totals: dict[str, torch.Tensor] = {}
        try:
            for batch in loader:
                sums = self.validation_sums(move_batch(batch, device))
                for key, value in sums.items():
                    totals[key] = totals[key] + value if key in totals else value.detach().clone()
        finally:
            self.train(was_training)
        # Reduce in a fixed key order so every rank issues the same collectives.
        for key in sorted(totals):
            all_reduce_sum(totals[key])
        return self.summarise(totals) if totals else {}


def check_class_count(logits: torch.Tensor, num_classes: int) -> None:
    """The model must predict one channel per class; say what to change when it does not."""
    if logits.shape[1] != num_classes:
        raise RckdError(
            f"the model predicts {logits.shape[1]} classes but the task has {num_classes}; "
            f"create the model with num_outputs={num_classes}"
        )


def check_labels(labels: torch.Tensor, low: int, high: int, what: str) -> None:
    """Labels must lie in [low, high]; a CUDA kernel would otherwise fail with a device assert."""
    if labels.numel() == 0:
        return
    smallest, largest = int(labels.min()), int(labels.max())  # CPU-GPU sync point
    if smallest < low or largest > high:
        bad = smallest if smallest < low else largest
        raise RckdError(
            f"{what} value {bad} is outside the allowed range {low}..{high}; "
            "check the labels against the class list"
        )


class ClassTask(Task):
    """A task over named classes, with optional per-class loss weights."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names=None,
        class_weights=None,
    ) -> None:
        super().__init__(model)
        self.num_classes = num_classes
        self.class_names = None if class_names is None else list(class_names)
        weights = (
            None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        )
        # A buffer follows the task to its device and is broadcast by DDP; not saved with it.
        self.register_buffer("class_weights", weights, persistent=False)
