"""Broken, hostile or unreadable checkpoints and arguments give one sentence, and lose nothing."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from napari_rckd.atomic import remove_orphans
from napari_rckd.errors import RckdError
from napari_rckd.models import load_checkpoint
from napari_rckd.models.weights import CHECKPOINT_FORMAT, read_weights, write_checkpoint_file
from napari_rckd.training import FitConfig, fit
from napari_rckd.training.checkpointing import TrainState, load_state, save_state, save_weights
from napari_rckd.training.loop import TrainingDiverged
from synthetic_training import DarkPixelTiles, tiny_dense_model

GOOD_CONFIG = {"task": "dense", "backbone": "resnet18", "num_outputs": 1, "input_mpp": 0.5}


def _checkpoint(path, **changes):
    metadata = {"format": CHECKPOINT_FORMAT, "format_version": 1, "config": dict(GOOD_CONFIG)}
    for key, value in changes.items():
        target, key = (
            (metadata["config"], key[7:]) if key.startswith("config_") else (metadata, key)
        )
        if value is None:
            del target[key]
        else:
            target[key] = value
    write_checkpoint_file(path, {"w": torch.zeros(2)}, metadata)
    return path


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"format_version": "1"}, "format_version must be a positive integer"),
        ({"config": None}, "lacks config"),
        ({"config": [1, 2]}, "config must be a JSON object"),
        ({"config_input_mpp": "NaN"}, "config.input_mpp must be µm per pixel"),
        ({"config_input_mpp": float("inf")}, "config.input_mpp must be µm per pixel"),
        ({"config_num_outputs": 10**9}, "config.num_outputs must be an integer from 1"),
        ({"config_num_outputs": None}, "lacks config.num_outputs"),
        ({"config_mean": [0.5, "x", 0.5]}, "config.mean must be three finite numbers"),
        ({"config_decoder": "huge"}, "config.decoder must be one of standard, light"),
    ],
)
def test_checkpoint_header_is_checked_key_by_key(tmp_path, changes, key):
    path = _checkpoint(tmp_path / "model.safetensors", **changes)
    with pytest.raises(RckdError, match=key) as raised:
        load_checkpoint(path)
    assert "\n" not in str(raised.value) and "model.safetensors" in str(raised.value)


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless here; a real attack would run a shell


def test_malicious_state_is_refused_without_suggesting_weights_only_false(tmp_path):
    path = tmp_path / "last.state.pt"
    torch.save({"train_state": {}, "optimizer": Payload()}, path)
    with pytest.raises(RckdError, match="holds objects other than tensors") as raised:
        load_state(path)
    message = str(raised.value)
    assert "weights_only" not in message and "\n" not in message


def test_damaged_and_foreign_states_are_named(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RckdError, match="bad.pt is damaged"):
        load_state(tmp_path / "bad.pt")
    torch.save({"train_state": {"stepp": 3}, "optimizer": {}}, tmp_path / "other.pt")
    with pytest.raises(RckdError, match="is not one napari-rckd wrote"):
        load_state(tmp_path / "other.pt")


def test_a_pipe_is_not_read_or_called_empty(tmp_path):
    os.mkfifo(tmp_path / "last.state.pt")
    os.mkfifo(tmp_path / "model.safetensors")
    with pytest.raises(RckdError, match="is not a regular file"):
        load_state(tmp_path / "last.state.pt")
    with pytest.raises(RckdError, match="is not a regular file"):
        read_weights(tmp_path / "model.safetensors")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied_is_not_called_corrupt(tmp_path):
    path = _checkpoint(tmp_path / "model.safetensors")
    path.chmod(0)
    with pytest.raises(RckdError, match="permission denied"):
        read_weights(path)


def test_permission_denied_is_named_even_when_tests_run_as_root(tmp_path, monkeypatch):
    """Root reads any file, so CI simulates what the operating system tells a user."""
    path = _checkpoint(tmp_path / "model.safetensors")
    torch.save({"train_state": {}, "optimizer": {}}, tmp_path / "last.state.pt")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(RckdError, match="weights file .* cannot be read: permission denied"):
        read_weights(path)
    with pytest.raises(RckdError, match="trainer state .* cannot be read: permission denied"):
        load_state(tmp_path / "last.state.pt")


def test_weights_and_state_get_the_same_usual_mode(tmp_path):
    torch.manual_seed(0)
    model = tiny_dense_model()
    save_weights(tmp_path / "last.safetensors", model, {})
    optimizer = torch.optim.AdamW(model.parameters())
    save_state(tmp_path / "last.state.pt", TrainState(), optimizer, {}, [])
    umask = os.umask(0)
    os.umask(umask)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {0o666 & ~umask}


def test_orphan_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".last.state.pt.999999999.1.0123abcd.tmp"
    alive = tmp_path / f".last.safetensors.{os.getpid()}.1.4567abcd.tmp"
    mine = tmp_path / ".notes.tmp"
    for path in (dead, alive, mine):
        path.write_bytes(b"half")
    assert remove_orphans(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, mine.name])


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1.0, 0.0, 1e300])
def test_fit_config_refuses_impossible_learning_rates(lr):
    with pytest.raises(RckdError, match="FitConfig.lr must be positive and at most 10"):
        FitConfig(steps=1, lr=lr)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--lr", "1e300"], "argument --lr: must be at most 10"),
        (["--lr", "nan"], "argument --lr: must be a finite number above 0"),
        (["--lr", "-1"], "argument --lr: must be a finite number above 0"),
        (["--tiles", "0"], "argument --tiles: must be a whole number of at least 1"),
        (["--batch-size", "-4"], "argument --batch-size: must be a whole number"),
    ],
)
def test_pretrain_refuses_bad_numbers_before_writing_into_out(tmp_path, capsys, flag, message):
    from napari_rckd.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        main(["pretrain", str(tmp_path), "--out", str(out), "--steps", "2", *flag])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_optimizer_overflow_is_divergence_naming_the_flag(tmp_path, monkeypatch):
    from napari_rckd.training.tasks import DistillationTask

    def overflow(self, closure=None):
        raise RuntimeError("value cannot be converted to type float without overflow")

    monkeypatch.setattr(torch.optim.AdamW, "step", overflow)
    torch.manual_seed(0)
    config = FitConfig(steps=4, batch_size=4, device="cpu", tensorboard=False)
    with pytest.raises(TrainingDiverged, match="the optimizer step overflowed.*--lr"):
        fit(DistillationTask(tiny_dense_model()), DarkPixelTiles(8), None, config, tmp_path)
