"""Batch norms folded into convolutions for inference: the same answers with fewer ops, and a
model whose registration order is not its dataflow left as it was."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from napari_rckd.models.fusion import fold_batch_norms  # noqa: E402


def _trained_norms(model):
    """Batch norms with statistics and affine terms far from the identity, as after training."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(channels, generator=generator))
            module.bias.data.copy_(torch.randn(channels, generator=generator))
    return model.eval()


def _norms(model) -> int:
    return sum(type(module) is nn.BatchNorm2d for module in model.modules())


class _Block(nn.Module):
    """Attributes in forward order, as timm's residual blocks register them."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class _Misleading(nn.Module):
    """A norm registered right after a convolution but applied to the block's input."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_folded_model_answers_the_same_with_no_norm_left():
    model = _trained_norms(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), _Block())
    )
    folded = fold_batch_norms(model)
    assert folded is not model and _norms(model) == 3 and _norms(folded) == 0
    image = torch.rand(2, 3, 40, 48)
    with torch.inference_mode():
        assert torch.allclose(model(image), folded(image), rtol=1e-4, atol=1e-4)


def test_a_pair_that_is_not_adjacent_in_forward_is_not_folded():
    model = _trained_norms(_Misleading())
    assert fold_batch_norms(model) is model


def test_norms_with_an_activation_inside_and_torchscript_are_left_alone():
    from timm.layers import BatchNormAct2d

    with_act = _trained_norms(nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4)))
    assert fold_batch_norms(with_act) is with_act
    scripted = torch.jit.script(
        _trained_norms(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    )
    assert fold_batch_norms(scripted) is scripted


def test_the_learned_teacher_runs_folded_and_answers_as_before():
    from napari_rckd.models import load_checkpoint
    from napari_rckd.teachers import get_teacher

    teacher = get_teacher("learned", device="cpu")
    unfolded, _ = load_checkpoint(teacher.path)
    # one norm is left: it follows a Sequential, not a Conv2d
    assert _norms(unfolded) > 10 and _norms(teacher.runner.model) == 1
    tiles = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    images = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        expected = unfolded.eval()(images).numpy()
    assert np.allclose(teacher.runner(tiles), expected, rtol=1e-3, atol=1e-3)
