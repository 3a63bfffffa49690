"""CSAT in timm: budget, sizes, features, and timm's model interface."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers.grn import GlobalResponseNorm
from torch.utils.flop_counter import FlopCounterMode

import napari_rckd.models  # noqa: F401  (registers rckd_csat)
from napari_rckd.models.csat import Csat, NhwcGlobalResponseNorm, SpatialAttentionGate


@pytest.fixture(scope="module")
def csat() -> Csat:
    torch.manual_seed(0)
    return timm.create_model("rckd_csat").eval()


def test_registered_without_replacing_timms_csatv2(csat):
    assert "rckd_csat" in timm.list_models("rckd_*")
    assert type(csat).__name__ == "Csat"
    assert type(timm.create_model("csatv2")).__name__ != "Csat"


def test_parameter_budget_with_1000_class_head(csat):
    params = sum(p.numel() for p in csat.parameters())
    assert csat.get_classifier().out_features == 1000
    assert 2.85e6 <= params <= 3.15e6, params


def test_mac_budget_at_224(csat):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        csat(torch.zeros(1, 3, 224, 224))
    macs = counter.get_total_flops() / 2
    assert 1.026e9 <= macs <= 1.134e9, macs


def test_last_stage_width_and_head(csat):
    assert csat.num_features == 176
    names = [type(m).__name__ for m in csat.head.children()]
    assert "SelectAdaptivePool2d" in names and "LayerNorm2d" in names and "Linear" in names


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (512, 512), (192, 320)])
def test_forward_backward_finite(size):
    torch.manual_seed(0)
    model = timm.create_model("rckd_csat", num_classes=3, ls_init_value=1.0).train()
    logits = model(torch.rand(1, 3, *size))
    assert logits.shape == (1, 3)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in model.stages[3].blocks[-1].attn.qkv.weight.grad)


def test_features_only_channels_and_reductions_match_outputs():
    extractor = timm.create_model("rckd_csat", features_only=True).eval()
    x = torch.rand(1, 3, 224, 320)
    with torch.no_grad():
        features = extractor(x)
    assert extractor.feature_info.channels() == [64, 104, 136, 176]
    assert extractor.feature_info.reduction() == [4, 8, 16, 32]
    for feature, chs, red in zip(
        features, extractor.feature_info.channels(), extractor.feature_info.reduction(), strict=True
    ):
        assert feature.shape == (1, chs, 224 // red, 320 // red)


def test_forward_intermediates_matches_forward_features(csat):
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        final, intermediates = csat.forward_intermediates(x)
        assert torch.allclose(final, csat.forward_features(x))
        assert [t.shape[1] for t in intermediates] == [64, 104, 136, 176]
        early = csat.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        assert torch.allclose(early[0], intermediates[1])


def test_reset_classifier_and_pooled_features():
    model = timm.create_model("rckd_csat").eval()
    model.reset_classifier(7)
    assert model(torch.rand(2, 3, 224, 224)).shape == (2, 7)
    model.reset_classifier(0)
    assert model(torch.rand(2, 3, 224, 224)).shape == (2, 176)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model("rckd_csat", num_classes=2, ls_init_value=1.0).train()
    x = torch.rand(1, 3, 224, 224)
    model(x).sum().backward()
    plain = model.stem[0].weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.stages)
    model(x).sum().backward()
    assert torch.allclose(model.stem[0].weight.grad, plain, atol=1e-6)


def test_channels_last_gives_same_output(csat):
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        reference = csat(x)
        csat.to(memory_format=torch.channels_last)
        x_cl = x.to(memory_format=torch.channels_last)
        fast = csat(x_cl)
        stages = csat.forward_intermediates(x_cl, intermediates_only=True)
    csat.to(memory_format=torch.contiguous_format)
    assert torch.allclose(reference, fast, atol=1e-4)
    # no block silently converts back to NCHW (which would undo the speed-up)
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in stages)


def test_spatial_gate_is_a_content_dependent_map():
    torch.manual_seed(0)
    gate = SpatialAttentionGate(cell_size=4, token_dim=16).eval()
    assert gate.embed.out_channels >= 8
    x = torch.randn(2, 32, 28, 36)
    x[1, :, :14] += 3.0  # a bright upper half in the second image
    with torch.no_grad():
        g = gate(x)
    assert g.shape == (2, 1, 28, 36)
    assert (g > 0).all() and (g < 1).all()
    assert g.std() > 1e-4
    assert not torch.allclose(g[0], g[1])


def test_prune_intermediate_layers_keeps_early_stages():
    model = timm.create_model("rckd_csat")
    model.prune_intermediate_layers(indices=[1])
    assert len(model.stages) == 2 and model.num_features == 104


def test_fast_grn_matches_timms_grn():
    torch.manual_seed(0)
    reference = GlobalResponseNorm(32)
    torch.nn.init.normal_(reference.weight)
    torch.nn.init.normal_(reference.bias)
    fast = NhwcGlobalResponseNorm(32)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, 7, 9, 32)  # (B, H, W, C)
    assert torch.allclose(fast(x), reference(x), atol=1e-5)


def test_grn_gradient_is_finite_when_a_channel_is_zero_everywhere():
    """A channel that is zero over a whole image must not make the gradients NaN."""
    import torch

    from napari_rckd.models.csat import NhwcGlobalResponseNorm

    grn = NhwcGlobalResponseNorm(8, channels_last=True)
    torch.nn.init.normal_(grn.weight)
    x = torch.randn(2, 4, 4, 8)
    x[..., 3] = 0  # one dead channel
    x.requires_grad_(True)
    grn(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(grn.weight.grad).all()
