"""The RCKD-CSAT student ships in the package: timm, teachers and stage 2 load it offline."""

from __future__ import annotations

import pytest
import timm
import torch

import napari_rckd.models  # noqa: F401  (registers rckd_csat)
from napari_rckd.errors import RckdError
from napari_rckd.models.shipped import shipped_weights
from napari_rckd.models.weights import read_weights
from napari_rckd.teachers import get_teacher
from napari_rckd.training.initial import resolve_init


def test_timm_pretrained_loads_the_shipped_student_with_a_fresh_head():
    model = timm.create_model("rckd_csat", pretrained=True, num_classes=3)
    tensors, metadata = read_weights(shipped_weights("csat", stage2=True))
    stem = tensors["backbone.stem_0.weight"].float()
    assert torch.equal(model.stem[0].weight.detach(), stem)
    assert model.get_classifier().out_features == 3
    assert model.pretrained_cfg["tag"] == "rckd_stage1"
    assert metadata["provenance"]["stage"] == "rckd-stage1"
    assert "non-commercial" in metadata["provenance"]["licence"]
    assert "LC25000" in metadata["provenance"]["training_data"]


def test_stage_2_starts_from_csat_unless_told_otherwise():
    assert resolve_init(None, None).name == "csat"
    assert resolve_init(None, "rckd_csat").path == shipped_weights("csat", stage2=True)
    assert resolve_init(None, "resnet18").name == "none"  # no ResNet student ships
    assert resolve_init("none", None).path is None


def test_missing_csat_weights_are_one_sentence(monkeypatch, tmp_path):
    from napari_rckd.models import shipped

    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    for load in (
        lambda: timm.create_model("rckd_csat", pretrained=True),
        lambda: get_teacher("csat"),
        lambda: resolve_init(None, None),
    ):
        with pytest.raises(RckdError, match=r"rckd-csat-stage1.safetensors are missing.*reinstall"):
            load()


def test_csat_by_name_and_by_file_run_one_batched_path(crop_path, monkeypatch):
    import numpy as np

    from napari_rckd.inference.sources import NucleiSource
    from napari_rckd.io import open_slide
    from napari_rckd.models.runner import ModelRunner

    calls = []
    forward = ModelRunner.forward
    monkeypatch.setattr(
        ModelRunner, "forward", lambda self, batch: calls.append(len(batch)) or forward(self, batch)
    )
    by_name, by_file = NucleiSource("csat", "cpu"), NucleiSource(shipped_weights("csat"), "cpu")
    for source in (by_name, by_file):
        assert isinstance(source.runner, ModelRunner) and source.runner is source.teacher.runner
    assert (by_name.mpp, by_name.core, by_name.halo) == (by_file.mpp, by_file.core, by_file.halo)
    with open_slide(crop_path, mpp=0.5) as slide:
        size = by_name.window
        windows = np.stack([slide.read_region(0, 0, x, size, size) for x in (0, 300)])
    named, filed = by_name.predict(windows), by_file.predict(windows)
    assert calls == [2, 2]  # one model call per batch of two windows, by either spec
    for a, b in zip(named, filed, strict=True):
        np.testing.assert_array_equal(a["nuclei_prob"], b["nuclei_prob"])
        np.testing.assert_array_equal(a["nuclei_labels"], b["nuclei_labels"])
        assert a["nuclei_labels"].max() > 5  # real nuclei were found
