"""Classification and semantic-segmentation metrics, all read off one confusion matrix.

Every metric here is a function of a C×C confusion matrix (rows = true class, columns =
predicted class). Accumulating that matrix over batches, and summing it across processes
under DDP, gives exactly the metric of the whole validation set; averaging per-batch
scores would not. A class that never occurs in the targets has no recall; a class that
neither occurs nor is predicted has no F1 or IoU: those are NaN and left out of the means,
as scikit-learn's balanced accuracy does.
"""

from __future__ import annotations

import torch

from napari_rckd.errors import RckdError


def confusion_matrix(
    predicted: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """C×C int64 counts of (true class, predicted class) over all elements.

    ``predicted`` and ``target`` hold class indices of the same shape (N for tiles, N×H×W
    for masks). Elements whose target equals ``ignore_index`` (unlabelled pixels) are skipped.
    """
    if predicted.shape != target.shape:
        raise RckdError(
            f"predictions of shape {tuple(predicted.shape)} do not match targets of shape "
            f"{tuple(target.shape)}; pass one predicted class per target element"
        )
    predicted = predicted.reshape(-1).long()
    target = target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        predicted, target = predicted[keep], target[keep]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        bad = target[(target < 0) | (target >= num_classes)][0].item()
        raise RckdError(
            f"target class {bad} is outside the {num_classes} classes (0..{num_classes - 1}); "
            "check the labels against the class list"
        )
    # One bincount over (true, predicted) pairs: fast on CPU and GPU, no Python loop.
    flat = target * num_classes + predicted.clamp(0, num_classes - 1)
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator per class, NaN where the denominator is zero."""
    numerator, denominator = numerator.double(), denominator.double()
    out = torch.full_like(numerator, float("nan"))
    defined = denominator > 0
    out[defined] = numerator[defined] / denominator[defined]
    return out


def accuracy(confusion: torch.Tensor) -> float:
    """Fraction of elements whose predicted class is the true class."""
    total = confusion.sum()
    return float(confusion.diag().sum() / total) if total > 0 else float("nan")


def per_class_recall(confusion: torch.Tensor) -> torch.Tensor:
    """Recall of each class (NaN for classes absent from the targets)."""
    return _ratio(confusion.diag(), confusion.sum(dim=1))


def balanced_accuracy(confusion: torch.Tensor) -> float:
    """Mean recall over the classes present in the targets: robust to class imbalance."""
    return float(per_class_recall(confusion).nanmean())


def per_class_f1(confusion: torch.Tensor) -> torch.Tensor:
    """F1 = 2TP / (2TP + FP + FN) per class (NaN for a class neither present nor predicted)."""
    true_positive = confusion.diag()
    false_positive = confusion.sum(dim=0) - true_positive
    false_negative = confusion.sum(dim=1) - true_positive
    return _ratio(2 * true_positive, 2 * true_positive + false_positive + false_negative)


def macro_f1(confusion: torch.Tensor) -> float:
    """Unweighted mean F1 over the classes that are present or predicted."""
    return float(per_class_f1(confusion).nanmean())


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """Intersection over union TP / (TP + FP + FN) per class (NaN when undefined)."""
    true_positive = confusion.diag()
    union = confusion.sum(dim=0) + confusion.sum(dim=1) - true_positive
    return _ratio(true_positive, union)


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes that are present or predicted (the usual mIoU)."""
    return float(per_class_iou(confusion).nanmean())


def _names(num_classes: int, class_names: list[str] | tuple[str, ...] | None) -> list[str]:
    if class_names is None:
        return [str(index) for index in range(num_classes)]
    if len(class_names) != num_classes:
        raise RckdError(
            f"{len(class_names)} class names were given for {num_classes} classes; "
            "pass exactly one name per class"
        )
    return list(class_names)


def classification_report(
    confusion: torch.Tensor, class_names: list[str] | tuple[str, ...] | None = None
) -> dict[str, float]:
    """accuracy, balanced_accuracy, macro_f1 and ``f1/<class>`` for each class."""
    names = _names(confusion.shape[0], class_names)
    report = {
        "accuracy": accuracy(confusion),
        "balanced_accuracy": balanced_accuracy(confusion),
        "macro_f1": macro_f1(confusion),
    }
    report.update(
        {
            f"f1/{name}": float(value)
            for name, value in zip(names, per_class_f1(confusion), strict=True)
        }
    )
    return report


def segmentation_report(
    confusion: torch.Tensor, class_names: list[str] | tuple[str, ...] | None = None
) -> dict[str, float]:
    """miou, pixel_accuracy and ``iou/<class>`` for each class (labelled pixels only)."""
    names = _names(confusion.shape[0], class_names)
    report = {"miou": mean_iou(confusion), "pixel_accuracy": accuracy(confusion)}
    report.update(
        {
            f"iou/{name}": float(value)
            for name, value in zip(names, per_class_iou(confusion), strict=True)
        }
    )
    return report
