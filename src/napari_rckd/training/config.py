"""What a training run needs to know (`FitConfig`) and what it reports back (`FitResult`).

Both are plain dataclasses of JSON-friendly values so the config can be written beside the
checkpoint, stored in the trainer state and rebuilt by the CLI from its flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from napari_rckd.devices import DEVICES
from napari_rckd.errors import RckdError
from napari_rckd.limits import MAX_LR


@dataclass
class FitConfig:
    """Hyper-parameters and housekeeping of one `fit` run.

    Give either ``steps`` (optimizer steps in all) or ``epochs`` (passes over the training
    set); steps win when both are set. Intervals count optimizer steps. ``patience`` counts
    validations without improvement of the task's primary metric (None: never stop early).
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16  # per process: the global batch is batch_size × world size
    val_batch_size: int | None = None  # None: same as batch_size
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int | None = None  # None: 5% of the run
    final_lr_fraction: float = 0.01  # cosine decays to lr × this
    backbone_lr_scale: float = 1.0  # the backbone learns at lr × this (a pretrained one: < 1)
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    val_every: int = 200
    checkpoint_every: int = 500
    log_every: int = 10
    patience: int | None = None
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N" or "mps"
    num_workers: int = 0
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA GPUs that support it; ignored elsewhere
    channels_last: bool = True
    compile: bool = False  # torch.compile the task: faster steps after a slow first one per shape
    resume: bool = True  # continue from out_dir/last.state.pt when it exists
    tensorboard: bool = True  # log to out_dir/tensorboard when tensorboard is installed
    provenance: dict = field(default_factory=dict)  # saved with every checkpoint

    def __post_init__(self) -> None:
        def positive(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RckdError(f"FitConfig.{name} must be a positive integer, got {value!r}")

        if self.steps is None and self.epochs is None:
            raise RckdError("FitConfig needs steps or epochs: say how long to train")
        for name in ("batch_size", "val_every", "checkpoint_every", "log_every"):
            positive(name)
        for name in ("steps", "epochs", "val_batch_size", "patience"):
            positive(name, allow_none=True)
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= MAX_LR):
            raise RckdError(f"FitConfig.lr must be positive and at most {MAX_LR}, got {self.lr!r}")
        if self.weight_decay < 0 or self.num_workers < 0:
            raise RckdError("FitConfig.weight_decay and num_workers must not be negative")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise RckdError(f"FitConfig.warmup_steps must not be negative, got {self.warmup_steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise RckdError(f"FitConfig.grad_clip must be positive or None, got {self.grad_clip!r}")
        if not 0 <= self.final_lr_fraction <= 1:
            raise RckdError("FitConfig.final_lr_fraction must lie between 0 and 1")
        if not 0 < self.backbone_lr_scale <= 1:
            raise RckdError("FitConfig.backbone_lr_scale must lie in (0, 1]")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise RckdError(
                f"FitConfig.device {self.device!r} is not one of {', '.join(DEVICES)} or 'cuda:N'"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class FitResult:
    """How a run ended and where its weights are.

    ``status`` is "completed", "early_stopped", "cancelled" or "diverged" (the last is only
    seen by callbacks: `fit` then raises). ``history`` holds every validation's metrics with
    its ``step``, including those of earlier, resumed parts of the run.
    """

    status: str
    step: int
    epoch: int
    primary_metric: str
    best_metric: float | None
    best_step: int | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    history: list[dict] = field(default_factory=list)
    train_loss: float | None = None
