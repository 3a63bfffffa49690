"""`napari-rckd bench transfer --task segment`: region segmentation on SYNTHETIC mosaics of
grouped tiles (benign vs tumour, mIoU): rows, leak-free mosaics, determinism, and one
sentence for a class list without a benign region."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from grouped_tiles import make_grouped_folder
from napari_rckd.bench.transfer_mosaic import REGIONS, Segment, benign_classes, stitch
from napari_rckd.bench.transfer_plan import make_plan
from napari_rckd.bench.transfer_stats import paired_rows, summary_rows
from napari_rckd.cli import main
from napari_rckd.errors import RckdError
from napari_rckd.training.recipes.stage2 import Stage2Recipe

TINY = ["--steps", "2", "--tile-size", "32", "--batch-size", "4", "--device", "cpu"]
KEYS = {"init", "backbone", "budget", "seed", "fold", "miou", "iou_benign", "iou_tumour"}
KEYS |= {"n_train", "n_test", "steps", "seconds"}


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    return make_grouped_folder(tmp_path_factory.mktemp("segment") / "tiles")


def run_bench(folder, json_path, *extra) -> dict:
    args = ["bench", "transfer", "--task", "segment", "--train", str(folder), "--folds", "2"]
    args += ["--inits", "none", "--budgets", "1", "--seeds", "1", "--json", str(json_path)]
    assert main([*args, *TINY, *extra]) == 0
    return json.loads(json_path.read_text())


def test_tiny_segment_run_rows_and_determinism(grouped, tmp_path, capsys):
    first = run_bench(grouped, tmp_path / "a.json")
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "miou" in out and "balanced_accuracy" not in out
    rows = first["rows"]
    assert len(rows) == 2 and first["status"] == "completed"  # two folds
    assert "SYNTHETIC" in first["title"] and first["settings"]["task"] == "segment"
    for row in rows:
        assert set(row) >= KEYS and "balanced_accuracy" not in row
        assert row["steps"] == 2 and row["n_train"] == 27
        assert row["n_test"] == 7  # 27 test tiles, 4 to a 2×2 mosaic
        for key in ("miou", "iou_benign", "iou_tumour"):
            assert 0 <= row[key] <= 1
        assert row["miou"] == pytest.approx((row["iou_benign"] + row["iou_tumour"]) / 2)
    assert [line["init"] for line in first["summary"]] == ["none"]
    again = run_bench(grouped, tmp_path / "b.json")
    assert [r["miou"] for r in rows] == [r["miou"] for r in again["rows"]]


def segment_kind(folder, grid=2, benign=None) -> tuple:
    plan = make_plan(folder, None, 2, ["none"], "rckd_csat", [0.5, 1.0], 2)
    recipe = Stage2Recipe(tile_size=16, batch_size=4, device="cpu")
    args = argparse.Namespace(grid=grid, benign=benign, train=str(folder))
    return plan, Segment.from_args(plan, recipe, args)


def test_train_and_test_mosaics_never_share_a_group(grouped):
    plan, kind = segment_kind(grouped, grid=3)
    assert kind.benign == {"benign"} and kind.recipe.tile_size == 48
    assert kind.recipe.task == "segment"
    torch.manual_seed(0)
    for job in plan.jobs():
        train = kind.train_set(plan.train_tiles(job))
        tester = kind.tester(plan.test_tiles(job.fold), job.fold)
        tested = set().union(*tester.groups)
        assert train.groups and tested and not set(train.groups) & tested
        assert tested <= {t.group for t in plan.test_tiles(job.fold)}
        item = train[0]
        assert item["image"].shape == (3, 48, 48) and item["mask"].shape == (48, 48)
        assert set(item["mask"].unique().tolist()) == {1, 2}  # both regions, none unlabelled
        for mask in tester.masks:  # every test mosaic holds both regions too
            assert set(mask.unique().tolist()) == {1, 2}


def test_stitch_places_each_tile_and_its_region():
    cells = [torch.full((3, 2, 2), float(k)) for k in range(4)]
    image, mask = stitch(cells, [0, 1, 1, 0], 2)
    assert image.shape == (3, 4, 4) and image[0, 0, 3] == 1 and image[0, 3, 0] == 2
    assert mask.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [2, 2, 1, 1], [2, 2, 1, 1]]


def test_benign_classes_from_names_or_flag():
    assert benign_classes(["lung_aca", "lung_n", "lung_scc"], None, "x") == {"lung_n"}
    assert benign_classes(["Normal", "TUM"], None, "x") == {"Normal"}
    assert benign_classes(["a", "b"], ["b"], "x") == {"b"}
    with pytest.raises(RckdError, match="leaves no tumour region"):
        benign_classes(["a", "b"], ["a", "b"], "x")


def renamed(grouped, tmp_path):
    folder = tmp_path / "renamed"
    shutil.copytree(grouped, folder)
    (folder / "groups.csv").unlink()
    (folder / "benign").rename(folder / "alpha")
    return folder


@pytest.mark.parametrize(
    "extra, expected",
    [
        ([], ["no class folder of --train", "alpha, stroma, tumour", "--benign NAME"]),
        (["--benign", "beta"], ["--benign beta is not a class folder", "alpha"]),
        (["--benign", "alpha", "--grid", "1"], ["--grid 1", "give --grid 2 or more"]),
    ],
)
def test_bad_segment_input_is_one_sentence(grouped, tmp_path, capsys, extra, expected):
    folder = renamed(grouped, tmp_path)
    args = ["bench", "transfer", "--task", "segment", "--train", str(folder), "--budgets", "1"]
    assert main([*args, "--inits", "none", *TINY, *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    for text in expected:
        assert text in error[0], error[0]


def test_a_classification_file_is_not_resumed_as_segmentation(grouped, tmp_path, capsys):
    path = tmp_path / "old.json"  # written before --task existed: its runs classified
    path.write_text(json.dumps({"settings": {"train": str(grouped)}, "rows": []}))
    args = ["bench", "transfer", "--task", "segment", "--train", str(grouped), "--resume"]
    args += ["--budgets", "1", "--inits", "none"]
    assert main([*args, "--json", str(path), *TINY]) == 2
    assert "task='classify'" in capsys.readouterr().err


def test_tables_follow_the_rows_metrics():
    rows = [
        {"init": init, "budget": 0.2, "seed": seed, "fold": 0, "n_train": 10, "miou": score,
         "iou_benign": score, "iou_tumour": score}
        for init, seed, score in [("csat", 0, 0.6), ("none", 0, 0.5), ("csat", 1, 0.7),
                                  ("none", 1, 0.5)]
    ]  # fmt: skip
    (line,) = paired_rows(rows)
    assert line["miou"].startswith("+0.150 [") and "balanced_accuracy" not in line
    assert {"miou", "iou_benign", "iou_tumour"} <= set(summary_rows(rows)[0])
    assert REGIONS == ("benign", "tumour")
