"""Network teachers: a real scripted TorchScript model, and a saved student checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.teachers import get_teacher
from napari_rckd.teachers.evaluation import read_rgb


class DarknessModel(nn.Module):
    """Nuclei are dark: logit = 20 * (0.45 - mean RGB); optional constant boundary channel."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.mpp = 0.5
        self.conv = nn.Conv2d(3, channels, 1)
        with torch.no_grad():
            self.conv.weight.fill_(0.0)
            self.conv.weight[0].fill_(-20.0 / 3)
            self.conv.bias.fill_(-5.0)
            self.conv.bias[0] = 20 * 0.45

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class HalfSizeModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, ::2, ::2]


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    return read_rgb(shared_path("nuclei/cpm15/image02.png"))[:200, :300]  # not a multiple of 32


def scripted(tmp_path, module, name="dark.pt"):
    path = tmp_path / name
    torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.mark.parametrize("channels", [1, 2])
def test_torchscript_teacher_follows_the_contract(tmp_path, tile, channels):
    teacher = get_teacher(scripted(tmp_path, DarknessModel(channels)), device="cpu")
    assert teacher.mpp == 0.5  # read from the module's attribute
    output = teacher.predict(tile, 0.5)
    expected = 1 / (1 + np.exp(-20 * (0.45 - tile.astype(np.float32).mean(axis=2) / 255)))
    np.testing.assert_allclose(output.prob, expected, atol=1e-4)
    assert output.labels.dtype == np.int32 and output.labels.shape == tile.shape[:2]
    assert output.labels.max() >= 5
    assert (output.prob[output.labels > 0] > 0.5).all()


def test_torchscript_identity_follows_the_weights(tmp_path):
    first = get_teacher(scripted(tmp_path, DarknessModel(), "a.pt"), device="cpu")
    again = get_teacher(scripted(tmp_path, DarknessModel(), "a.pt"), device="cpu")
    other = get_teacher(scripted(tmp_path, DarknessModel(2), "b.pt"), device="cpu")
    assert first.identity == again.identity != other.identity
    assert get_teacher(tmp_path / "a.pt", mpp=0.25).identity != first.identity


def test_torchscript_output_of_the_wrong_size_is_a_clear_error(tmp_path, tile):
    teacher = get_teacher(scripted(tmp_path, HalfSizeModel(), "half.pt"), device="cpu")
    with pytest.raises(RckdError, match="must match the input's size"):
        teacher.predict(tile, 0.5)


def test_student_checkpoint_teaches(tmp_path, tile):
    from napari_rckd import models

    config = models.ModelConfig(task="dense", num_outputs=1, input_mpp=0.5)
    model = models.create_model(config)
    path = models.save_checkpoint(tmp_path / "student.safetensors", model, {"stage": "test"})
    teacher = get_teacher(path, device="cpu")
    assert teacher.name == f"student:{tmp_path.name}/student" and teacher.mpp == 0.5
    output = teacher.predict(tile, 0.25)  # a 40x tile is resampled to the student's 0.5
    assert output.prob.shape == output.labels.shape == tile.shape[:2]
    assert output.prob.dtype == np.float32 and 0 <= output.prob.min() <= output.prob.max() <= 1
    assert np.isfinite(output.prob).all() and np.ptp(output.prob) > 0  # a real network ran
    assert teacher.identity.startswith(f"{teacher.name}:")


def test_classifier_checkpoint_is_refused(tmp_path):
    from napari_rckd import models

    config = models.ModelConfig(task="classify", num_outputs=2, class_names=["a", "b"])
    path = models.save_checkpoint(
        tmp_path / "classifier.safetensors", models.create_model(config), {}
    )
    with pytest.raises(RckdError, match="dense"):
        get_teacher(path)
