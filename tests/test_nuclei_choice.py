"""``auto`` picks the nuclei model for the device and says why; any other spec is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_rckd.inference.nuclei_choice import choose_nuclei


def test_auto_on_cpu_is_the_builtin_teacher_with_its_reason():
    spec, note = choose_nuclei("auto", "cpu")
    assert spec == "builtin" and "learned + classical), chosen for the CPU" in note


def _held_out_row(what: str) -> list[float]:
    """Dice, AJI, PQ of one row of the held-out side-by-side table in docs/teachers.md."""
    docs = Path(__file__).parents[1] / "docs" / "teachers.md"
    (line,) = [row for row in docs.read_text().splitlines() if f"(what `{what}` is)" in row]
    return [float(cell.split()[0].strip("*")) for cell in line.split("|")[2:5]]


def test_auto_on_cpu_says_what_the_student_trades_as_the_held_out_table_does():
    _, note = choose_nuclei("auto", "cpu")
    builtin, student = _held_out_row("builtin"), _held_out_row("csat")
    assert f"keeps {round(100 * student[0] / builtin[0])} % of its Dice" in note
    assert f"with {builtin[1] - student[1]:.2f} lower AJI" in note


def test_auto_on_a_gpu_is_the_student(monkeypatch):
    import napari_rckd.devices as devices

    monkeypatch.setattr(devices, "resolve_device", lambda device: "cuda:0")
    spec, note = choose_nuclei("auto", "auto")
    assert spec == "csat" and "cuda GPU" in note


@pytest.mark.parametrize("spec", ["builtin", "csat", "otsu", "model.safetensors"])
def test_a_named_model_is_kept(spec):
    assert choose_nuclei(spec, "cpu") == (spec, None)
