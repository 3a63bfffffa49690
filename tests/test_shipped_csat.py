"""The RCKD-CSAT student ships in the package: timm, teachers and stage 2 load it offline."""

from __future__ import annotations

import pytest
import timm
import torch

import napari_rckd.models  # noqa: F401  (registers rckd_csat)
from napari_rckd.errors import RckdError
from napari_rckd.files import sha256_prefix
from napari_rckd.models.shipped import shipped_weights
from napari_rckd.models.weights import read_weights
from napari_rckd.teachers import get_teacher
from napari_rckd.training.initial import resolve_init
from napari_rckd.training.shipped_recipe import STUDENT_AUGMENT, STUDENT_TARGETS


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
    for load, file in (
        (lambda: timm.create_model("rckd_csat", pretrained=True), "rckd-csat-stage1"),
        (lambda: get_teacher("csat"), "rckd-csat-nuclei"),
        (lambda: resolve_init(None, None), "rckd-csat-stage1"),
    ):
        with pytest.raises(RckdError, match=rf"{file}.safetensors are missing.*reinstall"):
            load()


def test_csat_ships_a_copy_of_builtin_for_nuclei_and_of_learned_for_stage_2():
    """The two files behind one name say what each copied (docs/teachers.md)."""
    nuclei = read_weights(shipped_weights("csat"))[1]["provenance"]
    stage2 = read_weights(shipped_weights("csat", stage2=True))[1]["provenance"]
    assert nuclei["teacher"].startswith("builtin:") and nuclei["teacher"].endswith('"version": 1}')
    assert "+classical:" in nuclei["teacher"] and "+classical" not in stage2["teacher"]
    assert stage2["teacher"].startswith("learned:")
    assert "classical detector" in nuclei["training_data"]
    # each was made with the jitter the recipe now gives its student (the stage-2 start predates
    # the option, so its header has none: it had the light jitter, the only one then)
    assert nuclei["augment"] == STUDENT_AUGMENT["nuclei"] == "stain"
    assert stage2.get("augment", "light") == STUDENT_AUGMENT["stage2"] == "light"
    # and what it copies (the stage-2 start predates that option too: it copied probabilities)
    assert nuclei["targets"] == STUDENT_TARGETS["nuclei"] == "decision"
    assert stage2.get("targets", "probability") == STUDENT_TARGETS["stage2"] == "probability"
    for provenance in (nuclei, stage2):
        assert provenance["stage"] == "rckd-stage1" and provenance["dtype"] == "float16"
        assert (
            "non-commercial" in provenance["licence"] and "LC25000" in provenance["training_data"]
        )
    assert get_teacher("csat").identity.startswith("csat:" + sha256_prefix(shipped_weights("csat")))


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
