"""`predict` over cohorts: a 2-process Dask LocalCluster gives the in-process results, bad
slides are reported and the rest go on, a rerun does no work, clusters that cannot be used
are one sentence before any work, and a Slurm YAML gives the expected job script."""

from __future__ import annotations

import contextlib
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_rckd.cli import main
from napari_rckd.errors import RckdError
from napari_rckd.inference.wholeslide import open_results
from test_predict import checkpoints  # noqa: F401  (fixtures)

pytest.importorskip("distributed")

SLURM_YAML = """kind: slurm
queue: gpu
account: pathology
cores: 1            # worker threads: one slide at a time per worker
job_cpu: 8          # CPUs booked per job (the slide's torch threads, the tile reads)
processes: 1
memory: 32GB
walltime: "04:00:00"
job_extra_directives: ["--gres=gpu:1"]
job_script_prologue:
  - source ~/venvs/rckd/bin/activate
  - export NAPARI_RCKD_THREADS=8
local_directory: $TMPDIR
"""
ARGS = ["--nuclei", "classical", "--slide-mpp", "0.499", "--quiet"]


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "cohort.csv", newline="", encoding="utf-8") as handle:
        return {Path(row["file"]).name: row for row in csv.DictReader(handle)}


def _labels(zarr: Path) -> np.ndarray:
    labels = open_results(zarr)["nuclei_labels"]
    return labels.read((0, 0, *labels.shape))


def _snapshot(out: Path) -> dict[str, int]:
    table = ("cohort.csv", "cohort.html")  # rewritten by every run
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name not in table}


def _assert_no_work(out: Path) -> None:
    """Only the table and page of pending slides (written first: an --out that cannot be
    written into is told before a cluster starts)."""
    if out.exists():  # a bad YAML is told even before that
        assert sorted(p.name for p in out.iterdir()) == ["cohort.csv", "cohort.html"]
        assert {row["status"] for row in _rows(out).values()} == {"pending"}


def worker_killer(client, killed: list):
    """An ``on_tiles`` that kills a busy worker (os._exit) the first time tiles are heard, and
    adds its address to ``killed``."""
    import os

    def kill_a_busy_worker(tiles: int) -> None:
        busy = [worker for worker, keys in client.processing().items() if keys]
        if killed or not busy:
            return
        killed.append(busy[0])
        with contextlib.suppress(Exception):  # the worker dies before it answers
            client.run(os._exit, 1, workers=busy[:1])

    return kill_a_busy_worker


def test_a_running_scheduler_equals_in_process_reports_bad_slides_and_resumes(
    tmp_path, crop_path, capsys
):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for name in ("a", "b"):
        shutil.copy(crop_path, cohort / f"{name}.tif")
    (cohort / "bad.tif").write_bytes(b"II*\x00 not really a slide" * 50)
    single = tmp_path / "single"
    assert main(["predict", str(cohort / "a.tif"), "--out", str(single), *ARGS]) == 0
    capsys.readouterr()

    from distributed import Client, LocalCluster

    out = tmp_path / "out"
    # a scheduler that already runs (2 worker processes, 1 thread each), reached by address
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        argv = ["predict", str(cohort), "--out", str(out), *ARGS]
        argv += ["--cluster", cluster.scheduler_address]
        assert main(argv) == 1  # one slide failed; the others are done
        with Client(cluster) as client:  # predict left the scheduler and its workers running
            assert len(client.scheduler_info()["workers"]) == 2
    printed = capsys.readouterr().out
    assert "Dask dashboard: " in printed
    assert "bad.tif: failed: bad.tif has a TIFF header but no readable image" in printed
    rows = _rows(out)
    assert [rows[n]["status"] for n in ("a.tif", "b.tif", "bad.tif")] == [
        "done",
        "done",
        "failed",
    ]
    assert "probably truncated or corrupt" in rows["bad.tif"]["error"]
    assert all(rows[n]["worker"].startswith("tcp://") for n in ("a.tif", "b.tif"))
    reference = _labels(single / "a.zarr")
    assert reference.max() > 20
    for stem in ("a", "b"):  # the same pixels and nuclei as the in-process run
        np.testing.assert_array_equal(_labels(out / f"{stem}.zarr"), reference)
        assert (out / f"{stem}.nuclei.csv").read_bytes() == (single / "a.nuclei.csv").read_bytes()
    assert rows["a.tif"]["nuclei"] == _rows(single)["a.tif"]["nuclei"]
    assert not list(out.glob(".*staging"))

    (cohort / "bad.tif").unlink()
    before = _snapshot(out)
    assert main(argv) == 0  # the same command again: nothing left to do
    printed = capsys.readouterr().out
    assert "2 of 2 slides already complete" in printed and "nothing to do" in printed
    assert "Dask dashboard" not in printed  # no cluster reached (it is gone) for no work
    assert _snapshot(out) == before
    rows = _rows(out)
    assert {row["status"] for row in rows.values()} == {"skipped"}
    assert rows["a.tif"]["nuclei"] == _rows(single)["a.tif"]["nuclei"]  # figures kept


def test_a_worker_killed_mid_slide_changes_no_result(tmp_path, crop_path):
    """Dask runs the slide of a worker killed with os._exit elsewhere; what the dead worker
    had staged is never published, and the results equal the in-process run's."""
    import os
    from dataclasses import replace

    import tifffile

    from napari_rckd.inference.clusters import open_client
    from napari_rckd.inference.cohort import plan_cohort, run_cohort
    from napari_rckd.inference.cohort_slide import CohortSettings, describe_models

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    pixels = np.tile(tifffile.imread(crop_path), (2, 2, 1))  # 36 tiles: long enough to kill
    tifffile.imwrite(cohort / "x.tif", pixels, tile=(256, 256), photometric="rgb")
    single = tmp_path / "single"
    assert main(["predict", str(cohort / "x.tif"), "--out", str(single), *ARGS]) == 0

    out = tmp_path / "out"
    settings = CohortSettings(
        dict(nuclei="classical"), str(out), exports=("geojson", "csv"), slide_mpp=0.499
    )
    plan = plan_cohort(sorted(cohort.iterdir()), settings, describe_models(settings))
    killed = []
    with open_client("local:2") as client:
        threads = client.run(lambda: os.environ.get("NAPARI_RCKD_THREADS"))  # cores split in 2
        assert sorted(threads.values()) == [str(max(1, os.cpu_count() // 2))] * 2
        rows = run_cohort(plan, client, on_tiles=worker_killer(client, killed))
        # a task that raises (not a bad slide): run twice by Dask, then reported
        broken = replace(plan.settings, models=dict(nuclei="classical", bogus="x"))
        broken = replace(plan, settings=replace(broken, out=str(tmp_path / "broken")))
        [failed] = run_cohort(broken, client)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("x.tif failed twice on the cluster: TypeError: ")
    [in_process] = run_cohort(broken)
    assert in_process["error"].startswith("x.tif failed: TypeError: ")
    assert killed, "no worker was busy when the first tiles were heard"
    assert [row["status"] for row in rows] == ["done"], rows
    assert rows[0]["worker"] != killed[0]
    np.testing.assert_array_equal(_labels(out / "x.zarr"), _labels(single / "x.zarr"))
    assert (out / "x.nuclei.csv").read_bytes() == (single / "x.nuclei.csv").read_bytes()
    assert not list(out.glob(".*staging"))  # the dead worker's staging folder is gone


def test_table_has_subtype_and_region_fractions(tmp_path, crop_path, checkpoints):  # noqa: F811
    out = tmp_path / "out"
    argv = ["predict", str(crop_path), "--out", str(out), *ARGS, "--export", "csv"]
    argv += ["--subtype", str(checkpoints["subtype"]), "--region", str(checkpoints["region"])]
    assert main(argv) == 0
    row = _rows(out)["crop.tif"]
    subtype = [float(v) for k, v in row.items() if k.startswith("subtype_") and v]
    region = {k: float(v) for k, v in row.items() if k.startswith("region_") and v}
    assert len(subtype) == 3 and sum(subtype) == pytest.approx(1, abs=1e-3)
    assert set(region) == {"region_other", "region_cancer"}
    assert sum(region.values()) == pytest.approx(1, abs=1e-3)
    assert row["models"].count("|") == 2  # nuclei, subtype and region identities


def test_in_process_table_figures_come_from_the_slide_outputs(tmp_path, crop_path):
    out = tmp_path / "out"
    assert main(["predict", str(crop_path), "--out", str(out), *ARGS]) == 0
    row = _rows(out)["crop.tif"]
    with open(out / "crop.nuclei.csv", newline="") as handle:
        areas = np.array([float(r["area_um2"]) for r in csv.DictReader(handle)])
    assert int(row["nuclei"]) == len(areas) > 20
    assert float(row["nuclear_area_median_um2"]) == pytest.approx(np.median(areas), abs=0.01)
    q1, q3 = np.percentile(areas, [25, 50, 75])[[0, 2]]
    assert float(row["nuclear_area_iqr_um2"]) == pytest.approx(q3 - q1, abs=0.01)
    from napari_rckd.io import open_slide
    from napari_rckd.io.tissue import detect_tissue

    with open_slide(crop_path, mpp=0.499) as slide:
        mask_mm2 = detect_tissue(slide).area_px0 * 0.499**2 / 1e6
    tissue = float(row["tissue_mm2"])
    assert tissue == pytest.approx(mask_mm2, abs=1e-4) and tissue > 0.1  # a crop of tissue
    assert float(row["nuclei_per_mm2"]) == pytest.approx(len(areas) / tissue, rel=1e-3)
    assert row["status"] == "done" and row["models"].startswith("nuclei:classical")


def test_unreachable_scheduler_is_one_sentence_before_any_work(
    tmp_path, crop_path, capsys, monkeypatch
):
    from napari_rckd.inference import clusters

    monkeypatch.setattr(clusters, "CONNECT_TIMEOUT_S", 2)
    out = tmp_path / "out"
    argv = ["predict", str(crop_path), "--out", str(out), *ARGS, "--cluster", "tcp://127.0.0.1:1"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith(
        "napari-rckd predict: error: could not reach the Dask scheduler at tcp://127.0.0.1:1"
    )
    _assert_no_work(out)


@pytest.mark.parametrize(
    "text, message",
    [
        ("kind: slurm\ncores: [4\n", "is not valid YAML (line 3)"),
        ("cores: 4\n", "must be a mapping whose `kind` is one of slurm"),
        ("kind: slurm\ncorez: 4\n", "refused these settings"),
    ],
)
def test_bad_jobqueue_yaml_is_one_sentence_before_any_work(
    tmp_path, crop_path, capsys, text, message
):
    yaml_file = tmp_path / "cluster.yaml"
    yaml_file.write_text(text)
    out = tmp_path / "out"
    argv = ["predict", str(crop_path), "--out", str(out), *ARGS]
    assert main([*argv, "--cluster", f"jobqueue:{yaml_file}", "--workers", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
    _assert_no_work(out)


def test_unknown_cluster_is_one_sentence(tmp_path, crop_path, capsys):
    argv = ["predict", str(crop_path), "--out", str(tmp_path), "--cluster", "local:zero"]
    assert main(argv) == 2
    assert "--cluster local:zero is not a cluster; use none, local" in capsys.readouterr().err


def test_slurm_yaml_builds_the_expected_job_script(tmp_path):
    pytest.importorskip("dask_jobqueue")
    from napari_rckd.inference.clusters import jobqueue_cluster

    yaml_file = tmp_path / "slurm.yaml"
    yaml_file.write_text(SLURM_YAML)  # the example of docs/cohorts.md
    cluster = jobqueue_cluster(yaml_file)  # no job is submitted
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A pathology",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=30G",
        "#SBATCH -t 04:00:00",
        "#SBATCH --gres=gpu:1",
        "source ~/venvs/rckd/bin/activate",
        "export NAPARI_RCKD_THREADS=8",
    ):
        assert line in script, script
    assert "distributed.cli.dask_worker" in script and "--nthreads 1 " in script


def test_the_docs_show_the_tested_slurm_example():
    docs = Path(__file__).resolve().parents[1] / "docs" / "cohorts.md"
    assert SLURM_YAML in docs.read_text(encoding="utf-8")


def test_gpu_workers_each_see_their_own_gpu():
    from napari_rckd.inference.clusters import gpu_worker_specs

    specs = gpu_worker_specs(2, {"OMP_NUM_THREADS": "8"})
    envs = [spec["options"]["env"] for spec in specs["workers"].values()]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["0", "1"]
    assert all(env["OMP_NUM_THREADS"] == "8" for env in envs)
    assert all(spec["options"]["nthreads"] == 1 for spec in specs["workers"].values())


def test_checkpoints_travel_by_content_with_the_same_identity(tmp_path):
    from napari_rckd.files import sha256_prefix
    from napari_rckd.inference.cohort_slide import ModelFile, pack_models

    checkpoint = tmp_path / "mine.safetensors"
    checkpoint.write_bytes(b"weights" * 100)
    packed = pack_models(dict(nuclei="classical", subtype=str(checkpoint), region=None))
    assert packed["nuclei"] == "classical" and packed["region"] is None
    assert isinstance(packed["subtype"], ModelFile)
    checkpoint.unlink()  # a worker never sees the user's path
    local = Path(packed["subtype"].local_spec())
    assert local.name == "mine.safetensors" and local.read_bytes() == b"weights" * 100
    assert sha256_prefix(local) == packed["subtype"].digest  # the identity follows the bytes


def test_slide_lists_and_twin_names(tmp_path, crop_path):
    from napari_rckd.inference.cohort import find_slides, plan_cohort
    from napari_rckd.inference.cohort_slide import CohortSettings

    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        shutil.copy(crop_path, tmp_path / folder / "crop.tif")
    listing = tmp_path / "slides.txt"
    listing.write_text("# two scans\nx/crop.tif\n\ny/crop.tif\n")
    slides = find_slides(listing)
    assert slides == [tmp_path / "x" / "crop.tif", tmp_path / "y" / "crop.tif"]
    settings = CohortSettings(dict(nuclei="classical"), str(tmp_path / "out"))
    with pytest.raises(RckdError, match="several slides are named crop"):
        plan_cohort(slides, settings, dict(identities={}, suffixes=[]))
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(RckdError, match="names no slides"):
        find_slides(tmp_path / "empty.txt")


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("ENOSPC", "the disk is full; free some space or choose another folder"),
        ("EACCES", "the folder is read-only (permission denied); choose another folder"),
        ("EROFS", "the folder is read-only (permission denied); choose another folder"),
    ],
)
def test_a_full_disk_or_read_only_folder_is_one_sentence_before_a_cluster_starts(
    tmp_path, crop_path, capsys, monkeypatch, code, why
):
    import errno

    from napari_rckd.inference import clusters, cohort

    def disk_full(out, rows):
        raise OSError(getattr(errno, code), code)

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(cohort, "write_table", disk_full)
    monkeypatch.setattr(clusters, "_local_cluster", no_cluster)
    out = tmp_path / "out"
    argv = ["predict", str(crop_path), "--out", str(out), *ARGS, "--cluster", "local:2"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"napari-rckd predict: error: could not write the results of the cohort into {out}: "
        f"{why} (earlier results are intact)."
    ]
    assert not out.exists()  # the refused run leaves no folder of its own behind


def test_a_folder_without_slides_is_one_sentence_before_a_cluster_starts(
    tmp_path, capsys, monkeypatch
):
    from napari_rckd.inference import clusters

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(clusters, "_local_cluster", no_cluster)
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "notes.txt.bak").write_text("not a slide")
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--out", str(out), *ARGS, "--cluster", "local:2"]
    assert main(argv) == 2
    [error] = capsys.readouterr().err.strip().splitlines()
    assert error.startswith(f"napari-rckd predict: error: folder {folder} holds no slide files (")
    assert error.endswith("); point at a slide or a folder of slides.")
    assert not out.exists()


def test_a_retried_task_finishes_what_its_killed_attempt_published(tmp_path, crop_path):
    """A worker that died during or after the renames: the retry reports the slide done
    (finishing the renames) instead of refusing the slide's own new results."""
    import json
    from dataclasses import replace

    from napari_rckd.inference.cohort_slide import CohortSettings, describe_models, run_task

    out = tmp_path / "out"
    assert main(["predict", str(crop_path), "--out", str(out), *ARGS]) == 0
    settings = CohortSettings(dict(nuclei="classical"), str(out), slide_mpp=0.499)
    settings = replace(settings, planned=describe_models(settings))
    staging = out / ".crop.4194303.staging"  # killed after moving the .zarr and the GeoJSON
    staging.mkdir()
    (out / "crop.nuclei.csv").rename(staging / "crop.nuclei.csv")
    names = ["crop.nuclei.csv", "crop.nuclei.geojson", "crop.zarr"]
    (staging / "ready.json").write_text(json.dumps({"new": names, "old": []}))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "crop.zarr").iterdir()}

    row = run_task(str(crop_path), settings)
    assert row["status"] == "done" and row["nuclei"] == int(_rows(out)["crop.tif"]["nuclei"])
    assert sorted(p.name for p in out.iterdir()) == ["cohort.csv", "cohort.html", *names]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "crop.zarr").iterdir()} == before
