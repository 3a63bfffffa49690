"""Training in a child process: real tiny runs on a real slide, progress events, Stop, Resume."""

from __future__ import annotations

import time

import pytest

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.training.subprocess_runner import TrainingJob, TrainingProcess

GENEROUS_S = 60  # bounds a hang, not a speed: training on a busy 2-core CPU


def _stage1(steps: int) -> dict:
    slide = shared_path("slides/cmu-1-small-region.svs")
    return dict(
        slides=[str(slide)], backbone="resnet18", tile_size=64, tiles=8, val_tiles=2,
        steps=steps, batch_size=2, device="cpu",
    )  # fmt: skip


def _events_until(process: TrainingProcess, done, timeout: float = 180) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += process.poll()
        if any(done(e) for e in events):
            return events
        time.sleep(0.05)
    raise AssertionError(f"no expected event within {timeout} s; got {events[-5:]}")


def test_child_trains_and_reports_progress_to_a_loadable_checkpoint(tmp_path):
    from napari_rckd.models import load_checkpoint

    process = TrainingProcess(TrainingJob(str(tmp_path), stage1=_stage1(3), threads=1))
    process.start()
    events = _events_until(process, lambda e: e["event"] == "exit")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "status" and kinds[-2:] == ["end", "exit"]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3] and steps[-1]["eta_s"] == 0
    assert all(e["loss"] > 0 and e["total_steps"] == 3 for e in steps)
    assert any(e["event"] == "validation" and "dice" in e["metrics"] for e in events)
    end = events[-2]
    assert end["status"] == "completed" and end["kind"] == "nuclei"
    assert events[-1]["code"] == 0
    model, metadata = load_checkpoint(end["checkpoint"])
    assert model.config.task == "dense" and metadata["provenance"]["stage"] == "rckd-stage1"
    assert (tmp_path / "job.json").exists() and (tmp_path / "train.log").exists()
    # the run's account reaches the widget as notes, and stays in the stage's run.log
    notes = [e["message"] for e in events if e["event"] == "note"]
    assert any(n.startswith("start weights: random") for n in notes), notes
    assert any(n.startswith("validation: ") for n in notes)
    assert any(n.startswith("model: ") and end["checkpoint"] in n for n in notes)
    assert "start weights: random" in (tmp_path / "stage1" / "run.log").read_text()


def test_stop_checkpoints_and_resume_continues(tmp_path):
    job = TrainingJob(str(tmp_path), stage1=_stage1(400), threads=1)
    process = TrainingProcess(job)
    process.start()
    _events_until(process, lambda e: e["event"] == "step")
    process.stop()
    assert process.wait(GENEROUS_S) == 0
    events = _events_until(process, lambda e: e["event"] == "exit")
    ends = [e for e in events if e["event"] in ("stage_end", "end")]
    assert [e["status"] for e in ends] == ["cancelled", "cancelled"]
    stopped_at = ends[0]["step"]
    assert 1 <= stopped_at < 400 and (tmp_path / "stage1" / "last.safetensors").exists()
    assert not process.running

    job.resume = True
    again = TrainingProcess(job)
    again.start()
    events = _events_until(again, lambda e: e["event"] == "fit_start")
    assert events[-1]["start_step"] == stopped_at  # continues where it stopped
    again.stop()
    assert again.wait(GENEROUS_S) == 0


def test_stop_while_preparing_exits_at_once(tmp_path):
    process = TrainingProcess(TrainingJob(str(tmp_path), stage1=_stage1(5), threads=1))
    process.start()
    _events_until(process, lambda e: e["event"] == "status")
    process.stop()
    assert process.wait(GENEROUS_S) == 0
    events = _events_until(process, lambda e: e["event"] == "exit")
    end = [e for e in events if e["event"] == "end"]
    assert end and end[0]["status"] == "cancelled"


def test_unreadable_slide_is_one_error_event(tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide at all" * 100)
    stage1 = {**_stage1(2), "slides": [str(bad)]}
    process = TrainingProcess(TrainingJob(str(tmp_path / "run"), stage1=stage1, threads=1))
    process.start()
    events = _events_until(process, lambda e: e["event"] == "exit")
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and "broken.svs" in errors[0]["message"]
    assert events[-1]["code"] == 1


def test_a_job_needs_a_stage(tmp_path):
    with pytest.raises(RckdError, match="stage 1, stage 2 or both"):
        TrainingJob(str(tmp_path))


def test_a_closed_pipe_silences_the_events_instead_of_raising():
    from napari_rckd.training.subprocess_runner import EventWriter

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    writer = EventWriter(ClosedPipe(), "stage1")
    writer.emit("status", message="first")  # the parent quit: no traceback, training goes on
    writer.emit("status", message="second")
    assert writer.parent_gone
