"""A training run of the "Train student" widget without Qt: `TrainSession`, which the widget, the
scripted demo and the tests drive (start, stop, poll, use the model).

The session knows nothing of what is trained: `start` turns the form's settings into a
`TrainingJob` (`train_job.prepare_job`), `start_job` runs any job, and the run's events (status,
steps, validations, notes, the end) become plain state that the widget shows: ``status``,
``step``/``total_steps``, ``eta``, the ``loss`` and ``metric`` series, ``notes``,
``comparison``, ``checkpoint`` and ``kind``. ``changed`` fires whenever that state changes.
"""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal

from napari_rckd._widgets.train_job import (
    TRAINED,
    TrainSettings,
    comparison_text,
    format_eta,
    prepare_job,
    scores_text,
)
from napari_rckd.errors import RckdError
from napari_rckd.training.subprocess_runner import TrainingJob, TrainingProcess

PRIMARY_METRICS = ("dice", "balanced_accuracy", "miou", "mIoU")


class TrainSession:
    """One training run at a time in a child process, and what it has said so far."""

    changed = Signal()
    started = Signal()

    def __init__(self) -> None:
        self.process: TrainingProcess | None = None
        self.running = False
        self.checkpoint: str | None = None  # the last finished run's weights
        self.kind = "nuclei"  # what they are: "nuclei", "subtype" or "region"
        self.status = "Ready."
        self._clear()

    def _clear(self) -> None:
        self.step = self.total_steps = 0
        self.eta = self.comparison = ""
        self.loss: list[tuple[float, float]] = []
        self.metric: list[tuple[float, float]] = []
        self.notes: list[str] = []  # what the run said: start weights, split, pixel size, model

    def _say(self, text: str) -> None:
        self.status = text
        self.changed.emit()

    # ------------------------------------------------------------------ what a user does
    def start(self, settings: TrainSettings, shapes=None, labels=None, resume: bool = False):
        """Train what ``settings`` say (annotation layers ``shapes``/``labels`` for stage 2);
        returns whether a run started (if not, ``status`` says why)."""
        if self.running:
            self._say("Training is already running; press Stop first.")
            return False
        out = Path(settings.out_dir)
        if not resume and any(out.glob("stage*/last.state.pt")):
            self._say(f"{out} already holds a run: press Resume to continue it, or choose "
                      "another run folder.")  # fmt: skip
            return False
        try:
            job = prepare_job(settings, shapes, labels)
        except (RckdError, OSError) as error:
            self._say(str(error))
            return False
        job.resume = resume
        return self.start_job(job)

    def start_job(self, job: TrainingJob) -> bool:
        """Run ``job`` (any training job) in a child process."""
        if self.running:
            self._say("Training is already running; press Stop first.")
            return False
        self._clear()
        self.process = TrainingProcess(job)
        self.process.start()
        self.running = True
        self.started.emit()
        self._say("Starting the training process…")
        return True

    def stop(self) -> None:
        """Ask the run to checkpoint and stop after its current step."""
        if self.running:
            self.process.stop()
            self._say("Stopping after this step…")

    def use_model(self) -> None:
        """Send the last run's weights to live analysis."""
        if self.checkpoint:
            TRAINED.model_ready.emit(self.checkpoint, self.kind)
            self._say(f"Sent {Path(self.checkpoint).name} to live analysis ({self.kind}).")

    def poll(self) -> list[dict]:
        """Take in every event the run sent since the last call; returns them."""
        events = self.process.poll() if self.process is not None else []
        for event in events:
            self.handle(event)
        return events

    def close(self) -> None:
        """The widget or viewer is closing: a running child checkpoints and stops."""
        if self.running:
            self.process.stop()

    # ------------------------------------------------------------------ events
    def handle(self, event: dict) -> None:
        """One event of the child process (`subprocess_runner`) into the session's state."""
        kind = event["event"]
        stage = event.get("stage", "").replace("stage", "stage ")
        if kind == "status":
            self.status = event["message"]
        elif kind == "fit_start":
            if event["start_step"] == 0:
                self.loss, self.metric = [], []
            self.step, self.total_steps = event["start_step"], event["total_steps"]
            self.status = f"{stage}: training"
        elif kind == "step":
            self.step = event["step"]
            self.eta = (f"{stage} · step {event['step']}/{event['total_steps']} · loss "
                        f"{event['loss']:.4f} · ETA {format_eta(event['eta_s'])}")  # fmt: skip
            self.loss.append((event["step"], event["loss"]))
        elif kind == "validation":
            metric = next((k for k in PRIMARY_METRICS if k in event["metrics"]), None)
            if metric is not None:
                self.metric.append((event["step"], event["metrics"][metric]))
        elif kind == "note":
            self.notes.append(f"{stage}: {event['message']}")
        elif kind == "comparison":
            self.comparison = comparison_text(event)
        elif kind == "scores":
            self.comparison = scores_text(event)
        elif kind == "end":
            self._finished(event)
        elif kind == "error":
            self.status = f"Training failed: {event['message']}"
        elif kind == "exit":
            self.running = False
        self.changed.emit()

    def _finished(self, event: dict) -> None:
        self.checkpoint, self.kind = event.get("checkpoint"), event.get("kind", "nuclei")
        status = event["status"]
        if status == "cancelled":
            self.status = "Stopped; the last checkpoint is kept. Press Resume to continue."
            return
        if self.checkpoint:
            TRAINED.model_ready.emit(self.checkpoint, self.kind)
        sent = f" {Path(self.checkpoint).name} is in live analysis." if self.checkpoint else ""
        self.status = f"Training {status.replace('_', ' ')}.{sent}"
