"""`napari-rckd evaluate nuclei` on real ground truth: the table and its JSON."""

from __future__ import annotations

import argparse
import json

import pytest

from conftest import shared_path
from napari_rckd.commands import evaluate


def parse(argv):
    parser = argparse.ArgumentParser(prog="napari-rckd evaluate")
    evaluate.add_arguments(parser)
    return parser.parse_args(argv)


def test_evaluate_nuclei_writes_a_row_per_teacher_and_source(tmp_path, capsys):
    data = shared_path("nuclei/cryonuseg")  # 2 images; mpp from the manifest two levels up
    out = tmp_path / "table.json"
    args = parse(["nuclei", "--teacher", "builtin", "--teacher", "otsu", "--data", str(data)])
    args.json = str(out)
    assert evaluate.run(args) == 0
    printed = capsys.readouterr().out
    assert "| builtin | cryonuseg" in printed and "| otsu    | cryonuseg" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [(r["teacher"], r["source"], r["images"]) for r in rows] == [
        ("builtin", "cryonuseg", 2),
        ("otsu", "cryonuseg", 2),
    ]
    builtin, otsu = rows
    assert 0 < otsu["aji"] < builtin["aji"] < 1 and 0 < builtin["dice"] < 1


def test_evaluate_needs_a_subcommand():
    with pytest.raises(SystemExit):
        parse([])


def test_missing_data_and_unknown_teacher_are_clear_errors(tmp_path):
    from napari_rckd.errors import RckdError

    with pytest.raises(RckdError, match="does not exist"):
        evaluate.run(parse(["nuclei", "--data", str(tmp_path / "nowhere")]))
    with pytest.raises(RckdError, match="no ground truth"):
        evaluate.run(parse(["nuclei", "--data", str(tmp_path)]))
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a_label.tif").write_bytes(b"")
    with pytest.raises(RckdError, match="resolution of .* is unknown"):
        evaluate.run(parse(["nuclei", "--data", str(tmp_path)]))


def test_two_checkpoints_of_one_name_keep_apart(tmp_path):
    """Two runs' best.safetensors would both be `student:run/best`: rows name their files."""
    import shutil

    from napari_rckd.models.shipped import shipped_weights

    paths = []
    for holdout in ("a", "b"):
        folder = tmp_path / holdout / "run"
        folder.mkdir(parents=True)
        paths.append(str(shutil.copy(shipped_weights("csat"), folder / "best.safetensors")))
    data = shared_path("nuclei/cryonuseg")
    args = parse(["nuclei", "--teacher", paths[0], "--teacher", paths[1], "--data", str(data)])
    args.json = str(tmp_path / "table.json")
    assert evaluate.run(args) == 0
    payload = json.loads((tmp_path / "table.json").read_text())
    assert sorted(row["teacher"] for row in payload["rows"]) == sorted(paths)
    assert sorted(payload["teachers"]) == sorted(paths)


def test_a_checkpoint_with_the_classical_prior(tmp_path, capsys):
    """`FILE+classical` averages a network with the classical detector (what `builtin` is);
    a missing FILE is named without the suffix."""
    from napari_rckd.errors import RckdError
    from napari_rckd.models.shipped import shipped_weights

    data = shared_path("nuclei/cryonuseg")
    weights = str(shipped_weights("csat"))
    args = parse(["nuclei", "--teacher", weights + "+classical", "--data", str(data)])
    args.json = str(tmp_path / "table.json")
    assert evaluate.run(args) == 0
    (row,) = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert row["teacher"] == "student:shipped/rckd-csat-nuclei+classical" and row["dice"] > 0.3
    missing = str(tmp_path / "gone.safetensors")
    with pytest.raises(RckdError, match=r"gone.safetensors does not exist; check the path"):
        evaluate.run(parse(["nuclei", "--teacher", missing + "+classical", "--data", str(data)]))
