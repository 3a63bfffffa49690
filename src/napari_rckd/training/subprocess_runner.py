"""Run a training job in a child process and stream its progress back as JSON lines.

The GUI must never freeze and must get its GPU memory back, so training runs in
``python -m napari_rckd.training.subprocess_runner JOB.json``: a fresh interpreter that
exits (releasing every CUDA allocation) when the job ends. The parent talks to it through
files in the run folder and one pipe:

- ``job.json`` (written atomically before the start) says what to train: a nuclei model
  from corrections (`nuclei_finetune.finetune_nuclei` keyword arguments; the ``end`` event's
  checkpoint is then the new model's spec, and a ``scores`` event gives before → after on
  the held-out corrected regions), or stage 1
  (`Stage1Recipe` fields and the slides of `recipes.stage1.pretrain`), stage 2
  (`Stage2Recipe` and `Stage2Data` fields and ``init``, which defaults to stage 1's best
  checkpoint), each flat, or both; with ``compare_random`` stage 2 is trained again from random weights into ``stage2-random``, and a ``comparison``
  event gives both best validation scores;
- the child's stdout carries one JSON event per line: ``status`` (a phase message), ``note``
  (a line of the run's account: start weights, split, pixel size, where the model went),
  ``fit_start``, ``step`` (loss, lr, tiles/s, ETA), ``validation``, ``checkpoint``,
  ``stage_end`` and finally ``end`` or ``error``; anything else the child prints goes to
  ``train.log``;
- ``STOP`` (an empty file) asks the child to stop: `fit` checkpoints after the current step
  and returns "cancelled"; before training has begun there is nothing to keep and the
  child exits at once.

Resume is the same job started again with ``resume=True``: `fit` continues from
``last.state.pt`` in each stage folder.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from napari_rckd.atomic import write_json_atomic
from napari_rckd.errors import RckdError
from napari_rckd.training.callbacks import Callback, StepInfo
from napari_rckd.training.config import FitResult

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
STOP_FILE = "STOP"
LOG_FILE = "train.log"
RUN_NOTES_LOGGER = "napari_rckd.training.run_notes"
STOP_POLL_S = 0.1  # how often the child looks for the stop file


@dataclass
class TrainingJob:
    """What the child trains: stage 1 and/or stage 2 keyword arguments, into ``out_dir``.

    Stage folders are ``out_dir/stage1`` and ``out_dir/stage2``. The kwargs must be
    JSON-friendly (paths as strings): the job crosses the process boundary as a file.
    """

    out_dir: str
    stage1: dict | None = None
    stage2: dict | None = None
    nuclei: dict | None = None  # `finetune_nuclei` keyword arguments: nuclei from corrections
    resume: bool = False
    threads: int | None = None  # torch CPU threads in the child (None: torch's default)
    compare_random: bool = False  # stage 2 again from random weights, to show what the init gave
    extra: dict = field(default_factory=dict)  # free-form notes kept with the job

    def __post_init__(self) -> None:
        if self.stage1 is None and self.stage2 is None and self.nuclei is None:
            raise RckdError("a training job needs stage 1, stage 2 or both; neither was given")

    @classmethod
    def read(cls, path: str | os.PathLike) -> TrainingJob:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as error:
            raise RckdError(f"cannot read training job {path} ({error})") from None


class EventWriter(Callback):
    """A `fit` callback that writes each event as one JSON line (flushed at once)."""

    def __init__(self, stream, stage: str) -> None:
        self.stream, self.stage = stream, stage
        self.started = threading.Event()  # set once fit runs: stopping then keeps a checkpoint
        self.checkpoint: str | None = None  # the last good weights of a finished stage
        self.parent_gone = False
        self._t0 = 0.0
        self._first_step = 0

    def emit(self, event: str, **payload) -> None:
        """Write one event; once the parent has closed the pipe (it quit), write no more and
        let the run finish its checkpoints instead of dying with a BrokenPipeError traceback."""
        if self.parent_gone:
            return
        line = json.dumps({"event": event, "stage": self.stage, **payload}, default=str)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream object was closed
            self.parent_gone = True

    def on_fit_start(self, start_step: int, total_steps: int) -> None:
        self._t0, self._first_step = time.monotonic(), start_step
        self.started.set()
        self.emit("fit_start", start_step=start_step, total_steps=total_steps)

    def on_step(self, info: StepInfo) -> None:
        done = info.step - self._first_step
        per_step = (time.monotonic() - self._t0) / max(done, 1)
        self.emit(
            "step",
            step=info.step,
            total_steps=info.total_steps,
            loss=info.loss,
            lr=info.lr,
            samples_per_second=info.samples_per_second,
            eta_s=per_step * (info.total_steps - info.step),
        )

    def on_validation(self, step: int, metrics: dict[str, float]) -> None:
        self.emit("validation", step=step, metrics=metrics)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.emit("checkpoint", step=step, path=str(path))

    def on_end(self, result: FitResult) -> None:
        best = result.best_checkpoint or result.last_checkpoint
        self.checkpoint = str(best) if best else self.checkpoint
        self.emit(
            "stage_end",
            status=result.status,
            step=result.step,
            best_metric=result.best_metric,
            primary_metric=result.primary_metric,
            best_checkpoint=str(result.best_checkpoint) if result.best_checkpoint else None,
            last_checkpoint=str(result.last_checkpoint) if result.last_checkpoint else None,
        )


def _watch_stop_file(path: Path, stop: threading.Event, writer: EventWriter) -> None:
    """Turn the stop file into the stop event; before training there is nothing to save."""
    while not path.exists():
        time.sleep(STOP_POLL_S)
    stop.set()
    if not writer.started.is_set():
        writer.emit("end", status="cancelled", checkpoint=writer.checkpoint, kind="nuclei")
        os._exit(0)  # still reading slides or asking the teacher: nothing trained to keep


def run_job(job: TrainingJob, stream) -> dict:
    """Train the job's stages in order, reporting to ``stream``; returns the final event."""
    out = Path(job.out_dir)
    stop = threading.Event()
    writer = EventWriter(stream, "stage1" if job.stage1 is not None else "stage2")
    notes = _NoteEvents(writer)  # what the run says about itself, shown by the widget too
    logging.getLogger(RUN_NOTES_LOGGER).addHandler(notes)
    try:
        return _run_stages(job, writer, out, stop)
    finally:
        logging.getLogger(RUN_NOTES_LOGGER).removeHandler(notes)


class _NoteEvents(logging.Handler):
    """Forwards `run_notes` lines (start weights, split, pixel size, model) as ``note`` events."""

    def __init__(self, writer: EventWriter) -> None:
        super().__init__(logging.INFO)
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self.writer.emit("note", message=record.getMessage())


def _run_stages(job: TrainingJob, writer: EventWriter, out: Path, stop: threading.Event) -> dict:
    from napari_rckd.training.recipes.stage1 import Stage1Recipe, pretrain
    from napari_rckd.training.recipes.stage2 import Stage2Data, Stage2Recipe, finetune

    threading.Thread(
        target=_watch_stop_file, args=(out / STOP_FILE, stop, writer), daemon=True
    ).start()
    if job.nuclei is not None:
        return _run_nuclei(job, writer, out, stop)
    checkpoint = None
    if job.stage1 is not None:
        writer.emit("status", message="stage 1: reading tissue tiles and teacher responses")
        recipe, inputs = Stage1Recipe.split(job.stage1)
        result = pretrain(
            out_dir=out / "stage1", recipe=recipe, resume=job.resume, callbacks=[writer],
            stop_event=stop, **inputs,
        )  # fmt: skip
        checkpoint = result.best_checkpoint or result.last_checkpoint
        if result.status == "cancelled" or job.stage2 is None:
            return _end(writer, result.status, checkpoint, "nuclei")
    writer.stage = "stage2"
    writer.started.clear()
    kwargs = dict(job.stage2)
    if kwargs.get("init") is None and checkpoint is not None:
        kwargs["init"] = str(checkpoint)
    writer.emit("status", message="stage 2: cutting tiles from the annotations")
    recipe, rest = Stage2Recipe.split(kwargs)
    data, rest = Stage2Data.split(rest)
    result = finetune(
        data, out / "stage2", recipe, init=rest.get("init"), resume=job.resume,
        callbacks=[writer], stop_event=stop,
    )  # fmt: skip
    checkpoint = result.best_checkpoint or result.last_checkpoint
    kind = "subtype" if kwargs.get("task", "classify") == "classify" else "region"
    status = result.status
    if job.compare_random and status == "completed":
        writer.stage = "stage2-random"
        writer.started.clear()
        writer.emit("status", message="stage 2 again from random weights, for comparison")
        random = finetune(
            data, out / "stage2-random", replace(recipe, backbone=_backbone_of(checkpoint)),
            init="none", resume=job.resume, callbacks=[writer], stop_event=stop,
        )  # fmt: skip
        status = random.status  # a Stop here is resumed like any other
        if status == "completed":
            writer.emit(
                "comparison",
                metric=result.primary_metric,
                trained=result.best_metric,
                random=random.best_metric,
            )
    return _end(writer, status, checkpoint, kind)


def _run_nuclei(job: TrainingJob, writer: EventWriter, out: Path, stop: threading.Event) -> dict:
    """Nuclei from corrections: fine-tune, then the held-out scores and the new model's spec
    (with ``+classical`` when it started from builtin) as the checkpoint."""
    from napari_rckd.training.nuclei_finetune import NucleiRecipe, finetune_nuclei

    writer.stage = "nuclei"
    writer.emit("status", message="nuclei: reading the corrections and the replay")
    options = dict(job.nuclei)
    corrections = options.pop("corrections")
    result = finetune_nuclei(
        corrections, out / "nuclei", NucleiRecipe(**options), resume=job.resume,
        callbacks=[writer], stop_event=stop,
    )  # fmt: skip
    if result.scores:
        writer.emit("scores", **{k: result.scores[k] for k in ("regions", "before", "after")})
    return _end(writer, result.fit.status, result.spec, "nuclei")


def _backbone_of(checkpoint) -> str:
    """The backbone a finished stage 2 trained, so the random run builds the same network."""
    from napari_rckd.models.weights import read_weights

    _, metadata = read_weights(checkpoint)
    return metadata["config"]["backbone"]


def _end(writer: EventWriter, status: str, checkpoint, kind: str) -> dict:
    event = {"status": status, "checkpoint": str(checkpoint) if checkpoint else None, "kind": kind}
    writer.emit("end", **event)
    return event


def main(argv: list[str] | None = None) -> int:
    """Child entry point: events on the real stdout, everything else printed into stderr."""
    argv = sys.argv[1:] if argv is None else argv
    events = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt events
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    writer = EventWriter(events, "job")
    try:
        job = TrainingJob.read(argv[0])
        if job.threads:
            import torch

            torch.set_num_threads(job.threads)
        run_job(job, events)
    except RckdError as error:
        writer.emit("error", message=str(error))
        return 1
    except MemoryError:
        writer.emit("error", message="the machine ran out of memory; lower the batch size")
        return 1
    except Exception as error:  # reported to the GUI in one line; the traceback goes to the log
        log.exception("training failed")
        writer.emit("error", message=_explain(error))
        return 1
    return 0


def _explain(error: Exception) -> str:
    text = str(error)
    if "out of memory" in text.lower():
        return "the device ran out of memory; lower the batch size or the tile size, or use the CPU"
    return f"training failed: {type(error).__name__}: {text.splitlines()[0] if text else ''}"


class TrainingProcess:
    """The parent's handle on one child: start, poll events, stop, wait.

    Events arrive on a reader thread and wait in a queue until `poll` drains them, so a GUI
    timer can pick them up on its own thread. Exiting without an ``end`` or ``error`` event
    (a crash, a kill) is reported as an ``error`` naming the log file.
    """

    def __init__(self, job: TrainingJob, python: str | None = None) -> None:
        self.job = job
        self.out_dir = Path(job.out_dir)
        self.python = python or sys.executable
        self.events: queue.Queue[dict] = queue.Queue()
        self.process: subprocess.Popen | None = None
        self._finished = False

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_FILE

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / STOP_FILE).unlink(missing_ok=True)
        write_json_atomic(self.out_dir / JOB_FILE, asdict(self.job))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("a") as log_file:
            self.process = subprocess.Popen(
                [self.python, "-m", "napari_rckd.training.subprocess_runner",
                 str(self.out_dir / JOB_FILE)],
                stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, text=True,
                env=env,
            )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            self._finished |= event.get("event") in ("end", "error")
            self.events.put(event)
        code = self.process.wait()
        if not self._finished:
            self.events.put(
                {
                    "event": "error",
                    "message": f"training stopped unexpectedly (exit code {code}); see "
                    f"{self.log_path}",
                }
            )
        self.events.put({"event": "exit", "code": code})

    def poll(self) -> list[dict]:
        """Every event that arrived since the last call, oldest first."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Ask the child to checkpoint and stop after its current step."""
        if self.running:
            (self.out_dir / STOP_FILE).touch()

    def wait(self, timeout: float | None = None) -> int | None:
        """The child's exit code, or None if it is still running after ``timeout`` seconds."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Last resort (the viewer is closing): the last checkpoint on disk stays as it was."""
        if self.running:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    sys.exit(main())
