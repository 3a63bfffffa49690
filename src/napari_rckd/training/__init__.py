"""Training: RCKD stage 1 (distillation) and stage 2 (fine-tuning) with one `fit` loop.

A run is three things: a **task** (the objective, holding ``task.model``), datasets that
yield dicts of tensors (see `napari_rckd.training.data`), and a `FitConfig`::

    from napari_rckd.models import ModelConfig, create_model
    from napari_rckd.training import DistillationTask, FitConfig, TqdmProgress, fit

    student = create_model(ModelConfig(task="dense", backbone="rckd_csat", num_outputs=1))
    task = DistillationTask(student)  # BCE + soft Dice on the teacher's nuclear probability
    config = FitConfig(steps=5000, batch_size=32, lr=1e-3, val_every=500, checkpoint_every=500)
    result = fit(task, train_tiles, val_tiles, config, "runs/stage1", callbacks=[TqdmProgress()])
    print(result.status, result.best_metric, result.best_checkpoint)

Stage 2 uses ``ClassificationTask(model, num_classes, class_names, class_weights=None,
label_smoothing=0.0)`` on ``{"image", "label"}`` batches (primary metric balanced accuracy)
or ``SegmentationTask(model, num_classes, class_names, dice_weight=0.0)`` on
``{"image", "mask"}`` batches, where mask 0 means unlabelled and is ignored (primary
metric mIoU). Each task has ``forward(batch) -> {"loss", "output", ...}``,
``evaluate(loader) -> {metric: value}``, ``primary_metric`` and ``mode`` ("max"/"min").

What `fit` does, and what it leaves in ``out_dir``:

- AdamW (no decay on norms and biases), linear warm-up then cosine decay, gradient
  clipping, bf16 autocast on CUDA, channels_last memory format.
- Validation every ``val_every`` steps and at the end; ``best.safetensors`` whenever the
  task's primary metric improves; early stopping after ``patience`` validations without it.
- ``last.safetensors`` + ``last.state.pt`` every ``checkpoint_every`` steps, at the end and
  when stopped, written atomically. Calling `fit` again with the same out_dir resumes at the
  saved step (same data order, optimizer moments and random streams), so an interrupted
  run ends where an uninterrupted one would.
- A NaN or infinite loss or gradient raises `TrainingDiverged` (an `RckdError`) before it
  touches the weights; the last good checkpoint stays as it was.
- ``stop_event`` (a `threading.Event`) cancels the run between steps or validation
  batches; the run is checkpointed and returns ``status="cancelled"``.
- Callbacks (`Callback`: on_fit_start, on_step, on_validation, on_checkpoint, on_end)
  report progress on rank 0; `TqdmProgress` draws a bar; TensorBoard curves go to
  ``out_dir/tensorboard`` when tensorboard is installed.
- Under ``torchrun --nproc-per-node N`` the same call trains with DistributedDataParallel
  (NCCL on GPUs, gloo on CPUs): each rank sees its share of every epoch, metrics are
  summed over ranks, only rank 0 writes files and calls callbacks. ``batch_size`` is per
  process.
"""

from __future__ import annotations

import importlib

# name -> the module that defines it. Imported on first use (PEP 562), so the command line
# can read the recipes' defaults (`napari_rckd.training.recipes`) without loading torch.
_EXPORTS = {
    "Callback": "callbacks",
    "StepInfo": "callbacks",
    "TensorBoardLogger": "callbacks",
    "TqdmProgress": "callbacks",
    "FitConfig": "config",
    "FitResult": "config",
    "TrainingDiverged": "loop",
    "fit": "loop",
    "learning_rate": "loop",
    "ClassificationTask": "tasks",
    "DistillationTask": "tasks",
    "SegmentationTask": "tasks",
    "Task": "tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
