"""``auto`` picks the nuclei model for the device and says why; any other spec is kept."""

from __future__ import annotations

import pytest

from napari_rckd.inference.nuclei_choice import choose_nuclei


def test_auto_on_cpu_is_the_builtin_teacher_with_its_reason():
    spec, note = choose_nuclei("auto", "cpu")
    assert spec == "builtin" and "learned + classical), chosen for the CPU" in note


def test_auto_on_a_gpu_is_the_student(monkeypatch):
    import napari_rckd.devices as devices

    monkeypatch.setattr(devices, "resolve_device", lambda device: "cuda:0")
    spec, note = choose_nuclei("auto", "auto")
    assert spec == "csat" and "cuda GPU" in note


@pytest.mark.parametrize("spec", ["builtin", "csat", "otsu", "model.safetensors"])
def test_a_named_model_is_kept(spec):
    assert choose_nuclei(spec, "cpu") == (spec, None)
