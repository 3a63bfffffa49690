"""`evaluate tiles`: a set holding a class the model does not know (NCT-CRC's BACK) is refused
in one sentence, or scored on what the model knows with --skip-unknown, which says what it left."""

from __future__ import annotations

import json

import pytest

from conftest import shared_path
from napari_rckd.cli import main
from test_predict import tiny_checkpoint

KNOWN = ["ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "nct.safetensors"
    return tiny_checkpoint(path, "classify", len(KNOWN), 0.5, names=KNOWN)


def test_skip_unknown_scores_known_classes_and_reports_the_rest(classifier, tmp_path, capsys):
    data = shared_path("tiles/nct-crc-he-100k")
    argv = ["evaluate", "tiles", str(classifier), "--label-from", "prefix", "--data", str(data)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "BACK" in error and "--skip-unknown" in error

    out = tmp_path / "m.json"
    assert main([*argv, "--skip-unknown", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped: 1 tiles of BACK" in printed
    result = json.loads(out.read_text())
    rows = {row["metric"]: row["value"] for row in result["rows"]}
    assert rows["tiles"] == len(KNOWN) and 0 <= rows["balanced_accuracy"] <= 1
    assert result["skipped"] == "1 tiles of BACK"
