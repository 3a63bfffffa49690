"""Dense and classification models on any timm backbone; ModelConfig; ImageNet weights."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from skimage.io import imread

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.models import ModelConfig, create_backbone, create_model

BACKBONES = ["rckd_csat", "resnet18", "efficientnet_b0", "convnextv2_atto", "csatv2"]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_dense_and_classify_on_any_backbone(backbone):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 256, 192)
    dense = create_model(ModelConfig(task="dense", backbone=backbone, num_outputs=2)).eval()
    classify = create_model(ModelConfig(task="classify", backbone=backbone, num_outputs=5)).eval()
    with torch.no_grad():
        assert dense(x).shape == (2, 2, 256, 192)
        assert classify(x).shape == (2, 5)
    assert (
        dense.backbone.feature_info.channels()
        == timm.create_model(backbone, features_only=True).feature_info.channels()
    )
    assert dense.config.backbone == classify.config.backbone == backbone


def test_dense_model_trains_end_to_end_on_csat():
    torch.manual_seed(0)
    model = create_model(ModelConfig(task="dense", num_outputs=1)).train()
    logits = model(torch.rand(1, 3, 128, 128))
    logits.mean().backward()
    assert torch.isfinite(logits).all()
    assert model.head.conv.weight.grad.abs().sum() > 0
    assert model.decoder.lateral[0].weight.grad.abs().sum() > 0


def test_model_normalises_inside():
    config = ModelConfig(task="classify", backbone="resnet18", num_outputs=3, mean=(0.7, 0.5, 0.7))
    model = create_model(config).eval()
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.head(model.backbone((x - mean) / std)[-1])
        assert torch.allclose(model(x), expected)
    assert "mean" not in model.state_dict()  # rebuilt from the config, not stored twice


def test_input_size_check_says_what_works():
    model = create_model(ModelConfig(task="dense", backbone="csatv2"))
    with pytest.raises(RckdError, match=r"multiples of 64 \(e\.g\. 256×256\)"):
        model(torch.rand(1, 3, 250, 250))
    with pytest.raises(RckdError, match="B×3×H×W"):
        model(torch.rand(1, 1, 256, 256))


def test_freeze_encoder_trains_only_decoder_and_head():
    model = create_model(ModelConfig(task="dense", backbone="resnet18"))
    model.freeze_encoder()
    model.train()
    assert not model.backbone.training and model.decoder.training
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.conv.weight.grad is not None
    model.unfreeze_encoder()
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())


def test_config_is_json_and_validated():
    config = ModelConfig(task="classify", num_outputs=2, class_names=["tumour", "stroma"])
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.class_colors == ["#e6194b", "#3cb44b"] and again.input_mpp == 0.5
    assert again.tile_size == 256
    with pytest.raises(RckdError, match="class_names has 1 entries but num_outputs is 2"):
        ModelConfig(num_outputs=2, class_names=["tumour"])
    with pytest.raises(RckdError, match="task 'segment' is unknown"):
        ModelConfig(task="segment")
    with pytest.raises(RckdError, match="not '#rrggbb'"):
        ModelConfig(class_colors=["red"])
    with pytest.raises(RckdError, match="unknown fields"):
        ModelConfig.from_dict({"task": "dense", "colour": 1})


def test_unknown_backbone_is_one_clear_error():
    with pytest.raises(RckdError, match="'resnet_19' is not a timm model"):
        create_model(ModelConfig(backbone="resnet_19"))


def test_offline_imagenet_weights_say_how_to_supply_them(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RckdError, match=r"could not download .*'resnet18'.*pretrained=<path"):
        create_backbone("resnet18", pretrained=True)


def test_csat_has_no_published_weights_and_says_so():
    with pytest.raises(RckdError, match="'rckd_csat' has no ImageNet weights.*--init csat"):
        create_backbone("rckd_csat", pretrained=True)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_imagenet_weights_from_a_local_file(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model("resnet18")
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    backbone = create_backbone("resnet18", pretrained=path)
    assert torch.equal(backbone.conv1.weight, source.conv1.weight)
    assert torch.equal(backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "atto.safetensors"
    save_file(timm.create_model("convnextv2_atto").state_dict(), str(path))
    with pytest.raises(RckdError, match="does not hold weights for backbone 'resnet18'"):
        create_backbone("resnet18", pretrained=path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_pickled_code_in_imagenet_file_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": _RunsCode()}, handle)
    with pytest.raises(RckdError, match="refused to load"):
        create_backbone("resnet18", pretrained=path)


def test_real_tiles_through_dense_and_classify_models():
    folder = shared_path("tiles/crc-val-he-7k")
    paths = sorted(folder.glob("*.png"))[:2]
    tiles = np.stack([imread(p)[..., :3] for p in paths])  # 224×224 RGB at 0.5 µm/px
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    torch.manual_seed(0)
    dense = create_model(ModelConfig(task="dense", num_outputs=1)).eval()
    classify = create_model(ModelConfig(task="classify", num_outputs=8)).eval()
    with torch.no_grad():
        probability = torch.sigmoid(dense(x))
        logits = classify(x)
    assert probability.shape == (2, 1, 224, 224) and logits.shape == (2, 8)
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])  # different tissue, different output


def test_pyramid_head_pools_every_stage_and_round_trips(tmp_path):
    from napari_rckd.models import load_checkpoint, save_checkpoint

    config = ModelConfig(task="classify", backbone="resnet18", num_outputs=3, head="pyramid")
    model = create_model(config).eval()
    assert model.head.fc.in_features == sum(model.backbone.feature_info.channels())
    x = torch.rand(2, 3, 64, 64)
    path = save_checkpoint(tmp_path / "pyramid.safetensors", model, {})
    loaded, metadata = load_checkpoint(path)
    assert metadata["config"]["head"] == "pyramid"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_checkpoints_without_a_head_field_are_last_stage_classifiers():
    data = ModelConfig(task="classify", num_outputs=2).to_dict()
    del data["head"]  # written before the choice existed
    assert ModelConfig.from_dict(data).head == "last"
    with pytest.raises(RckdError, match="head 'mean' is unknown"):
        ModelConfig(task="classify", num_outputs=2, head="mean")


def test_light_decoder_is_as_wide_as_the_encoder_up_to_64(tmp_path):
    from napari_rckd.bench.models import count_macs
    from napari_rckd.models import load_checkpoint, save_checkpoint
    from napari_rckd.models.assembly import decoder_widths

    assert decoder_widths([16, 24, 40, 112, 320], "light") == [16, 24, 40, 64, 64]
    assert decoder_widths([20, 64], "light") == [24, 64]  # GroupNorm(8) needs multiples of 8
    assert decoder_widths([16, 24, 40, 112, 320], "standard") == [64] * 5
    torch.manual_seed(0)
    models = {
        kind: create_model(
            ModelConfig(task="dense", backbone="efficientnet_b0", num_outputs=2, decoder=kind)
        ).eval()
        for kind in ("standard", "light")
    }
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        assert models["light"](x).shape == (1, 2, 96, 128)
    decoder_macs = {
        kind: count_macs(m, 224, "cpu") - count_macs(m.backbone, 224, "cpu")
        for kind, m in models.items()
    }
    encoder_macs = count_macs(models["light"].backbone, 224, "cpu")
    # the bound: the decoder costs at most the encoder (standard costs 1.75x)
    assert decoder_macs["light"] < encoder_macs < decoder_macs["standard"]
    path = save_checkpoint(tmp_path / "light.safetensors", models["light"], {})
    loaded, metadata = load_checkpoint(path)
    assert metadata["config"]["decoder"] == "light"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), models["light"](x))


def test_standard_decoder_is_what_older_checkpoints_hold():
    data = ModelConfig(task="dense", num_outputs=2).to_dict()
    del data["decoder"]  # written before the choice existed
    assert ModelConfig.from_dict(data).decoder == "standard"
    with pytest.raises(RckdError, match="decoder 'tiny' is unknown"):
        ModelConfig(task="dense", decoder="tiny")
    # the same weights as before the choice: no new tensor in the standard layout, and light is
    # the same model on a backbone 64 channels wide at every level
    standard = create_model(ModelConfig(task="dense", backbone="resnet18")).state_dict()
    light = create_model(ModelConfig(task="dense", backbone="resnet18", decoder="light"))
    assert not any("narrow" in key for key in standard)
    assert {k: v.shape for k, v in standard.items()} == {
        k: v.shape for k, v in light.state_dict().items()
    }


def test_detail_decoder_starts_where_its_standard_checkpoint_was(tmp_path):
    """`detail` adds a stride-2 refiner whose last layer starts at zero: a standard model's
    weights load into it (only detail.* is new) and give the same logits, up to resampling."""
    from napari_rckd.models import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    standard = create_model(ModelConfig(task="dense", backbone="resnet18", num_outputs=2)).eval()
    detail = create_model(
        ModelConfig(task="dense", backbone="resnet18", num_outputs=2, decoder="detail")
    ).eval()
    missing, unexpected = detail.load_state_dict(standard.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("detail.") for k in missing)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        a, b = standard(x), detail(x)
    assert b.shape == a.shape == (1, 2, 64, 96)
    # bilinear twice (to stride 2, then to the input) against once: close, not identical
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()
    # it trains: the refiner's last layer gets a gradient and moves the output
    detail.train()
    detail(x).square().mean().backward()
    assert detail.detail.mix[-1].weight.grad.abs().sum() > 0
    path = save_checkpoint(tmp_path / "detail.safetensors", detail, {})
    loaded, metadata = load_checkpoint(path)
    assert metadata["config"]["decoder"] == "detail"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), detail.eval()(x))
