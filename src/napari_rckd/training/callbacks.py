"""Progress hooks: `fit` reports to callbacks, which draw bars, log curves or feed a GUI.

Callbacks run on rank 0 only and must not train or stop anything themselves: to stop a
run, set the ``stop_event`` given to `fit` (a callback may hold it and set it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from napari_rckd.training.config import FitResult

log = logging.getLogger(__name__)


@dataclass
class StepInfo:
    """One optimizer step as seen by a progress display.

    ``loss`` is averaged over all processes; ``scalars`` are the task's other logged values
    (rank 0's own); ``samples_per_second`` counts the global batch over the step's wall time.
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    samples_per_second: float
    grad_norm: float | None = None
    scalars: dict[str, float] = field(default_factory=dict)


class Callback:
    """Override the hooks you need; every default does nothing."""

    def on_fit_start(self, start_step: int, total_steps: int) -> None:
        """Before the first step (``start_step`` > 0 when resuming)."""

    def on_step(self, info: StepInfo) -> None:
        """After every optimizer step."""

    def on_validation(self, step: int, metrics: dict[str, float]) -> None:
        """After each validation, with the task's metrics."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After a checkpoint file (last or best weights) has been written."""

    def on_end(self, result: FitResult) -> None:
        """When the run ends, however it ends (``result.status`` says how)."""


class CallbackList(Callback):
    """Fan one hook call out to many callbacks, in order."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_fit_start(self, start_step: int, total_steps: int) -> None:
        for callback in self.callbacks:
            callback.on_fit_start(start_step, total_steps)

    def on_step(self, info: StepInfo) -> None:
        for callback in self.callbacks:
            callback.on_step(info)

    def on_validation(self, step: int, metrics: dict[str, float]) -> None:
        for callback in self.callbacks:
            callback.on_validation(step, metrics)

    def on_checkpoint(self, step: int, path: Path) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(step, path)

    def on_end(self, result: FitResult) -> None:
        for callback in self.callbacks:
            callback.on_end(result)


class TqdmProgress(Callback):
    """A progress bar with loss, learning rate and throughput, for the command line."""

    def __init__(self, refresh_every: int = 1) -> None:
        self.refresh_every = refresh_every
        self.bar = None

    def on_fit_start(self, start_step: int, total_steps: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def on_step(self, info: StepInfo) -> None:
        self.bar.update(info.step - self.bar.n)
        if info.step % self.refresh_every == 0:
            self.bar.set_postfix(
                loss=f"{info.loss:.4f}",
                lr=f"{info.lr:.2e}",
                tiles_s=f"{info.samples_per_second:.1f}",
            )

    def on_validation(self, step: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "/" not in k)
        self.bar.write(f"step {step}: {shown}")

    def on_end(self, result: FitResult) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoardLogger(Callback):
    """Training loss, learning rate and validation metrics as TensorBoard scalars."""

    def __init__(self, log_dir: Path, log_every: int = 10) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.log_every = log_every

    def on_step(self, info: StepInfo) -> None:
        if info.step % self.log_every:
            return
        self.writer.add_scalar("train/loss", info.loss, info.step)
        self.writer.add_scalar("train/lr", info.lr, info.step)
        self.writer.add_scalar("train/samples_per_second", info.samples_per_second, info.step)
        if info.grad_norm is not None:
            self.writer.add_scalar("train/grad_norm", info.grad_norm, info.step)
        for name, value in info.scalars.items():
            self.writer.add_scalar(f"train/{name}", value, info.step)

    def on_validation(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"val/{name}", value, step)
        self.writer.flush()

    def on_end(self, result: FitResult) -> None:
        self.writer.close()


def tensorboard_logger(log_dir: Path, log_every: int) -> TensorBoardLogger | None:
    """A TensorBoard logger when tensorboard is installed, else None (it is optional)."""
    try:
        return TensorBoardLogger(log_dir, log_every)
    except ImportError:
        log.info("tensorboard is not installed; training curves are not logged to %s", log_dir)
        return None
