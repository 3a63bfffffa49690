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
    stop_event = stop_event or threading.Event()
    device = runtime.device
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for orphan in remove_orphans(out_dir):  # left by a run killed mid-write
            log.info("removed %s, left by an interrupted checkpoint write", orphan.name)

    # Seeds differ per rank so each process augments differently; the sampler's seed is
    # shared, so the ranks still split one common shuffle of the data between them.
    _seed_everything(config.seed + runtime.rank)

    # ---- data ------------------------------------------------------------------------------
    train_loader, sampler, steps_per_epoch = make_train_loader(train_data, config, runtime)
    val_loader = make_val_loader(val_data, config, runtime) if val_data is not None else None
    total_steps = config.steps or config.epochs * steps_per_epoch
    warmup_steps = config.warmup_steps if config.warmup_steps is not None else total_steps // 20

    # ---- model and optimizer ---------------------------------------------------------------
    task.to(device)
    if config.channels_last:
        task.model.to(memory_format=torch.channels_last)  # 30-45% faster convolutions here
    # DDP wraps the whole task, so its forward (model + loss) runs under gradient sync.
    trained = task
    if runtime.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        trained = DistributedDataParallel(task, device_ids=device_ids)
    if config.compile:  # compiled once per input shape, on the first step that has it
        log.info("torch.compile: the first step of each batch shape compiles (~30 s on a CPU)")
        trained = torch.compile(trained, dynamic=False)
    parameter_groups = _parameter_groups(task.model, config.weight_decay, config.backbone_lr_scale)
    optimizer = torch.optim.AdamW(parameter_groups, lr=config.lr, fused=device.type == "cuda")
    autocast = _autocast(config, device)

    # ---- resume ----------------------------------------------------------------------------
    state = TrainState()
    if config.resume and (out_dir / LAST_STATE).exists():
        state = _resume(out_dir, task, optimizer, runtime)
    elif (out_dir / LAST_STATE).exists():
        raise RckdError(
            f"{out_dir} already holds a training run; resume it (resume=True) or choose a new out_dir"
        )
    saved_step = state.step if state.step else None

    hooks = CallbackList(list(callbacks) if runtime.is_main else [])
    if runtime.is_main and config.tensorboard:
        logger = tensorboard_logger(out_dir / "tensorboard", config.log_every)
        hooks.callbacks += [logger] if logger else []
    hooks.on_fit_start(state.step, total_steps)

    def save_last() -> None:
        nonlocal saved_step
        # Every rank's RNG state is gathered (a collective), so only rank 0 writes the files.
        rng = distributed.all_gather_objects(checkpointing.capture_rng())
        if runtime.is_main:
            provenance = _provenance(task, config, state, "last")
            checkpointing.save_weights(out_dir / LAST_WEIGHTS, task.model, provenance)
            checkpointing.save_state(out_dir / LAST_STATE, state, optimizer, config.to_dict(), rng)
            hooks.on_checkpoint(state.step, out_dir / LAST_WEIGHTS)
            log.info("step %d: checkpoint written to %s", state.step, out_dir / LAST_WEIGHTS)
        saved_step = state.step

    def result(status: str, train_loss: float | None) -> FitResult:
        has_best = state.best_step is not None and (out_dir / BEST_WEIGHTS).exists()
        return FitResult(
            status=status,
            step=state.step,
            epoch=state.epoch,
            primary_metric=task.primary_metric,
            best_metric=state.best_metric,
            best_step=state.best_step,
            last_checkpoint=out_dir / LAST_WEIGHTS if saved_step is not None else None,
            best_checkpoint=out_dir / BEST_WEIGHTS if has_best else None,
            history=list(state.history),
            train_loss=train_loss,
        )

    # ---- the loop --------------------------------------------------------------------------
    batches = batches_forever(train_loader, sampler, state, config)
    task.train()
    status, loss_value = "completed", None
    world_batch = config.batch_size * runtime.world_size
    while state.step < total_steps:
        # Checked before fetching data, so a stop costs at most the step under way.
        if _any_rank(stop_event.is_set(), device):
            status = "cancelled"
            break
        started = time.perf_counter()
        batch = move_batch(next(batches), device, config.channels_last)
        lr = learning_rate(state.step, total_steps, warmup_steps, config)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

        with autocast:
            output = trained(batch)
        loss = output["loss"]
        # CPU-GPU sync point, paid every step so a NaN never reaches the weights or a
        # checkpoint; the sum over ranks makes every rank see (and stop on) any rank's NaN.
        loss_value = distributed.all_reduce_sum(loss.detach().float().clone()).item()
        loss_value /= runtime.world_size
        if not math.isfinite(loss_value):
            _diverged(
                hooks, result, state, saved_step, out_dir, f"the loss became {loss_value}", lr
            )

        loss.backward()
        grad_norm = None
        if config.grad_clip is not None:
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(task.model.parameters(), config.grad_clip)
            )
            if not math.isfinite(grad_norm):
                _diverged(
                    hooks,
                    result,
                    state,
                    saved_step,
                    out_dir,
                    f"the gradient norm became {grad_norm}",
                    lr,
                )
        try:
            optimizer.step()
        except RuntimeError as error:  # an lr so large the update overflows (Adam: 1e300)
            if "overflow" not in str(error):
                raise
            _diverged(
                hooks, result, state, saved_step, out_dir, "the optimizer step overflowed", lr
            )
        optimizer.zero_grad(set_to_none=True)

        state.step += 1
        state.batch_in_epoch += 1
        if steps_per_epoch and state.batch_in_epoch == steps_per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        scalars = {
            k: float(v)
            for k, v in output.items()
            if k not in ("loss", "output") and isinstance(v, torch.Tensor) and v.numel() == 1
        }
        elapsed = time.perf_counter() - started
        hooks.on_step(
            StepInfo(
                state.step,
                total_steps,
                state.epoch,
                loss_value,
                lr,
                world_batch / elapsed,
                grad_norm,
                scalars,
            )
        )

        if val_loader is not None and (
            state.step % config.val_every == 0 or state.step == total_steps
        ):
            metrics = _validate(task, val_loader, config, device, autocast, stop_event, runtime)
            if metrics is None:  # cancelled during validation
                status = "cancelled"
                break
            _record_validation(task, state, metrics, out_dir, config, runtime, hooks)
        if state.step % config.checkpoint_every == 0 or state.step == total_steps:
            save_last()
        if config.patience is not None and state.bad_validations >= config.patience:
            log.info(
                "no improvement of %s in %d validations: stopping early",
                task.primary_metric,
                config.patience,
            )
            status = "early_stopped"
            break

    # A cancelled or early-stopped run keeps its progress; resuming continues from here.
    if saved_step != state.step:
        save_last()
    distributed.broadcast_buffers(task.model)  # every rank ends with the checkpointed model
    distributed.barrier()  # nobody exits while rank 0 is still writing
    final = result(status, loss_value)
    hooks.on_end(final)
    return final


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


def _diverged(hooks, result, state, saved_step, out_dir, what: str, lr: float) -> None:
    """Stop the run: report to callbacks, then raise one clear sentence."""
    hooks.on_end(result("diverged", None))
    kept = (
        f"the last good checkpoint (step {saved_step}) is kept in {out_dir}"
        if saved_step is not None
        else "no checkpoint had been written yet"
    )
    raise TrainingDiverged(
        f"training diverged at step {state.step + 1}: {what} (learning rate {lr:.3g}); {kept}; "
        "lower the learning rate (--lr, or FitConfig.lr from Python) or check the data for NaN values"
    )
