"""Issue 15: grouped tile folders keep copies of one source on one side of the split, ungrouped
copies and saturated validation are called out, ties pick the later checkpoint, and a
fine-tuned checkpoint records exactly which init it started from."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from conftest import shared_path
from grouped_tiles import CLASSES, make_grouped_folder
from napari_rckd.errors import RckdError
from napari_rckd.training.data.duplicates import find_copies, warn_about_copies
from napari_rckd.training.data.labelled import scan_tile_folders
from napari_rckd.training.data.splits import group_folds, split_by_group

TINY = dict(tile_size=32, batch_size=4, steps=2, device="cpu", workers=0)


def assert_no_group_on_both_sides(tiles, train, val):
    train_groups = {tiles[i].group for i in train}
    val_groups = {tiles[i].group for i in val}
    assert train_groups and val_groups and not train_groups & val_groups


def test_groups_csv_keeps_every_copy_on_one_side(tmp_path):
    tiles = scan_tile_folders(make_grouped_folder(tmp_path / "tiles"))
    assert len(tiles) == 54 and len({t.group for t in tiles}) == 18
    assert tiles[0].group == "tiles/benign-0"  # the csv's group, prefixed by the folder
    labels = [CLASSES.index(t.label) for t in tiles]
    for seed in range(6):
        train, val = split_by_group([t.group for t in tiles], labels, 0.25, seed)
        assert_no_group_on_both_sides(tiles, train, val)
        assert {tiles[i].label for i in val} == set(CLASSES)  # stratified by class


def test_real_lc25000_groups_never_straddle_a_split():
    root = shared_path("tiles/lc25000-lung-dev")
    tiles = scan_tile_folders(root, label_from="folder")
    assert len(tiles) == 5090 and len({t.group for t in tiles}) == 247
    groups = [t.group for t in tiles]
    labels = [t.label for t in tiles]
    classes = sorted(set(labels))
    index = [classes.index(label) for label in labels]
    for seed in range(3):
        train, val = split_by_group(groups, index, 0.2, seed)
        assert_no_group_on_both_sides(tiles, train, val)
        assert {labels[i] for i in val} == set(classes)
    folds = group_folds(groups, index, 3, seed=0)
    for fold in range(3):
        test, rest = np.nonzero(folds == fold)[0], np.nonzero(folds != fold)[0]
        assert_no_group_on_both_sides(tiles, rest, test)
        assert 0.25 < len(test) / len(tiles) < 0.42


def test_groups_file_mistakes_are_one_sentence(tmp_path):
    root = make_grouped_folder(tmp_path / "tiles")
    (root / "tumour" / "tumour-5-2.png").unlink()
    with pytest.raises(RckdError, match=r"names 1 files that are not in .*tiles.*tumour-5-2"):
        scan_tile_folders(root)
    extra = tmp_path / "groups.csv"
    extra.write_text("class,file\nbenign,benign/benign-0-0.png\n")
    with pytest.raises(RckdError, match="no column group"):
        scan_tile_folders(root, groups=extra)
    extra.write_text("class,group,file\nbenign,b0,benign/benign-0-0.png\n")
    with pytest.raises(RckdError, match=r"does not list 52 of the tiles"):
        scan_tile_folders(root, groups=extra)


def test_copies_without_groups_are_called_out_once(tmp_path, caplog):
    root = make_grouped_folder(tmp_path / "tiles", with_csv=False)
    tiles = scan_tile_folders(root)
    found = find_copies(tiles)
    assert [what for what, _, _ in found] == ["the same picture turned or flipped"]
    with caplog.at_level(logging.WARNING):
        assert warn_about_copies(tiles)
    assert len(caplog.records) == 1 and "groups.csv" in caplog.text
    # with the groups.csv the copies share a group: nothing to say
    make_grouped_folder(tmp_path / "grouped")
    assert find_copies(scan_tile_folders(tmp_path / "grouped")) == []


def test_identical_real_tiles_under_two_names_are_found(tmp_path):
    crc = shared_path("tiles/crc-val-he-7k")
    folder = tmp_path / "crc"
    shutil.copytree(crc, folder)
    first = sorted(folder.glob("TUM-*.png"))[0]
    shutil.copy(first, folder / "TUM-ACOPYOFIT.png")
    shutil.copy(first, folder / f"{first.stem}_rot90.png")
    whats = {what for what, _, _ in find_copies(scan_tile_folders(folder, label_from="prefix"))}
    assert whats == {
        "identical files",
        "the same picture turned or flipped",
        "names that differ only by a copy word",
    }
    assert find_copies(scan_tile_folders(crc, label_from="prefix")) == []


def test_saturated_validation_warns_and_the_tie_goes_to_the_later_step(tmp_path, caplog):
    from napari_rckd.training import ClassificationTask, FitConfig, fit
    from napari_rckd.training.recipes.stage2 import warn_if_saturated
    from synthetic_training import LabelledTiles, tiny_classifier

    class Perfect(ClassificationTask):
        def summarise(self, sums):
            return {**super().summarise(sums), "balanced_accuracy": 1.0}

    task = Perfect(tiny_classifier(), num_classes=3)
    config = FitConfig(steps=6, batch_size=4, val_every=2, checkpoint_every=6, device="cpu")
    result = fit(task, LabelledTiles(16), LabelledTiles(8), config, tmp_path)
    assert [h["step"] for h in result.history] == [2, 4, 6]
    assert result.best_step == 6  # three ties: the latest wins
    with caplog.at_level(logging.WARNING):
        assert warn_if_saturated(result)
    assert "probably leaking" in caplog.text
    result.history[1]["balanced_accuracy"] = 0.97
    assert not warn_if_saturated(result)


@pytest.fixture(scope="module")
def two_inits_named_alike(tmp_path_factory):
    """Two different stage-1 CSAT students, both called best.safetensors."""
    import torch

    from napari_rckd.models import ModelConfig, create_model, save_checkpoint

    paths = []
    for run in ("a", "b"):
        torch.manual_seed(ord(run))
        config = ModelConfig(task="dense", backbone="rckd_csat", input_mpp=0.5, tile_size=64)
        path = tmp_path_factory.mktemp(f"stage1-{run}") / "best.safetensors"
        paths.append(
            save_checkpoint(path, create_model(config), {"stage": "rckd-stage1", "run": run})
        )
    return paths


def test_provenance_tells_two_inits_of_one_name_apart(tmp_path, two_inits_named_alike, caplog):
    from napari_rckd.models import load_checkpoint
    from napari_rckd.training.recipes.stage2 import Stage2Data, Stage2Recipe, finetune

    data = make_grouped_folder(tmp_path / "tiles")
    inits = []
    for number, init in enumerate(two_inits_named_alike):
        with caplog.at_level(logging.INFO, logger="napari_rckd.training.recipes.stage2"):
            result = finetune(
                Stage2Data([data]), tmp_path / f"run{number}", Stage2Recipe(**TINY), init=init
            )
        _, metadata = load_checkpoint(result.last_checkpoint)
        inits.append(metadata["provenance"]["init"])
    a, b = inits
    assert a["name"] == b["name"] == "best.safetensors"
    assert a["path"] == str(two_inits_named_alike[0]) and a["path"] != b["path"]
    assert len(a["sha256"]) == 16 and a["sha256"] != b["sha256"]
    assert a["provenance"] == {"stage": "rckd-stage1", "run": "a"}
    assert b["provenance"]["run"] == "b"
    # tiles without an mpp: one line per run saying which scale they are read at, and why
    notes = [r.message for r in caplog.records if "records no µm/px" in r.message]
    assert len(notes) == 2 and "tiles" in notes[0] and "--data-mpp" in notes[0]


def test_cli_and_python_share_the_recipe_defaults():
    from napari_rckd.cli import build_parser
    from napari_rckd.commands.finetune import task_defaults
    from napari_rckd.training.recipes.stage2 import DEFAULT_WORKERS, Stage2Recipe

    args = build_parser().parse_args(["finetune", "x", "--out", "y", "--steps", "1"])
    task_defaults(args)  # what the command does first: the options left out, at the task's
    assert args.workers == DEFAULT_WORKERS == Stage2Recipe().workers
    recipe, rest = Stage2Recipe.split(vars(args))
    assert recipe == Stage2Recipe(steps=1)  # every other recipe flag defaults as in Python
    assert "init" in rest and "steps" not in rest


def test_csat_names_the_shipped_student(tmp_path, monkeypatch, two_inits_named_alike):
    import napari_rckd.models.shipped as shipped
    from napari_rckd.training.initial import resolve_init

    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    with pytest.raises(RckdError, match="shipped 'csat' weights .* are missing"):
        resolve_init("csat", None)
    stage2 = shipped.weights_path("csat", stage2=True).name
    shutil.copy(two_inits_named_alike[0], tmp_path / stage2)
    start = resolve_init("csat", None)
    assert start.backbone == "rckd_csat" and start.trained_mpp == 0.5
    identity = start.identity()
    assert identity["path"] == "csat" and identity["name"] == stage2
    with pytest.raises(RckdError, match="--init rckd-csat-stage1.safetensors holds a 'rckd_csat'"):
        resolve_init("csat", "resnet18")


def test_every_training_command_takes_its_defaults_from_its_recipe():
    """Each option's default is written once, in the recipe; the flags read it."""
    from napari_rckd.cli import build_parser
    from napari_rckd.training.recipes.stage1 import Stage1Recipe
    from napari_rckd.training.recipes.stage2 import Stage2Data
    from napari_rckd.training.recipes.teacher import TeacherRecipe

    parse = build_parser().parse_args
    args = parse(["pretrain", "slides", "--out", "y"])
    assert Stage1Recipe.split(vars(args))[0] == Stage1Recipe()
    args = parse(["train-teacher", "data", "--out", "y"])
    given = {k: v for k, v in vars(args).items() if v is not None}
    assert TeacherRecipe.split(given)[0] == TeacherRecipe()
    args = parse(["finetune", "tiles", "--out", "y"])
    assert Stage2Data.split(vars(args))[0] == Stage2Data(data=["tiles"])
