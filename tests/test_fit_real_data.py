"""`fit` with the project's real models on real pathology pixels (skipped without ../shared/data).

Stage 1 learns per-pixel nuclear masks of CPM-15 images (ground-truth masks stand in for a
teacher's response here, so the test needs no teacher); stage 2 classifies the colorectal
tissue tiles of CRC-VAL-HE-7K. Inputs are kept small (64 and 32 px) for a 2-core CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from skimage.io import imread
from torch.utils.data import TensorDataset

from conftest import shared_path
from napari_rckd.models import Classifier, DenseModel, ModelConfig, create_model, load_checkpoint
from napari_rckd.training import Callback, ClassificationTask, DistillationTask, FitConfig, fit

CRC_CLASSES = ["ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on this shared 2-core machine, two threads run up to 20× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class DictDataset(TensorDataset):
    """TensorDataset that yields the dicts of tensors the tasks expect."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        super().__init__(*tensors.values())
        self.keys = list(tensors)

    def __getitem__(self, index: int) -> dict:
        return dict(zip(self.keys, super().__getitem__(index), strict=True))


def nuclei_crops(names: list[str], size: int = 64, per_image: int = 6) -> DictDataset:
    """Crops of CPM-15 images with their nuclear masks as a 1-channel target."""
    folder = shared_path("nuclei/cpm15")
    images, targets = [], []
    for name in names:
        image = imread(folder / f"{name}.png")[..., :3]
        labels = tifffile.imread(folder / f"{name}_label.tif")
        for index in range(per_image):
            y = (index * 61) % (image.shape[0] - size)
            x = (index * 97) % (image.shape[1] - size)
            images.append(torch.from_numpy(image[y : y + size, x : x + size].copy()))
            targets.append(
                torch.from_numpy((labels[y : y + size, x : x + size] > 0).astype(np.float32))
            )
    image_tensor = torch.stack(images).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
    return DictDataset(image=image_tensor, target=torch.stack(targets)[:, None])


def crc_tiles(size: int = 32) -> tuple[DictDataset, DictDataset]:
    """CRC-VAL-HE-7K tiles, labels from the file-name prefix; the first of each class validates."""
    folder = shared_path("tiles/crc-val-he-7k")
    train, val = ([], []), ([], [])
    for class_index, name in enumerate(CRC_CLASSES):
        for position, path in enumerate(sorted(folder.glob(f"{name}-*.png"))):
            tile = torch.from_numpy(imread(path)[..., :3]).permute(2, 0, 1).float()[None] / 255
            tile = F.interpolate(tile, size=(size, size), mode="area")[0]
            split = val if position == 0 else train
            split[0].append(tile)
            split[1].append(class_index)

    def as_dataset(split):
        return DictDataset(image=torch.stack(split[0]), label=torch.tensor(split[1]))

    return as_dataset(train), as_dataset(val)


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_step(self, info) -> None:
        self.losses[info.step] = info.loss


@pytest.mark.slow
def test_stage1_resnet18_student_on_real_nuclei_checkpoints_and_resumes(tmp_path):
    torch.manual_seed(0)
    train = nuclei_crops(["image01", "image02", "image04"])
    val = nuclei_crops(["image03"], per_image=4)
    student = create_model(
        ModelConfig(task="dense", backbone="resnet18", num_outputs=1, tile_size=64)
    )
    task = DistillationTask(student)
    config = FitConfig(
        steps=8, batch_size=4, lr=1e-3, val_every=4, checkpoint_every=4, device="cpu", tensorboard=False,
        provenance={"teacher": "ground-truth masks"},
    )  # fmt: skip
    recorder = LossRecorder()
    result = fit(task, train, val, config, tmp_path, [recorder])
    assert result.status == "completed" and result.step == 8
    losses = recorder.losses
    assert np.mean([losses[s] for s in (6, 7, 8)]) < np.mean([losses[s] for s in (1, 2, 3)])
    assert 0.0 <= result.history[-1]["dice"] <= 1.0

    # The checkpoint is a project checkpoint: it loads as a dense model with our provenance.
    model, metadata = load_checkpoint(tmp_path / "last.safetensors")
    assert isinstance(model, DenseModel)
    assert metadata["provenance"]["step"] == 8
    assert metadata["provenance"]["teacher"] == "ground-truth masks"
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, task.model.state_dict()[name].cpu())

    # Asking for more steps resumes the project model from its checkpoint at step 8.
    student_again = create_model(
        ModelConfig(task="dense", backbone="resnet18", num_outputs=1, tile_size=64)
    )
    config.steps = 9
    result = fit(DistillationTask(student_again), train, val, config, tmp_path)
    assert result.step == 9 and [h["step"] for h in result.history] == [4, 8, 9]


@pytest.mark.slow
def test_stage2_resnet18_classifier_on_real_colorectal_tiles(tmp_path):
    torch.manual_seed(0)
    train, val = crc_tiles()
    model = create_model(
        ModelConfig(task="classify", backbone="resnet18", num_outputs=8, class_names=CRC_CLASSES)
    )
    task = ClassificationTask(model, num_classes=8, class_names=CRC_CLASSES, label_smoothing=0.1)
    config = FitConfig(
        steps=20, batch_size=8, lr=2e-3, val_every=10, device="cpu", tensorboard=False
    )
    result = fit(task, train, val, config, tmp_path)

    assert result.status == "completed" and result.primary_metric == "balanced_accuracy"
    metrics = result.history[-1]
    assert {f"f1/{name}" for name in CRC_CLASSES} <= set(metrics)
    assert 0.0 <= metrics["balanced_accuracy"] <= 1.0
    # On the tiles it trained on, the classifier is far above chance (1/8).
    fitted = task.evaluate(torch.utils.data.DataLoader(train, batch_size=8))
    assert fitted["accuracy"] > 0.5
    best, metadata = load_checkpoint(result.best_checkpoint)
    assert isinstance(best, Classifier) and best.config.class_names == CRC_CLASSES
    assert metadata["provenance"]["checkpoint"] == "best"
