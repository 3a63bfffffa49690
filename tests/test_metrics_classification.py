"""Classification and segmentation metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from napari_rckd.errors import RckdError
from napari_rckd.metrics.classification import (
    accuracy,
    balanced_accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    mean_iou,
    per_class_f1,
    per_class_iou,
    segmentation_report,
)

# 3 classes; true -> predicted: class 0 (4 samples): 3 right, 1 as class 1;
# class 1 (2 samples): 1 right, 1 as class 2; class 2 (0 samples), predicted once.
TARGET = torch.tensor([0, 0, 0, 0, 1, 1])
PREDICTED = torch.tensor([0, 0, 0, 1, 1, 2])


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    confusion = confusion_matrix(PREDICTED, TARGET, num_classes=3)
    assert confusion.tolist() == [[3, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert confusion.dtype == torch.int64


def test_accuracy_and_balanced_accuracy_by_hand():
    confusion = confusion_matrix(PREDICTED, TARGET, num_classes=3)
    assert accuracy(confusion) == pytest.approx(4 / 6)
    # recalls 3/4 and 1/2; class 2 has no samples and is left out
    assert balanced_accuracy(confusion) == pytest.approx((0.75 + 0.5) / 2)


def test_per_class_f1_by_hand():
    confusion = confusion_matrix(PREDICTED, TARGET, num_classes=3)
    f1 = per_class_f1(confusion)
    assert f1[0].item() == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))  # TP 3, FP 0, FN 1
    assert f1[1].item() == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # TP 1, FP 1, FN 1
    assert f1[2].item() == 0.0  # predicted once, never true: defined and zero
    assert macro_f1(confusion) == pytest.approx((6 / 7 + 0.5 + 0.0) / 3)


def test_class_neither_present_nor_predicted_is_nan_and_left_out_of_means():
    confusion = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), num_classes=4)
    assert math.isnan(per_class_f1(confusion)[3].item())
    assert macro_f1(confusion) == 1.0
    assert mean_iou(confusion) == 1.0


def test_miou_ignores_unlabelled_pixels():
    # masks use ignore_index -1 for unlabelled pixels (mask value 0 minus one)
    target = torch.tensor([[0, 0, -1], [1, 1, -1]])
    predicted = torch.tensor([[0, 1, 1], [1, 1, 0]])
    confusion = confusion_matrix(predicted, target, num_classes=2, ignore_index=-1)
    assert confusion.sum().item() == 4
    iou = per_class_iou(confusion)
    assert iou[0].item() == pytest.approx(1 / 2)  # TP 1, FN 1, FP 0
    assert iou[1].item() == pytest.approx(2 / 3)  # TP 2, FP 1
    report = segmentation_report(confusion, ["tumour", "stroma"])
    assert report["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert report["iou/stroma"] == pytest.approx(2 / 3)
    assert report["pixel_accuracy"] == pytest.approx(3 / 4)


def test_report_names_each_class():
    confusion = confusion_matrix(PREDICTED, TARGET, num_classes=3)
    report = classification_report(confusion, ["tum", "str", "nor"])
    assert set(report) == {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "f1/tum",
        "f1/str",
        "f1/nor",
    }
    with pytest.raises(RckdError, match="2 class names"):
        classification_report(confusion, ["a", "b"])


def test_label_outside_class_list_is_one_clear_error():
    with pytest.raises(RckdError, match="target class 5 is outside the 3 classes"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 5]), num_classes=3)
    with pytest.raises(RckdError, match="do not match"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), num_classes=3)


def test_empty_input_gives_nan_not_a_crash():
    confusion = confusion_matrix(torch.tensor([], dtype=torch.long), torch.tensor([]), 3)
    assert confusion.sum().item() == 0
    assert math.isnan(accuracy(confusion))
