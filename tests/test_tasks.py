"""The three objectives: loss values by hand, metrics from evaluate, bad labels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_rckd.errors import RckdError
from napari_rckd.training import ClassificationTask, DistillationTask, SegmentationTask


class Fixed(nn.Module):
    """A 'model' that returns given logits, so losses can be checked by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_distillation_loss_is_bce_plus_soft_dice():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.8, 0.1]]]])
    task = DistillationTask(Fixed(logits))
    out = task({"image": torch.zeros(1, 3, 2, 2), "target": target})
    probability = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = (2 * (probability * target).sum() + 1) / (probability.sum() + target.sum() + 1)
    assert out["loss"].item() == pytest.approx((bce + 1 - dice).item(), rel=1e-6)
    assert out["output"].shape == (1, 1, 2, 2)
    out["loss"].backward()
    assert task.model.logits.grad is not None


def test_distillation_extra_channels_are_weighted():
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.stack([torch.ones(2, 2), torch.zeros(2, 2)])[None]
    only_first = DistillationTask(Fixed(logits), channel_weights=[1.0, 0.0])
    both = DistillationTask(Fixed(logits))
    batch = {"image": torch.zeros(1, 3, 2, 2), "target": target}
    first = only_first(batch)["loss"].item()
    assert first == pytest.approx(math.log(2) + 1 - (2 * 2 + 1) / (2 + 4 + 1), rel=1e-6)
    assert both(batch)["loss"].item() != pytest.approx(first)
    with pytest.raises(RckdError, match="3 channel weights for 2 target channels"):
        DistillationTask(Fixed(logits), channel_weights=[1, 1, 1])(batch)


def test_distillation_on_decisions_learns_the_teachers_nuclei_not_its_probability():
    logits = torch.tensor([[[1.0, 0.5], [-0.5, -1.0]], [[0.0, 0.0], [0.0, 0.0]]])[None]
    soft = torch.tensor([[[0.9, 0.6], [0.4, 0.1]], [[1.0, 0.0], [0.0, 1.0]]])[None]
    hard = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])[None]
    image = torch.zeros(1, 3, 2, 2)
    decided = DistillationTask(Fixed(logits), decisions=True)({"image": image, "target": soft})
    by_hand = DistillationTask(Fixed(logits))({"image": image, "target": hard})
    copied = DistillationTask(Fixed(logits))({"image": image, "target": soft})
    assert decided["loss"].item() == pytest.approx(by_hand["loss"].item(), rel=1e-6)
    assert decided["loss"].item() != pytest.approx(copied["loss"].item())


def test_distillation_evaluate_reports_dice_against_teacher():
    # student says nucleus on the left column only; teacher on the top row only
    logits = torch.tensor([[[[5.0, -5.0], [5.0, -5.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    task = DistillationTask(Fixed(logits))
    metrics = task.evaluate([{"image": torch.zeros(1, 3, 2, 2), "target": target}])
    assert metrics["dice"] == pytest.approx(2 * 1 / (2 + 2))
    assert 0 < metrics["mae"] < 1 and metrics["loss"] > 0
    assert task.training, "evaluate must restore training mode"


def test_classification_loss_weights_smoothing_and_metrics():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.2, 0.1]])
    labels = torch.tensor([0, 1, 2])
    batch = {"image": torch.zeros(3, 3, 4, 4), "label": labels}
    task = ClassificationTask(
        Fixed(logits), 3, ["tum", "str", "nor"], class_weights=[1, 2, 3], label_smoothing=0.1
    )
    expected = F.cross_entropy(
        logits, labels, weight=torch.tensor([1.0, 2, 3]), label_smoothing=0.1
    )
    out = task(batch)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["accuracy"].item() == pytest.approx(2 / 3)

    metrics = ClassificationTask(Fixed(logits), 3, ["tum", "str", "nor"]).evaluate([batch])
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["balanced_accuracy"] == pytest.approx(2 / 3)
    assert metrics["f1/nor"] == 0.0 and metrics["f1/tum"] == pytest.approx(2 / 3)


def test_classification_bad_labels_and_class_count():
    task = ClassificationTask(Fixed(torch.zeros(2, 3)), 3)
    with pytest.raises(RckdError, match="class label value 7 is outside the allowed range 0..2"):
        task({"image": torch.zeros(2, 3, 4, 4), "label": torch.tensor([0, 7])})
    with pytest.raises(RckdError, match="predicts 3 classes but the task has 4; .*num_outputs=4"):
        ClassificationTask(Fixed(torch.zeros(2, 3)), 4)(
            {"image": None, "label": torch.tensor([0, 1])}
        )


def test_segmentation_ignores_unlabelled_pixels():
    logits = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[[0, 1, 2], [0, 0, 1], [2, 2, 0]]])  # 0 = not painted
    task = SegmentationTask(Fixed(logits), 2, ["tumour", "stroma"])
    out = task({"image": torch.zeros(1, 3, 3, 3), "mask": mask})
    labelled = mask > 0
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[labelled], mask[labelled] - 1)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["labelled_fraction"].item() == pytest.approx(5 / 9)

    # Changing the logits of unpainted pixels changes nothing.
    changed = logits.clone()
    changed[:, :, ~labelled[0]] = 100.0
    again = SegmentationTask(Fixed(changed), 2)({"image": None, "mask": mask})
    assert again["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)

    metrics = task.evaluate([{"image": torch.zeros(1, 3, 3, 3), "mask": mask}])
    predicted = logits.argmax(1)[labelled]
    truth = mask[labelled] - 1
    ious = []
    for k in range(2):
        union = ((predicted == k) | (truth == k)).sum().item()
        ious.append(((predicted == k) & (truth == k)).sum().item() / union)
    assert metrics["miou"] == pytest.approx(sum(ious) / 2)
    assert metrics["iou/stroma"] == pytest.approx(ious[1])


def test_segmentation_batch_without_paint_has_zero_loss_not_nan():
    task = SegmentationTask(Fixed(torch.randn(1, 2, 4, 4)), 2, dice_weight=1.0)
    out = task({"image": None, "mask": torch.zeros(1, 4, 4, dtype=torch.long)})
    assert out["loss"].item() == 0.0
    out["loss"].backward()  # the graph is intact, as DDP needs
    with_paint = task({"image": None, "mask": torch.ones(1, 4, 4, dtype=torch.long)})
    assert math.isfinite(with_paint["loss"].item()) and with_paint["loss"].item() > 0


def test_segmentation_mask_errors():
    task = SegmentationTask(Fixed(torch.zeros(1, 2, 4, 4)), 2)
    with pytest.raises(RckdError, match="mask value 3 is outside the allowed range 0..2"):
        task({"image": None, "mask": torch.full((1, 4, 4), 3)})
    with pytest.raises(RckdError, match="predicts \\(4, 4\\) pixels but the masks are \\(8, 8\\)"):
        task({"image": None, "mask": torch.zeros(1, 8, 8, dtype=torch.long)})


def test_primary_metrics_and_directions():
    model = Fixed(torch.zeros(1))
    assert (DistillationTask.primary_metric, DistillationTask.mode) == ("dice", "max")
    assert ClassificationTask(model, 2).primary_metric == "balanced_accuracy"
    assert SegmentationTask(model, 2).primary_metric == "miou"
    task = DistillationTask(model)
    assert task.is_better(0.5, None) and task.is_better(0.6, 0.5) and not task.is_better(0.4, 0.5)
    assert not task.is_better(float("nan"), None)
