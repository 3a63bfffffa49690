"""`napari-rckd bench transfer`: a tiny run on a grouped folder (rows, JSON, leak-free folds,
determinism), the plan on the real LC25000 groups, the paired statistics, and one sentence
for each kind of bad input."""

from __future__ import annotations

import json
import math

import pytest

from conftest import shared_path
from grouped_tiles import CLASSES, make_grouped_folder
from napari_rckd.bench.transfer_plan import make_plan
from napari_rckd.bench.transfer_stats import paired_rows, t_interval
from napari_rckd.cli import main

TINY = ["--steps", "2", "--tile-size", "32", "--batch-size", "4", "--device", "cpu"]
KEYS = {"init", "backbone", "budget", "seed", "fold", "balanced_accuracy", "macro_f1"}
KEYS |= {"n_train", "n_test", "steps", "seconds"}


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    return make_grouped_folder(tmp_path_factory.mktemp("transfer") / "tiles")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A tiny random CSAT student saved as a stage-1 checkpoint."""
    import torch

    from napari_rckd.models import ModelConfig, create_model, save_checkpoint

    torch.manual_seed(1)
    model = create_model(ModelConfig(task="dense", backbone="rckd_csat", tile_size=64))
    path = tmp_path_factory.mktemp("stage1") / "student.safetensors"
    return save_checkpoint(path, model, {"stage": "rckd-stage1"})


def run_bench(folder, json_path, inits, *extra) -> dict:
    args = ["bench", "transfer", "--train", str(folder), "--inits", inits, "--folds", "2"]
    args += ["--budgets", "0.5,1", "--seeds", "1", "--json", str(json_path), *TINY, *extra]
    assert main(args) == 0
    return json.loads(json_path.read_text())


def test_tiny_run_rows_json_and_determinism(grouped, stage1, tmp_path, capsys):
    first = run_bench(grouped, tmp_path / "a.json", f"none,{stage1}")
    out = capsys.readouterr().out
    assert "paired difference to none" in out and "balanced_accuracy" in out
    assert out.startswith("pixel size: tiles records no µm/px")  # the scale rule's line
    rows = first["rows"]
    assert len(rows) == 2 * 2 * 2  # folds × budgets × inits, one seed
    assert all(set(row) >= KEYS for row in rows) and first["status"] == "completed"
    assert {"cpus", "torch"} <= set(first["machine"])
    assert {r["init"] for r in rows} == {"none", str(stage1)}
    for row in rows:
        assert row["steps"] == 2 and 0 <= row["balanced_accuracy"] <= 1
        # 9 groups of 3 tiles per class and fold half: a budget of 0.5 keeps 2 of 3 per class
        assert row["n_train"] == (27 if row["budget"] == 1 else 18) and row["n_test"] == 27
    again = run_bench(grouped, tmp_path / "b.json", f"none,{stage1}")
    scores = [(r["balanced_accuracy"], r["macro_f1"]) for r in rows]
    assert scores == [(r["balanced_accuracy"], r["macro_f1"]) for r in again["rows"]]


def test_no_group_is_trained_and_tested(grouped):
    plan = make_plan(grouped, None, 3, ["none"], "rckd_csat", [0.34, 1.0], 2)
    for job in plan.jobs():
        train = {t.group for t in plan.train_tiles(job)}
        test = {t.group for t in plan.test_tiles(job.fold)}
        assert train and test and not train & test
        assert {t.label for t in plan.train_tiles(job)} == set(CLASSES)


def test_plan_on_the_real_lc25000_groups():
    root = shared_path("tiles/lc25000-lung-dev")
    plan = make_plan(root, None, 3, ["none"], "rckd_csat", [0.05, 0.2, 1.0], 2)
    # no published mpp: read at the nuclei estimate (0.47 µm/px), not squashed (0.29 µm/px)
    (line,) = plan.scale_lines
    assert "lc25000-lung-dev records no µm/px; read at 0.4" in line
    assert {round(t.mpp, 2) for t in plan.tiles} == {0.47}
    jobs = plan.jobs()
    assert len(jobs) == 3 * 2 * 3
    tested = set()
    for job in jobs:
        train = plan.train_tiles(job)
        test = plan.test_tiles(job.fold)
        assert not {t.group for t in train} & {t.group for t in test}
        assert {t.label for t in train} == {"lung_aca", "lung_n", "lung_scc"}
        tested |= {t.path for t in test}
        if job.budget == 0.05:  # nested: the 5 % groups are among the 20 % of the same seed
            larger = plan.train_tiles(type(job)(job.fold, job.seed, 0.2, job.init))
            assert {t.group for t in train} < {t.group for t in larger}
    assert len(tested) == 5090  # every tile is tested exactly in its own fold


def test_paired_interval_by_hand():
    mean, low, high = t_interval([0.1, 0.2, 0.3])
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, 2) × sd / sqrt(n)
    assert mean == pytest.approx(0.2) and (low, high) == pytest.approx((0.2 - half, 0.2 + half))
    assert math.isnan(t_interval([0.5])[1])
    rows = [
        {"init": init, "budget": 0.1, "seed": seed, "fold": 0, "balanced_accuracy": score,
         "macro_f1": score}
        for init, seed, score in [("csat", 0, 0.8), ("none", 0, 0.7), ("csat", 1, 0.9),
                                  ("none", 1, 0.6), ("csat", 2, 0.5)]  # seed 2: no partner
    ]  # fmt: skip
    (line,) = paired_rows(rows)
    assert line["pairs"] == 2 and line["balanced_accuracy"].startswith("+0.200 [")


def loose_folder(tmp_path):
    folder = make_grouped_folder(tmp_path / "loose", with_csv=False)
    (folder / "benign" / "benign-0-0.png").rename(folder / "stray.png")
    return folder


def one_class(tmp_path):
    folder = make_grouped_folder(tmp_path / "one", with_csv=False)
    for name in CLASSES[1:]:
        for path in (folder / name).iterdir():
            path.unlink()
        (folder / name).rmdir()
    return folder


def missing_file(tmp_path):
    folder = make_grouped_folder(tmp_path / "missing")
    (folder / "stroma" / "stroma-2-1.png").unlink()
    return folder


@pytest.mark.parametrize(
    "make, extra, expected",
    [
        (loose_folder, [], ["has no class folders", "stray.png", "sub-folder"]),
        (one_class, [], ["only one class folder (benign)", "add a sub-folder"]),
        (missing_file, [], ["groups.csv names 1 files", "stroma-2-1.png", "restore"]),
        (None, ["--budgets", "0.05"], ["leaves class benign", "raise the budget"]),
        (None, ["--inits", "imagenet"], ["no ImageNet weights for rckd_csat", "drop imagenet"]),
        (None, ["--inits", "none,nothing.pt"], ["nothing.pt is neither", "check the spelling"]),
    ],
)
def test_bad_input_is_one_sentence_naming_the_folder(
    grouped, tmp_path, capsys, make, extra, expected
):
    folder = make(tmp_path) if make else grouped
    args = ["bench", "transfer", "--train", str(folder), "--budgets", "1", "--inits", "none"]
    assert main([*args, *TINY, *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    for text in expected:
        assert text in error[0], error[0]
    if make is not None:
        assert str(folder) in error[0]


def test_test_folder_sharing_a_group_is_refused(grouped, tmp_path, capsys):
    code = main(["bench", "transfer", "--train", str(grouped), "--test", str(grouped), *TINY])
    assert code == 2 and "share the group" in capsys.readouterr().err


def test_a_stop_keeps_the_finished_runs(grouped, tmp_path, monkeypatch, capsys):
    """Ctrl-C sets the stop event: here it is set as the first run finishes."""
    import napari_rckd.bench.transfer as transfer

    original = transfer.run_job

    def stop_after_one(plan, job, recipe, tester, out_dir, bar, stop):
        row = original(plan, job, recipe, tester, out_dir, bar, stop)
        stop.set()
        return row

    monkeypatch.setattr(transfer, "run_job", stop_after_one)
    args = ["bench", "transfer", "--train", str(grouped), "--inits", "none", "--folds", "2"]
    args += ["--budgets", "1", "--seeds", "2", "--json", str(tmp_path / "t.json"), *TINY]
    assert main(args) == 130
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["status"] == "cancelled" and len(saved["rows"]) == 1
    assert "1 of 4 runs (cancelled)" in capsys.readouterr().out


def test_resume_trains_only_the_missing_runs(grouped, tmp_path, monkeypatch, capsys):
    """A stopped run continues from its --json; the file is never overwritten unasked."""
    import napari_rckd.bench.transfer as transfer

    original, trained, stops = transfer.run_job, [], [True]

    def stop_after_one(plan, job, recipe, tester, out_dir, bar, stop):
        trained.append(job)
        row = original(plan, job, recipe, tester, out_dir, bar, stop)
        if stops.pop() if stops else False:
            stop.set()
        return row

    monkeypatch.setattr(transfer, "run_job", stop_after_one)
    path = tmp_path / "r.json"
    args = ["bench", "transfer", "--train", str(grouped), "--inits", "none", "--folds", "2"]
    args += ["--budgets", "1", "--seeds", "2", "--json", str(path), *TINY]
    assert main(args) == 130
    first = json.loads(path.read_text())["rows"]
    capsys.readouterr()
    trained.clear()

    assert main(args) == 2  # no --resume: refused, the file untouched
    assert "pass --resume" in capsys.readouterr().err
    assert json.loads(path.read_text())["rows"] == first
    assert main([*args, "--steps", "3", "--resume"]) == 2  # other settings: refused
    assert "steps=2" in capsys.readouterr().err

    assert main([*args, "--resume"]) == 0
    saved = json.loads(path.read_text())
    assert saved["status"] == "completed" and len(saved["rows"]) == 4
    assert saved["rows"][0] == first[0] and len(trained) == 3  # only the missing runs
    assert "1 runs kept" in capsys.readouterr().out


def test_a_file_from_before_the_scale_rule_is_not_resumed(tmp_path):
    """Runs of squashed tiles (a file without read_mpp) never mix with runs at the kept scale."""
    from napari_rckd.bench.transfer_resume import SAME_RESULT, finished_rows
    from napari_rckd.errors import RckdError

    settings = {k: None for k in SAME_RESULT} | {"task": "classify", "read_mpp": [0.471]}
    old = {k: v for k, v in settings.items() if k != "read_mpp"}
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"settings": old, "rows": [{"init": "none"}]}))
    with pytest.raises(RckdError, match="read_mpp='squashed'"):
        finished_rows(str(path), True, settings)
    given = old | {"data_mpp": 0.4}  # --data-mpp then and now: the same scale, kept
    path.write_text(json.dumps({"settings": given, "rows": [{"init": "none"}]}))
    assert finished_rows(str(path), True, given | {"read_mpp": [0.4]}) == [{"init": "none"}]
