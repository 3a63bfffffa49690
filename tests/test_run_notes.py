"""Runs say what they did: start weights with their provenance, the validation split, the
pixel size and where the model went, on the terminal and in OUT/run.log; `evaluate` warns when
the test data is data the model learnt from."""

from __future__ import annotations

import logging
import re

import pytest

from conftest import shared_path
from grouped_tiles import make_grouped_folder
from napari_rckd.cli import main

FAST = ["--batch-size", "4", "--device", "cpu", "--workers", "0"]


def told(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


@pytest.fixture(scope="module")
def crc_run(tmp_path_factory):
    """Two steps of fine-tuning the shipped student on real CRC tiles, with the run's log."""
    out = tmp_path_factory.mktemp("crc") / "run"
    data = shared_path("tiles/crc-val-he-7k")
    argv = ["finetune", str(data), "--out", str(out), "--label-from", "prefix", "--steps", "2"]
    handler = _Collect()
    logging.getLogger("napari_rckd").addHandler(handler)
    try:
        assert main([*argv, "--tile-size", "64", *FAST]) == 0
    finally:
        logging.getLogger("napari_rckd").removeHandler(handler)
    return out, "\n".join(handler.lines)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_finetune_says_where_it_started_how_it_split_and_where_the_model_went(crc_run):
    out, text = crc_run
    assert (
        "start weights: the shipped RCKD-CSAT student 'csat' (rckd-csat-stage1.safetensors" in text
    )
    assert "provenance: stage rckd-stage1" in text and "licence non-commercial" in text
    # 32 tiles, each its own source: 8 validate (20 %, at least one per class)
    assert "24 groups train (24 tiles), 8 other groups validate (8 tiles)" in text
    assert "every group is a single file" in text  # and it says what that risks
    # crc-val tiles record no mpp: read at the nuclei estimate or their own pixels (the rule
    # of training.data.scale), never squashed into the 64-px tile
    line = next(x for x in text.splitlines() if x.startswith("pixel size: crc-val-he-7k"))
    assert "records no µm/px" in line and "--data-mpp" in line
    assert "estimated from the size of the nuclei" in line or "read at its own pixels" in line
    assert f"model: {out / 'best.safetensors'}" in text
    log = (out / "run.log").read_text(encoding="utf-8")
    for line in ("start weights:", "validation: split by group", "pixel size:", "model:"):
        assert line in log


def test_finetune_names_the_groups_file_and_counts_groups(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = make_grouped_folder(tmp_path / "tiles", groups_per_class=5, copies=3)
    out = tmp_path / "run"
    argv = ["finetune", str(data), "--out", str(out), "--init", "none", "--backbone", "resnet18"]
    assert main([*argv, "--steps", "1", "--tile-size", "32", *FAST]) == 0
    text = told(caplog)
    assert "start weights: random (resnet18, --init none)" in text
    assert (
        "split by group (groups.csv beside tiles): 12 groups train (36 tiles), 3 other groups validate (9 tiles)"
        in text
    )
    assert "every group is a single file" not in text


def test_evaluate_warns_when_the_test_tiles_trained_the_model(crc_run, tmp_path, caplog):
    out, _ = crc_run
    checkpoint = str(out / "best.safetensors")
    caplog.set_level(logging.INFO)
    data = shared_path("tiles/crc-val-he-7k")
    assert (
        main(["evaluate", "tiles", checkpoint, "--data", str(data), "--label-from", "prefix"]) == 0
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "24 of the 32 test tiles trained best.safetensors and 8 validated it" in w for w in warnings
    )
    caplog.clear()
    other = tmp_path / "other"  # another cohort, the classes this model knows
    other.mkdir()
    for tile in shared_path("tiles/nct-crc-he-100k").iterdir():
        if not tile.name.startswith("BACK"):
            (other / tile.name).symlink_to(tile)
    assert (
        main(["evaluate", "tiles", checkpoint, "--data", str(other), "--label-from", "prefix"]) == 0
    )
    assert not [r for r in caplog.records if "in-sample" in r.getMessage()]


def test_pretrain_and_train_teacher_say_what_they_did(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    slide = shared_path("slides/cmu-1-small-region.svs")
    out = tmp_path / "stage1"
    argv = ["pretrain", str(slide), "--out", str(out), "--steps", "1", "--backbone", "resnet18"]
    assert main([*argv, "--tile-size", "64", "--tiles", "8", "--val-tiles", "2", *FAST]) == 0
    text = told(caplog)
    assert "start weights: random (stage 1 trains a new resnet18 student)" in text
    assert "teacher: builtin, weights builtin (nuclei-teacher.safetensors, sha256 " in text
    assert "sources cpm15, cryonuseg, monuseg-train, monuseg-train-semantic" in text
    assert "tiles cut at 0.5 µm/px from cmu-1-small-region.svs at 0.499 µm/px from the file" in text
    assert "validation: 2 more tissue tiles" in text and "not split by slide" in text
    assert f"model: {out / 'best.safetensors'}" in text
    assert "teacher: builtin" in (out / "run.log").read_text(encoding="utf-8")

    caplog.clear()
    out = tmp_path / "teacher"
    data = shared_path("nuclei")  # CryoNuSeg's two images: the other sources held out
    argv = ["train-teacher", str(data), "--out", str(out), "--steps", "1", "--backbone", "resnet18"]
    argv += ["--holdout", "cpm15", "--holdout", "monuseg", "--tile-size", "64"]
    assert main([*argv, "--batch-size", "2", "--workers", "0", "--device", "cpu"]) == 0
    text = told(caplog)
    assert "start weights: random (a new resnet18 teacher)" in text
    assert "(whole images, each its own group): 1 groups train (1 images), 1 other groups" in text
    assert re.search(
        r"pixel size: images at [0-9.]+-[0-9.]+ µm/px \(from manifest.csv\), resampled once to the model's 0.25 µm/px",
        text,
    )
    assert f"model: {out / 'best.safetensors'}" in (out / "run.log").read_text(encoding="utf-8")


def test_nuclei_models_say_which_test_images_they_learnt_from(caplog):
    from napari_rckd.training.in_sample import warn_if_nuclei_seen

    caplog.set_level(logging.WARNING)
    names = ["TCGA-DE-A4MA.tif", "image03.png", "never-seen.tif"]
    warning = warn_if_nuclei_seen("builtin", names, "builtin")
    assert warning == (
        "builtin: of the 3 test images, 1 trained it, 1 validated it (by the image names its "
        "provenance records): its scores on them are in-sample, not a test"
    )
    assert warning in caplog.text
    assert warn_if_nuclei_seen("csat", names, "csat").startswith(
        "csat: of the 3 test images, 2 were"
    )
    assert warn_if_nuclei_seen("classical", names, "classical") is None  # records nothing
    assert warn_if_nuclei_seen("builtin", ["never-seen.tif"], "builtin") is None


def test_an_older_checkpoint_without_fingerprints_is_judged_by_folder_name(tmp_path):
    from napari_rckd.training.in_sample import tiles_seen

    tile = tmp_path / "lc25000-lung-dev" / "a.jpeg"
    provenance = {"data": ["lc25000-lung-dev"], "train_tiles": 4042}
    warning = tiles_seen(provenance, [tile], [str(tile.parent)], "best.safetensors")
    assert "lc25000-lung-dev has the name of data best.safetensors was trained on" in warning
    assert tiles_seen(provenance, [tile], [str(tmp_path / "held-out")], "m") is None
