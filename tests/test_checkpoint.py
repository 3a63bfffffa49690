"""Checkpoints: safetensors + JSON metadata, safe loading, backbones moved between heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from skimage.io import imread

from conftest import shared_path
from napari_rckd import __version__
from napari_rckd.errors import RckdError
from napari_rckd.models import (
    ModelConfig,
    create_model,
    load_backbone,
    load_checkpoint,
    save_checkpoint,
)
from napari_rckd.models.weights import METADATA_KEY, write_checkpoint_file

PROVENANCE = {"teacher": "builtin v1", "data": ["cmu-1"], "steps": 120, "metrics": {"dice": 0.71}}


def _dense(backbone: str = "rckd_csat", seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(
        task="dense", backbone=backbone, num_outputs=2, class_names=["nucleus", "boundary"]
    )
    return create_model(config).eval()


def test_round_trip_gives_identical_outputs_on_a_real_tile(tmp_path):
    tile = imread(sorted(shared_path("tiles/crc-val-he-7k").glob("TUM*.png"))[0])[..., :3]
    x = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)[None].float() / 255
    model = _dense()
    path = save_checkpoint(tmp_path / "stage1.safetensors", model, PROVENANCE)
    loaded, metadata = load_checkpoint(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.config == model.config
    assert metadata["provenance"] == PROVENANCE
    assert metadata["package_version"] == __version__
    assert metadata["config"]["class_names"] == ["nucleus", "boundary"]


def test_classifier_round_trip_from_channels_last_model(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(task="classify", backbone="resnet18", num_outputs=3, tile_size=224)
    model = create_model(config).eval().to(memory_format=torch.channels_last)
    path = save_checkpoint(tmp_path / "clf.safetensors", model, {})
    loaded, _ = load_checkpoint(path)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded.eval()(x), atol=1e-6)


def test_file_is_one_safetensors_with_readable_header(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _dense(), PROVENANCE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp left
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()[METADATA_KEY])
    assert header["format"] == "napari-rckd-checkpoint" and header["format_version"] == 1
    assert header["config"]["backbone"] == "rckd_csat"
    assert header["config"]["input_mpp"] == 0.5


def test_overwrite_replaces_atomically(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _dense(seed=0), {"steps": 1})
    save_checkpoint(path, _dense(seed=1), {"steps": 2})
    assert load_checkpoint(path)[1]["provenance"] == {"steps": 2}
    assert len(list(tmp_path.iterdir())) == 1


def test_provenance_must_be_json(tmp_path):
    with pytest.raises(RckdError, match="plain JSON"):
        save_checkpoint(tmp_path / "m.safetensors", _dense(), {"when": object()})


class _TouchesFile:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    _TouchesFile.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": _TouchesFile()}, "metadata": {}}, path)
    with pytest.raises(RckdError, match=r"refused to load .*evil\.pt.*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_torch_checkpoint_loads_with_weights_only(tmp_path):
    model = _dense(backbone="resnet18")
    metadata = {"format": "napari-rckd-checkpoint", "format_version": 1}
    metadata["config"] = model.config.to_dict()
    path = tmp_path / "m.pth"
    torch.save({"state_dict": model.state_dict(), "metadata": metadata}, path)
    loaded, _ = load_checkpoint(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    model = _dense()
    metadata = {"format": "napari-rckd-checkpoint", "format_version": 1, "provenance": {}}
    metadata["config"] = dict(model.config.to_dict(), backbone="resnet18")
    path = tmp_path / "mislabelled.safetensors"
    write_checkpoint_file(path, dict(model.state_dict()), metadata)
    with pytest.raises(RckdError, match="does not fit a dense model.*another architecture"):
        load_checkpoint(path)


def test_safetensors_without_metadata_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(RckdError, match="no napari-rckd metadata"):
        load_checkpoint(path)
    with pytest.raises(RckdError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RckdError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")


def test_stage1_backbone_loads_into_a_classifier(tmp_path):
    stage1 = _dense(seed=0)
    path = save_checkpoint(tmp_path / "stage1.safetensors", stage1, PROVENANCE)
    torch.manual_seed(5)
    classifier = create_model(ModelConfig(task="classify", num_outputs=4)).eval()
    head_before = classifier.head.fc.weight.clone()
    metadata = load_backbone(classifier, path)
    assert metadata["provenance"] == PROVENANCE
    for name, tensor in stage1.backbone.state_dict().items():
        assert torch.equal(classifier.backbone.state_dict()[name], tensor), name
    assert torch.equal(classifier.head.fc.weight, head_before)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert all(
            torch.equal(a, b)
            for a, b in zip(stage1.backbone(x), classifier.backbone(x), strict=True)
        )


def test_backbone_of_another_kind_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "stage1.safetensors", _dense(), {})
    resnet = create_model(ModelConfig(task="classify", backbone="resnet18", num_outputs=2))
    with pytest.raises(RckdError, match="has backbone 'rckd_csat' but the model has 'resnet18'"):
        load_backbone(resnet, path)


def test_checkpoint_is_refused_as_imagenet_weights(tmp_path):
    path = save_checkpoint(tmp_path / "stage1.safetensors", _dense(), {})
    with pytest.raises(RckdError, match="load_backbone"):
        create_model(ModelConfig(task="classify"), pretrained=path)
