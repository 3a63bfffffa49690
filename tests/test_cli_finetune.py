"""`napari-rckd finetune` and `evaluate tiles` on real colorectal tiles and a real nuclei image:
group splits, best checkpoint with its metrics, a stage-1 init, and one clear sentence (exit
code 2) for each kind of bad input, with nothing trained lost."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.cli import main

TINY = ["--tile-size", "64", "--batch-size", "8", "--device", "cpu", "--label-from", "prefix",
        "--workers", "0"]  # fmt: skip


def error_of(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def link_tiles(folder, sources, keep=lambda name: True):
    folder.mkdir()
    for source in sources:
        if keep(source.name):
            (folder / source.name).symlink_to(source)
    return folder


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory):
    """A (untrained) dense resnet18 student in the stage-1 checkpoint format."""
    from napari_rckd.models import ModelConfig, create_model, save_checkpoint

    model = create_model(ModelConfig(task="dense", backbone="resnet18", num_outputs=1))
    path = tmp_path_factory.mktemp("stage1") / "best.safetensors"
    return save_checkpoint(path, model, {"stage": "rckd-stage1"})


@pytest.fixture(scope="module")
def crc_run(tmp_path_factory, stage1_checkpoint):
    data = shared_path("tiles/crc-val-he-7k")
    out = tmp_path_factory.mktemp("crc")
    args = ["finetune", str(data), "--out", str(out), "--init", str(stage1_checkpoint)]
    assert main([*args, "--steps", "2", *TINY]) == 0
    return out


def test_classifier_from_stage1_keeps_best_with_metrics(crc_run, stage1_checkpoint):
    from napari_rckd.models import load_checkpoint

    model, metadata = load_checkpoint(crc_run / "best.safetensors")
    config = model.config
    assert config.task == "classify" and config.backbone == "resnet18"  # from the init
    assert config.class_names == ["ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
    provenance = metadata["provenance"]
    assert provenance["init"]["name"] == stage1_checkpoint.name
    assert provenance["init"]["path"] == str(stage1_checkpoint)
    assert provenance["init"]["provenance"] == {"stage": "rckd-stage1"}
    # each CRC tile is its own source: 20% of 32 sources, one or more per class, validate
    assert provenance["train_tiles"] + provenance["val_tiles"] == 32
    assert provenance["val_tiles"] >= 8
    validation = provenance["validation"]
    assert validation["step"] == provenance["best_step"]
    assert 0 <= validation["balanced_accuracy"] <= 1 and "f1/TUM" in validation


def test_evaluate_tiles_on_another_cohort(crc_run, tmp_path, capsys):
    nct = sorted(shared_path("tiles/nct-crc-he-100k").iterdir())
    matching = link_tiles(tmp_path / "nct", nct, keep=lambda n: not n.startswith("BACK"))
    checkpoint = str(crc_run / "best.safetensors")
    args = ["evaluate", "tiles", checkpoint, "--label-from", "prefix", "--json"]
    assert main([*args, str(tmp_path / "m.json"), "--data", str(matching)]) == 0
    import json

    rows = {r["metric"]: r["value"] for r in json.loads((tmp_path / "m.json").read_text())["rows"]}
    assert rows["tiles"] == 8 and 0 <= rows["balanced_accuracy"] <= 1
    # BACK is no class of the model: one sentence naming it
    whole = shared_path("tiles/nct-crc-he-100k")
    assert (
        main(["evaluate", "tiles", checkpoint, "--label-from", "prefix", "--data", str(whole)]) == 2
    )
    message = error_of(capsys)
    assert "BACK" in message and "TUM" in message


def test_segmentation_from_a_real_nuclei_mask(tmp_path):
    import tifffile

    from napari_rckd.models import load_checkpoint

    image = shared_path("nuclei/cpm15/image01.png")
    labels = tifffile.imread(shared_path("nuclei/cpm15/image01_label.tif"))
    mask = np.where(labels > 0, 2, 1).astype(np.uint8)  # 1 = background, 2 = nucleus
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    out = tmp_path / "seg"
    args = ["finetune", "--task", "segment", "--slide", str(image), "--slide-mpp", "0.5"]
    args += ["--masks", str(tmp_path / "mask.tif"), "--classes", "background,nucleus"]
    args += ["--backbone", "efficientnet_b0", "--decoder", "light"]
    assert main([*args, "--out", str(out), "--steps", "2", *TINY]) == 0
    model, metadata = load_checkpoint(out / "best.safetensors")
    assert model.config.task == "dense" and model.config.num_outputs == 2
    assert model.config.decoder == "light" and model.decoder.out_channels == 16
    assert 0 <= metadata["provenance"]["validation"]["miou"] <= 1


@pytest.mark.parametrize(
    "case, expected",
    [
        ("one_class", "only one class"),
        ("outside", "outside the class list"),
        ("empty", "contains no images"),
        ("other_backbone", "--backbone"),
        ("existing_run", "--resume"),
    ],
)
def test_bad_input_is_one_sentence_and_keeps_checkpoints(
    case, expected, tmp_path, capsys, stage1_checkpoint
):
    crc = shared_path("tiles/crc-val-he-7k")
    out = tmp_path / "run"
    out.mkdir()
    kept = out / "best.safetensors"
    kept.write_bytes(b"a model trained earlier")
    data, extra = str(crc), []
    if case == "one_class":
        data = str(
            link_tiles(tmp_path / "adi", sorted(crc.iterdir()), lambda n: n.startswith("ADI"))
        )
    elif case == "outside":
        extra = ["--classes", "ADI,DEB,LYM"]
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        data = str(tmp_path / "empty")
    elif case == "other_backbone":
        extra = ["--init", str(stage1_checkpoint), "--backbone", "rckd_csat"]
    if case != "existing_run":
        extra.append("--resume")  # get past the out-dir guard to reach the data checks
    code = main(["finetune", data, "--out", str(out), "--steps", "1", *extra, *TINY])
    assert code == 2
    message = error_of(capsys)
    assert expected in message, message
    assert message.count("\n") == 0
    assert kept.read_bytes() == b"a model trained earlier"


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--annotations" in text and "--task segment" in text
