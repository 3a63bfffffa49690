"""`predict` outputs are never lost or mixed: staged, refused without --overwrite, recovered."""

from __future__ import annotations

import errno
import json
import os

import pytest

from napari_rckd.errors import RckdError
from napari_rckd.inference.outputs import READY, recover, slide_outputs, staged_outputs

OLD = {"case.zarr/zarr.json": "old", "case.nuclei.csv": "old", "case.region.ome.tif": "old"}
OTHERS = {"case.b.zarr/zarr.json": "other slide", "notes.txt": "mine"}


def _write(folder, files):
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _read(folder):
    """The visible files (staging folders are hidden) and their content."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {str(p.relative_to(folder)): p.read_text() for p in files if ".staging" not in str(p)}


@pytest.fixture
def out(tmp_path):
    _write(tmp_path, {**OLD, **OTHERS})
    return tmp_path


def test_slide_outputs_are_only_that_slides_results(out):
    assert [p.name for p in slide_outputs(out, "case")] == [
        "case.nuclei.csv",
        "case.region.ome.tif",
        "case.zarr",
    ]


def test_existing_results_are_refused_without_overwrite(out):
    with (
        pytest.raises(RckdError, match="already holds results of case .*pass --overwrite"),
        staged_outputs(out, "case", overwrite=False),
    ):
        raise AssertionError("no work may start")
    assert _read(out) == {**OLD, **OTHERS}


def test_overwrite_replaces_the_whole_set_at_once(out):
    with staged_outputs(out, "case", overwrite=True) as staging:
        _write(staging, {"case.zarr/zarr.json": "new", "case.nuclei.csv": "new"})
        assert _read(out) == {**OLD, **OTHERS}  # nothing visible before the block ends
    # the old OME-TIFF goes too: it came from the previous run, not this one
    assert _read(out) == {"case.zarr/zarr.json": "new", "case.nuclei.csv": "new", **OTHERS}


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (PermissionError(errno.EACCES, "Permission denied"), "the folder is read-only"),
    ],
)
def test_write_failures_are_one_sentence_and_keep_earlier_results(out, error, message):
    with (
        pytest.raises(RckdError, match=f"{message}.*earlier results are intact") as raised,
        staged_outputs(out, "case", overwrite=True) as staging,
    ):
        _write(staging, {"case.nuclei.csv": "half"})
        raise error
    assert "\n" not in str(raised.value)
    assert _read(out) == {**OLD, **OTHERS}
    assert not list(out.glob(".*staging"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the permissions")
def test_read_only_folder_is_one_sentence(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o555)
    with pytest.raises(RckdError, match="read-only"), staged_outputs(folder, "case", False):
        pass


def _killed_staging(out, pid, ready):
    """What a run killed before (or while) publishing leaves: its staging folder."""
    staging = out / f".case.{pid}.staging"
    _write(staging, {"case.zarr/zarr.json": "new", "case.nuclei.csv": "new"})
    if ready:
        old = [p.name for p in slide_outputs(out, "case")]
        (staging / READY).write_text(
            json.dumps({"new": ["case.nuclei.csv", "case.zarr"], "old": old})
        )
    return staging


DEAD = 999_999_999


def test_a_run_killed_before_publishing_leaves_the_old_results(out):
    _killed_staging(out, DEAD, ready=False)
    recover(out)
    assert _read(out) == {**OLD, **OTHERS}


@pytest.mark.parametrize("done", [0, 1, 2])
def test_a_run_killed_while_publishing_is_finished_at_the_next_start(out, done):
    staging = _killed_staging(out, DEAD, ready=True)
    plan = json.loads((staging / READY).read_text())
    for name in plan["old"][:done]:  # the kill came after `done` old files were removed
        if (out / name).is_file():
            (out / name).unlink()
    if done == 2:  # ... and after the first new file was moved in
        os.replace(staging / "case.nuclei.csv", out / "case.nuclei.csv")
    recover(out)
    assert _read(out) == {"case.zarr/zarr.json": "new", "case.nuclei.csv": "new", **OTHERS}


def test_a_staging_folder_of_a_live_run_is_left_alone(out):
    staging = _killed_staging(out, os.getpid(), ready=False)
    recover(out)
    assert staging.is_dir()


def _predict(crop_path, out, *extra):
    from napari_rckd.cli import main

    argv = [str(crop_path), "--slide-mpp", "0.499", "--out", str(out), "--nuclei", "otsu"]
    return main(["predict", *argv, *extra])


def _snapshot(folder):
    """The slide's files (the cohort table and page beside them are rewritten by every run)."""
    table = ("cohort.csv", "cohort.html")
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name not in table}


def test_predict_refuses_then_overwrites_then_survives_a_full_disk(
    tmp_path, crop_path, capsys, monkeypatch
):
    from napari_rckd.inference.export import NucleiFiles

    out = tmp_path / "out"
    assert _predict(crop_path, out) == 0
    first = _snapshot(out)
    assert set(first) == {"crop.zarr", "crop.nuclei.geojson", "crop.nuclei.csv"}

    assert _predict(crop_path, out) == 0  # the same command again: complete, so skipped
    assert "1 of 1 slides already complete" in capsys.readouterr().out
    assert _snapshot(out) == first
    assert _predict(crop_path, out, "--nuclei", "classical") == 2  # other models: refused
    assert "already holds results of crop" in capsys.readouterr().err
    assert _snapshot(out) == first

    assert _predict(crop_path, out, "--overwrite", "--export", "csv") == 0
    assert set(_snapshot(out)) == {"crop.zarr", "crop.nuclei.csv"}  # no stale GeoJSON
    second = _snapshot(out)
    csv = (out / "crop.nuclei.csv").read_bytes()

    def disk_full(self, records):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(NucleiFiles, "write", disk_full)  # the export streams during the run
    assert _predict(crop_path, out, "--overwrite") == 2
    assert "the disk is full" in capsys.readouterr().err
    assert _snapshot(out) == second and (out / "crop.nuclei.csv").read_bytes() == csv


@pytest.mark.slow
def test_bench_faults_finds_no_mix(tmp_path):
    """Two real kill -9s of `predict` (the bench's figures come from the same code)."""
    import subprocess
    import sys

    report = tmp_path / "faults.json"
    command = [sys.executable, "-m", "napari_rckd.cli", "bench", "faults", "--kills", "2"]
    done = subprocess.run(
        [*command, "--seed", "1", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    rows = {
        row["state after kill -9 and the next start"]: row["runs"]
        for row in json.loads(report.read_text())["rows"]
    }
    assert rows["mixed"] == 0 and rows["old"] + rows["new"] == 2, done.stderr
    assert done.returncode == 0
