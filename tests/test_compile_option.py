"""`--compile` reaches torch.compile wherever it is offered: predict (every network source,
once, shared by later slides) and stage 2 training (finetune, bench transfer). torch.compile
is replaced by a recorder here; compiling for real takes minutes on this CPU, and its speed
is measured by `bench models --compile` (docs/performance.md)."""

from __future__ import annotations

import json

import pytest

from grouped_tiles import make_grouped_folder
from napari_rckd.cli import main
from test_predict import checkpoints  # noqa: F401  (fixtures)


@pytest.fixture
def compiled(monkeypatch):
    import torch

    calls = []

    def record(module, **options):
        calls.append((type(module).__name__, options))
        return module

    monkeypatch.setattr(torch, "compile", record)
    return calls


def test_predict_compiles_each_network_source_once(
    tmp_path,
    crop_path,
    checkpoints,  # noqa: F811
    compiled,
    capsys,
):
    out = tmp_path / "out"
    argv = ["predict", str(crop_path), "--slide-mpp", "0.499", "--out", str(out)]
    argv += ["--region", str(checkpoints["region"]), "--nuclei", "classical", "--export", "csv"]
    assert main([*argv, "--compile"]) == 0
    # the region checkpoint compiles; the classical nuclei detector has no network
    assert [options for _, options in compiled] == [{"dynamic": False}]
    assert "torch.compile: 1 model(s)" in capsys.readouterr().out
    assert (out / "crop.zarr").is_dir()


def test_stage2_training_compiles_its_step(tmp_path, compiled):
    folder = make_grouped_folder(tmp_path / "tiles")
    args = ["bench", "transfer", "--train", str(folder), "--inits", "none", "--folds", "2"]
    args += ["--budgets", "1", "--seeds", "1", "--steps", "2", "--tile-size", "32"]
    args += ["--batch-size", "4", "--device", "cpu", "--json", str(tmp_path / "t.json")]
    assert main([*args, "--compile"]) == 0
    assert len(compiled) == 2 and all(o == {"dynamic": False} for _, o in compiled)  # 2 folds
    assert json.loads((tmp_path / "t.json").read_text())["settings"]["compile"] is True
    compiled.clear()
    assert main([*args[:-1], str(tmp_path / "u.json")]) == 0
    assert compiled == []  # off by default
