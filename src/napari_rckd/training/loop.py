"""`fit`: the one training loop for RCKD stage 1 (distillation) and stage 2 (fine-tuning).

It reads top to bottom: set up processes and data, build the optimizer, resume if a run
is already in out_dir, then step until done, validating and checkpointing on the way.
The task decides *what* is learned (its loss and metrics); this file decides *how*.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from timm.optim import param_groups_weight_decay
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from napari_rckd.atomic import remove_orphans
from napari_rckd.errors import RckdError
from napari_rckd.training import checkpointing, distributed
from napari_rckd.training.callbacks import Callback, CallbackList, StepInfo, tensorboard_logger
from napari_rckd.training.checkpointing import BEST_WEIGHTS, LAST_STATE, LAST_WEIGHTS, TrainState
from napari_rckd.training.config import FitConfig, FitResult
from napari_rckd.training.distributed import Runtime
from napari_rckd.training.loaders import batches_forever, make_train_loader, make_val_loader
from napari_rckd.training.tasks.base import Task, move_batch

log = logging.getLogger(__name__)


class TrainingDiverged(RckdError):
    """The loss or the gradients became NaN or infinite."""


def learning_rate(step: int, total_steps: int, warmup_steps: int, config: FitConfig) -> float:
    """Linear warm-up to ``config.lr``, then cosine decay to ``lr × final_lr_fraction``.

    A pure function of the step (as in nanoGPT) so a resumed run needs no scheduler state
    and may even be given more steps than the original.
    """
    if step < warmup_steps:
        return config.lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    floor = config.lr * config.final_lr_fraction
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def fit(
    task: Task,
    train_data: Dataset,
    val_data: Dataset | None,
    config: FitConfig,
    out_dir: str | Path,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | None = None,
) -> FitResult:
    """Train ``task`` on ``train_data``, validating on ``val_data``; see `napari_rckd.training`."""
    out_dir = Path(out_dir)
    runtime = distributed.setup(config.device)
    try:
        return _fit(task, train_data, val_data, config, out_dir, callbacks, stop_event, runtime)
    finally:
        distributed.teardown(runtime)


def _fit(task, train_data, val_data, config, out_dir, callbacks, stop_event, runtime: Runtime):
    run = _Run(task, config, out_dir, runtime, stop_event)
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for orphan in remove_orphans(out_dir):  # left by a run killed mid-write
            log.info("removed %s, left by an interrupted checkpoint write", orphan.name)

    # Seeds differ per rank so each process augments differently; the sampler's seed is
    # shared, so the ranks still split one common shuffle of the data between them.
    _seed_everything(config.seed + runtime.rank)

    # ---- data ------------------------------------------------------------------------------
    train_loader, sampler, run.steps_per_epoch = make_train_loader(train_data, config, runtime)
    val_loader = make_val_loader(val_data, config, runtime) if val_data is not None else None
    run.total_steps = config.steps or config.epochs * run.steps_per_epoch
    warmup = config.warmup_steps
    run.warmup_steps = warmup if warmup is not None else run.total_steps // 20

    # ---- model, optimizer, resume, callbacks ----------------------------------------------
    run.build_model()
    run.resume()
    run.open_hooks(callbacks)

    # ---- the loop --------------------------------------------------------------------------
    batches = batches_forever(train_loader, sampler, run.state, config)
    task.train()
    status, loss_value = "completed", None
    while run.state.step < run.total_steps:
        # Checked before fetching data, so a stop costs at most the step under way.
        if _any_rank(run.stop_event.is_set(), run.device):
            status = "cancelled"
            break
        started = time.perf_counter()
        batch = move_batch(next(batches), run.device, config.channels_last)
        loss_value = run.train_step(batch, started)
        if val_loader is not None and (
            run.state.step % config.val_every == 0 or run.state.step == run.total_steps
        ):
            metrics = _validate(task, val_loader, config, run.device, run.autocast, run.stop_event,
                                runtime)  # fmt: skip
            if metrics is None:  # cancelled during validation
                status = "cancelled"
                break
            _record_validation(task, run.state, metrics, out_dir, config, runtime, run.hooks)
        if run.state.step % config.checkpoint_every == 0 or run.state.step == run.total_steps:
            run.save_last()
        if config.patience is not None and run.state.bad_validations >= config.patience:
            log.info(
                "no improvement of %s in %d validations: stopping early",
                task.primary_metric,
                config.patience,
            )
            status = "early_stopped"
            break

    # A cancelled or early-stopped run keeps its progress; resuming continues from here.
    if run.saved_step != run.state.step:
        run.save_last()
    distributed.broadcast_buffers(task.model)  # every rank ends with the checkpointed model
    distributed.barrier()  # nobody exits while rank 0 is still writing
    final = run.result(status, loss_value)
    run.hooks.on_end(final)
    return final


class _Run:
    """The state of one `fit` call (model, optimizer, progress, callbacks, the last step
    written) and what the loop does with it: build, resume, train a step, checkpoint, report.
    Held in one object so `_fit` reads top to bottom and each piece stays short."""

    def __init__(self, task: Task, config: FitConfig, out_dir: Path, runtime: Runtime,
                 stop_event: threading.Event | None) -> None:  # fmt: skip
        self.task, self.config, self.out_dir, self.runtime = task, config, out_dir, runtime
        self.device = runtime.device
        self.stop_event = stop_event or threading.Event()
        self.state = TrainState()
        self.saved_step: int | None = None
        self.steps_per_epoch = self.total_steps = self.warmup_steps = 0
        self.trained = task  # what the step calls: the task, maybe wrapped by DDP and compiled
        self.optimizer = None
        self.autocast = contextlib.nullcontext()
        self.hooks = CallbackList([])

    def build_model(self) -> None:
        """Move the task to its device, wrap it for DDP and compile, make the optimizer."""
        task, config, device = self.task, self.config, self.device
        task.to(device)
        if config.channels_last:
            task.model.to(memory_format=torch.channels_last)  # 30-45% faster convolutions here
        # DDP wraps the whole task, so its forward (model + loss) runs under gradient sync.
        if self.runtime.distributed:
            device_ids = [device.index] if device.type == "cuda" else None
            self.trained = DistributedDataParallel(task, device_ids=device_ids)
        if config.compile:  # compiled once per input shape, on the first step that has it
            log.info("torch.compile: the first step of each batch shape compiles (~30 s on a CPU)")
            self.trained = torch.compile(self.trained, dynamic=False)
        groups = _parameter_groups(task.model, config.weight_decay, config.backbone_lr_scale)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=device.type == "cuda")
        self.autocast = _autocast(config, device)

    def resume(self) -> None:
        """Continue the run in out_dir when asked to; refuse to overwrite one otherwise."""
        if self.config.resume and (self.out_dir / LAST_STATE).exists():
            self.state = _resume(self.out_dir, self.task, self.optimizer, self.runtime)
        elif (self.out_dir / LAST_STATE).exists():
            raise RckdError(
                f"{self.out_dir} already holds a training run; resume it (resume=True) or "
                "choose a new out_dir"
            )
        self.saved_step = self.state.step if self.state.step else None

    def open_hooks(self, callbacks: Sequence[Callback]) -> None:
        """Callbacks (and TensorBoard) on rank 0, told that the run starts."""
        self.hooks = CallbackList(list(callbacks) if self.runtime.is_main else [])
        if self.runtime.is_main and self.config.tensorboard:
            logger = tensorboard_logger(self.out_dir / "tensorboard", self.config.log_every)
            self.hooks.callbacks += [logger] if logger else []
        self.hooks.on_fit_start(self.state.step, self.total_steps)

    def train_step(self, batch: dict, started: float) -> float:
        """One optimizer step on ``batch``; returns the loss (the mean over ranks), having
        counted the step and told the callbacks. Raises `TrainingDiverged` on NaN or inf."""
        config, state = self.config, self.state
        lr = learning_rate(state.step, self.total_steps, self.warmup_steps, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

        with self.autocast:
            output = self.trained(batch)
        loss = output["loss"]
        # CPU-GPU sync point, paid every step so a NaN never reaches the weights or a
        # checkpoint; the sum over ranks makes every rank see (and stop on) any rank's NaN.
        loss_value = distributed.all_reduce_sum(loss.detach().float().clone()).item()
        loss_value /= self.runtime.world_size
        if not math.isfinite(loss_value):
            self.diverged(f"the loss became {loss_value}", lr)

        loss.backward()
        grad_norm = None
        if config.grad_clip is not None:
            parameters = self.task.model.parameters()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip))
            if not math.isfinite(grad_norm):
                self.diverged(f"the gradient norm became {grad_norm}", lr)
        try:
            self.optimizer.step()
        except RuntimeError as error:  # an lr so large the update overflows (Adam: 1e300)
            if "overflow" not in str(error):
                raise
            self.diverged("the optimizer step overflowed", lr)
        self.optimizer.zero_grad(set_to_none=True)

        state.step += 1
        state.batch_in_epoch += 1
        if self.steps_per_epoch and state.batch_in_epoch == self.steps_per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        scalars = {
            k: float(v)
            for k, v in output.items()
            if k not in ("loss", "output") and isinstance(v, torch.Tensor) and v.numel() == 1
        }
        per_second = config.batch_size * self.runtime.world_size / (time.perf_counter() - started)
        self.hooks.on_step(
            StepInfo(state.step, self.total_steps, state.epoch, loss_value, lr, per_second,
                     grad_norm, scalars)
        )  # fmt: skip
        return loss_value

    def save_last(self) -> None:
        """Write last.safetensors and last.state.pt (rank 0) for this step."""
        # Every rank's RNG state is gathered (a collective), so only rank 0 writes the files.
        rng = distributed.all_gather_objects(checkpointing.capture_rng())
        state, out_dir = self.state, self.out_dir
        if self.runtime.is_main:
            provenance = _provenance(self.task, self.config, state, "last")
            checkpointing.save_weights(out_dir / LAST_WEIGHTS, self.task.model, provenance)
            checkpointing.save_state(
                out_dir / LAST_STATE, state, self.optimizer, self.config.to_dict(), rng
            )
            self.hooks.on_checkpoint(state.step, out_dir / LAST_WEIGHTS)
            log.info("step %d: checkpoint written to %s", state.step, out_dir / LAST_WEIGHTS)
        self.saved_step = state.step

    def result(self, status: str, train_loss: float | None) -> FitResult:
        state, out_dir = self.state, self.out_dir
        has_best = state.best_step is not None and (out_dir / BEST_WEIGHTS).exists()
        return FitResult(
            status=status,
            step=state.step,
            epoch=state.epoch,
            primary_metric=self.task.primary_metric,
            best_metric=state.best_metric,
            best_step=state.best_step,
            last_checkpoint=out_dir / LAST_WEIGHTS if self.saved_step is not None else None,
            best_checkpoint=out_dir / BEST_WEIGHTS if has_best else None,
            history=list(state.history),
            train_loss=train_loss,
        )

    def diverged(self, what: str, lr: float) -> None:
        """Stop the run: report to callbacks, then raise one clear sentence."""
        self.hooks.on_end(self.result("diverged", None))
        kept = (
            f"the last good checkpoint (step {self.saved_step}) is kept in {self.out_dir}"
            if self.saved_step is not None
            else "no checkpoint had been written yet"
        )
        raise TrainingDiverged(
            f"training diverged at step {self.state.step + 1}: {what} (learning rate {lr:.3g}); "
            f"{kept}; lower the learning rate (--lr, or FitConfig.lr from Python) or check the "
            "data for NaN values"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(config: FitConfig, device: torch.device):
    """bf16 autocast on CUDA GPUs that have it: no loss scaling needed, unlike fp16."""
    if config.amp and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank, so all ranks stop at the same step."""
    if not torch.distributed.is_initialized():
        return flag
    return distributed.all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0


def _until_stopped(loader: Iterable, stop_event: threading.Event) -> Iterator:
    for batch in loader:
        if stop_event.is_set():
            return
        yield batch


def _validate(task, loader, config, device, autocast, stop_event, runtime) -> dict | None:
    """The task's metrics on the validation set, or None when cancelled meanwhile."""
    distributed.broadcast_buffers(task.model)  # every rank validates the same model
    batches = (move_batch(batch, device, config.channels_last) for batch in loader)
    if not runtime.distributed:
        # Single process: stop between validation batches. Under DDP every rank must take
        # part in the metric reduction, so there a stop waits for the next step.
        batches = _until_stopped(batches, stop_event)
    with autocast:
        metrics = task.evaluate(batches)
    if stop_event.is_set() and not runtime.distributed:
        return None
    return metrics


def _record_validation(task, state: TrainState, metrics, out_dir, config, runtime, hooks) -> None:
    """Track the best primary metric; on improvement or a tie, write best.safetensors."""
    value = metrics.get(task.primary_metric)
    if value is None:
        raise RckdError(
            f"{type(task).__name__}.evaluate returned no {task.primary_metric!r}; "
            f"it returned {sorted(metrics)}"
        )
    state.history.append({"step": state.step, **metrics})
    log.info("step %d: %s", state.step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    improved = task.is_better(value, state.best_metric)
    # A tie goes to the later step: it has trained longer for the same score (and a metric
    # stuck at its ceiling would otherwise keep the earliest, least trained model). Only an
    # improvement resets the patience count.
    if improved or value == state.best_metric:
        state.best_metric, state.best_step = value, state.step
        if runtime.is_main:
            provenance = _provenance(task, config, state, "best")
            checkpointing.save_weights(out_dir / BEST_WEIGHTS, task.model, provenance)
            hooks.on_checkpoint(state.step, out_dir / BEST_WEIGHTS)
    state.bad_validations = 0 if improved else state.bad_validations + 1
    hooks.on_validation(state.step, metrics)


def _parameter_groups(model, weight_decay: float, backbone_lr_scale: float) -> list[dict]:
    """AdamW groups: no weight decay on norms and biases (1-D tensors: decaying them only
    hurts), and with ``backbone_lr_scale`` < 1 the backbone's groups learn at lr × that
    (`lr_scale`) so a pretrained encoder is adjusted, not overwritten, while the head learns."""
    if backbone_lr_scale == 1.0:
        return param_groups_weight_decay(model, weight_decay)
    groups = []
    for part, scale in ((model.backbone, backbone_lr_scale), (_without_backbone(model), 1.0)):
        for group in param_groups_weight_decay(part, weight_decay):
            if group["params"]:
                groups.append({**group, "lr_scale": scale})
    return groups


def _without_backbone(model):
    """The model's other modules (head, decoder) as one module, for parameter grouping."""
    import torch.nn as nn

    return nn.ModuleList(m for name, m in model.named_children() if name != "backbone")


def _resume(out_dir: Path, task: Task, optimizer, runtime: Runtime) -> TrainState:
    payload = checkpointing.load_state(out_dir / LAST_STATE)
    checkpointing.load_weights_into(out_dir / LAST_WEIGHTS, task.model)
    optimizer.load_state_dict(payload["optimizer"])
    rng = payload["rng"]
    if len(rng) == runtime.world_size:
        checkpointing.restore_rng(rng[runtime.rank])
    else:
        log.warning(
            "resuming on %d processes instead of %d: random streams restart",
            runtime.world_size,
            len(rng),
        )
    state = payload["train_state"]
    log.info("resuming %s at step %d", out_dir, state.step)
    return state


def _provenance(task: Task, config: FitConfig, state: TrainState, kind: str) -> dict:
    """What a checkpoint says about where it came from (kept JSON-friendly)."""
    return {
        **config.provenance,
        "checkpoint": kind,
        "task": type(task).__name__,
        "step": state.step,
        "epoch": state.epoch,
        "primary_metric": task.primary_metric,
        "best_metric": state.best_metric,
        "best_step": state.best_step,
    }
