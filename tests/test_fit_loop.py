"""The fit loop: files it writes, resume, cancellation, divergence, early stopping, logging."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from safetensors.torch import load_file

from napari_rckd.errors import RckdError
from napari_rckd.training import (
    Callback,
    ClassificationTask,
    DistillationTask,
    FitConfig,
    TrainingDiverged,
    fit,
    learning_rate,
)
from napari_rckd.training.checkpointing import load_state
from synthetic_training import DarkPixelTiles, LabelledTiles, tiny_classifier, tiny_dense_model


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on this shared 2-core machine, two threads run up to 20× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(**overrides) -> FitConfig:
    settings = dict(
        steps=8,
        batch_size=4,
        lr=1e-2,
        val_every=4,
        checkpoint_every=4,
        device="cpu",
        tensorboard=False,
    )
    settings.update(overrides)
    return FitConfig(**settings)


def distillation_task(seed: int = 0) -> DistillationTask:
    torch.manual_seed(seed)
    return DistillationTask(tiny_dense_model())


class Recorder(Callback):
    """Keeps what fit reported; optionally sets a stop event or raises at a given step."""

    def __init__(self, stop_at=None, stop_event=None, crash_at=None):
        self.losses, self.validations, self.checkpoints, self.ends = {}, [], [], []
        self.stop_at, self.stop_event, self.crash_at = stop_at, stop_event, crash_at

    def on_step(self, info):
        self.losses[info.step] = info.loss
        if info.step == self.stop_at:
            self.stop_event.set()
        if info.step == self.crash_at:
            raise KeyboardInterrupt  # a power cut, as far as the run is concerned

    def on_validation(self, step, metrics):
        self.validations.append((step, metrics))

    def on_checkpoint(self, step, path):
        self.checkpoints.append((step, path.name))

    def on_end(self, result):
        self.ends.append(result.status)


def test_fit_learns_and_writes_checkpoints(tmp_path):
    recorder = Recorder()
    task = distillation_task()
    config = small_config(steps=40, val_every=20, checkpoint_every=20, lr=2e-2)
    result = fit(task, DarkPixelTiles(64), DarkPixelTiles(16, seed=1), config, tmp_path, [recorder])

    assert result.status == "completed" and result.step == 40
    assert result.epoch == 40 // (64 // 4)
    assert [step for step, _ in recorder.validations] == [20, 40]
    # The student learned the teacher's "dark pixel" rule well beyond chance.
    assert result.history[-1]["dice"] > 0.8
    assert recorder.losses[40] < recorder.losses[1]
    assert result.primary_metric == "dice" and result.best_metric == max(
        h["dice"] for h in result.history
    )
    for name in ("last.safetensors", "best.safetensors", "last.state.pt"):
        assert (tmp_path / name).is_file()
    assert not list(tmp_path.glob(".*.tmp")), "temporary files must not be left behind"
    saved = load_file(tmp_path / "last.safetensors")
    assert torch.equal(saved["4.weight"], task.model.state_dict()["4.weight"].contiguous())
    state = load_state(tmp_path / "last.state.pt")  # weights_only=True inside
    assert state["train_state"].step == 40
    assert state["config"]["steps"] == 40
    assert recorder.ends == ["completed"]


def run_to_step(tmp_path, name, callbacks=(), stop_event=None, steps=8):
    task = distillation_task()
    config = small_config(steps=steps)
    result = fit(
        task,
        DarkPixelTiles(24),
        DarkPixelTiles(8, seed=1),
        config,
        tmp_path / name,
        callbacks,
        stop_event,
    )
    return task, result


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    reference = Recorder()
    reference_task, _ = run_to_step(tmp_path, "straight", [reference])

    # Crash at step 6: the last checkpoint is from step 4, so steps 5 and 6 are redone.
    crashed = Recorder(crash_at=6)
    with pytest.raises(KeyboardInterrupt):
        run_to_step(tmp_path, "crashed", [crashed])
    assert load_state(tmp_path / "crashed" / "last.state.pt")["train_state"].step == 4

    resumed = Recorder()
    resumed_task, result = run_to_step(tmp_path, "crashed", [resumed])
    assert result.status == "completed" and result.step == 8
    assert sorted(resumed.losses) == [5, 6, 7, 8]
    for step in (5, 6, 7, 8):
        assert resumed.losses[step] == pytest.approx(reference.losses[step], rel=1e-5)
    for name, value in reference_task.model.state_dict().items():
        torch.testing.assert_close(
            resumed_task.model.state_dict()[name], value, rtol=1e-5, atol=1e-6
        )
    # The validation history spans both parts of the run.
    assert [h["step"] for h in result.history] == [4, 8]


def test_stop_event_cancels_at_the_next_step_and_checkpoints(tmp_path):
    stop_event = threading.Event()
    recorder = Recorder(stop_at=3, stop_event=stop_event)
    _, result = run_to_step(tmp_path, "run", [recorder], stop_event)
    assert result.status == "cancelled"
    assert result.step == 3 and max(recorder.losses) == 3
    assert load_state(tmp_path / "run" / "last.state.pt")["train_state"].step == 3
    assert result.last_checkpoint == tmp_path / "run" / "last.safetensors"
    assert recorder.ends == ["cancelled"]

    # Fit again with the same folder continues from step 3 to the end.
    stop_event.clear()
    _, result = run_to_step(tmp_path, "run", [Recorder()], stop_event)
    assert result.status == "completed" and result.step == 8


class StopDuringValidation(torch.utils.data.Dataset):
    """Validation data that sets the stop event when its third sample is loaded."""

    def __init__(self, stop_event):
        self.tiles, self.stop_event, self.loaded = DarkPixelTiles(12, seed=1), stop_event, 0

    def __len__(self):
        return len(self.tiles)

    def __getitem__(self, index):
        self.loaded += 1
        if self.loaded == 3:
            self.stop_event.set()
        return self.tiles[index]


def test_stop_event_interrupts_validation(tmp_path):
    stop_event = threading.Event()
    val = StopDuringValidation(stop_event)
    config = small_config(val_batch_size=1)
    result = fit(
        distillation_task(), DarkPixelTiles(24), val, config, tmp_path, stop_event=stop_event
    )
    assert result.status == "cancelled" and result.step == 4
    assert val.loaded == 3, "validation went on after the stop event was set"
    assert result.history == []  # a cut-short validation is not recorded


class PoisonAfter(torch.utils.data.Dataset):
    """Training tiles that turn into NaN once ``after`` samples have been served."""

    def __init__(self, after):
        self.tiles, self.after, self.served = DarkPixelTiles(24), after, 0

    def __len__(self):
        return len(self.tiles)

    def __getitem__(self, index):
        self.served += 1
        sample = self.tiles[index]
        if self.served > self.after:
            sample = {**sample, "image": torch.full_like(sample["image"], float("nan"))}
        return sample


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    recorder = Recorder()
    config = small_config(steps=20)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 6: the loss became nan.*step 4"):
        fit(distillation_task(), PoisonAfter(after=5 * 4), None, config, tmp_path, [recorder])
    assert isinstance(TrainingDiverged("x"), RckdError)
    assert load_state(tmp_path / "last.state.pt")["train_state"].step == 4
    weights = load_file(tmp_path / "last.safetensors")
    assert all(torch.isfinite(value).all() for value in weights.values())
    assert recorder.ends == ["diverged"]


class ShuffledLabels(LabelledTiles):
    """Labels unrelated to the images: validation cannot improve, so patience runs out."""

    def __init__(self, count):
        super().__init__(count)
        self.labels = torch.randint(0, 3, (count,), generator=torch.Generator().manual_seed(5))


def test_early_stopping_on_primary_metric(tmp_path):
    torch.manual_seed(0)
    task = ClassificationTask(tiny_classifier(), num_classes=3, class_names=["r", "g", "b"])
    config = small_config(steps=200, val_every=2, patience=2, lr=1e-4)
    result = fit(task, ShuffledLabels(16), ShuffledLabels(12), config, tmp_path)
    assert result.status == "early_stopped"
    assert result.step < 200
    # the last two validations did not beat the best (a tie moves the best to the later step)
    scores = [h["balanced_accuracy"] for h in result.history]
    assert result.best_metric == max(scores) and all(s <= max(scores) for s in scores[-2:])
    assert max(scores[:-2]) == max(scores)
    best_steps = [h["step"] for h in result.history if h["balanced_accuracy"] == max(scores)]
    assert result.best_step == best_steps[-1]
    assert result.best_checkpoint == tmp_path / "best.safetensors"
    assert {"accuracy", "balanced_accuracy", "macro_f1", "f1/r"} <= set(result.history[0])


def test_tensorboard_curves_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(
        distillation_task(),
        DarkPixelTiles(24),
        DarkPixelTiles(8),
        small_config(tensorboard=True, log_every=2),
        tmp_path,
    )
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "val/dice", "val/loss"} <= set(tags)
    assert [event.step for event in events.Scalars("train/loss")] == [2, 4, 6, 8]


def test_learning_rate_warms_up_then_decays_by_cosine():
    config = FitConfig(steps=100, lr=1.0, final_lr_fraction=0.1)
    rates = [learning_rate(step, 100, 10, config) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0)
    assert rates[55] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))
    assert learning_rate(100, 100, 10, config) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs steps or epochs"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"steps": 5, "lr": -1.0}, "lr must be positive"),
        ({"steps": 5, "device": "tpu"}, "device 'tpu' is not one of"),
        ({"steps": 5, "grad_clip": 0.0}, "grad_clip must be positive"),
    ],
)
def test_bad_config_is_one_clear_error(settings, message):
    with pytest.raises(RckdError, match=message):
        FitConfig(**settings)


def test_bad_data_is_one_clear_error(tmp_path):
    with pytest.raises(RckdError, match="3 samples, fewer than one batch of 4"):
        fit(distillation_task(), DarkPixelTiles(3), None, small_config(), tmp_path / "a")
    with pytest.raises(RckdError, match="training set is empty"):
        fit(distillation_task(), DarkPixelTiles(0), None, small_config(), tmp_path / "b")
    with pytest.raises(RckdError, match="predicts .* create the dense model with num_outputs=1"):
        torch.manual_seed(0)
        fit(
            DistillationTask(tiny_dense_model(outputs=2)),
            DarkPixelTiles(8),
            None,
            small_config(),
            tmp_path / "c",
        )


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    run_to_step(tmp_path, "run", steps=4)
    config = small_config(resume=False)
    with pytest.raises(RckdError, match="already holds a training run"):
        fit(distillation_task(), DarkPixelTiles(24), None, config, tmp_path / "run")


def test_epochs_set_the_length_of_the_run(tmp_path):
    config = small_config(steps=None, epochs=2)
    result = fit(distillation_task(), DarkPixelTiles(24), None, config, tmp_path)
    assert result.step == 2 * (24 // 4) and result.epoch == 2
    assert result.best_checkpoint is None and result.history == []
    assert math.isfinite(result.train_loss)


def test_model_trains_in_channels_last(tmp_path):
    task = distillation_task()
    fit(task, DarkPixelTiles(8), None, small_config(steps=1), tmp_path)
    assert task.model[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
def test_cuda_run_uses_bf16_autocast_and_stays_finite(tmp_path):
    seen = []
    task = distillation_task()
    original = task.model.forward
    task.model.forward = lambda x: seen.append(torch.is_autocast_enabled("cuda")) or original(x)
    result = fit(task, DarkPixelTiles(24), DarkPixelTiles(8), small_config(device="cuda"), tmp_path)
    assert result.status == "completed" and all(seen) and seen
    assert math.isfinite(result.history[-1]["loss"])
    assert next(task.model.parameters()).device.type == "cuda"


class _WithBackbone(torch.nn.Module):
    """tiny_classifier split the way napari-rckd models are: ``backbone`` and a head."""

    def __init__(self):
        super().__init__()
        layers = list(tiny_classifier().children())
        self.backbone = torch.nn.Sequential(*layers[:2])
        self.head = torch.nn.Sequential(*layers[2:])

    def forward(self, x):
        return self.head(self.backbone(x))


@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_backbone_lr_scale_slows_only_the_backbone(tmp_path, scale, monkeypatch):
    torch.manual_seed(0)
    model = _WithBackbone()
    backbone = {id(p) for p in model.backbone.parameters()}
    steps = []  # per optimizer step: (backbone lr, other lr) of its parameter groups
    step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        lrs = {pid in backbone: g["lr"] for g in self.param_groups for pid in map(id, g["params"])}
        steps.append((lrs[True], lrs[False]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    task = ClassificationTask(model, num_classes=3, class_names=["r", "g", "b"])
    fit(task, LabelledTiles(16), None, small_config(backbone_lr_scale=scale), tmp_path)
    assert steps and all(other > 0 for _, other in steps)
    # every step, warm-up and cosine alike: the backbone at exactly `scale` times the head's lr
    assert all(mine == pytest.approx(scale * other) for mine, other in steps)
