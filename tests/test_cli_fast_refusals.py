"""Bad paths and arguments are refused before torch is imported (so in about a second): each
case runs the CLI in a fresh interpreter and asserts on the exit code, the one-sentence error and
that torch was never loaded. Nothing is timed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
from napari_rckd.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""

CASES = {
    "pretrain missing slides": ["pretrain", "no-such-slides", "--out", "OUT", "--steps", "5"],
    "pretrain missing teacher": [
        "pretrain", ".", "--out", "OUT", "--steps", "5", "--teacher", "gone.safetensors",
    ],
    "finetune missing folder": ["finetune", "no-such-tiles", "--out", "OUT", "--epochs", "1"],
    "finetune missing init": [
        "finetune", ".", "--out", "OUT", "--epochs", "1", "--init", "gone.safetensors",
    ],
    "finetune bad backbone lr": [
        "finetune", ".", "--out", "OUT", "--epochs", "1", "--pretrained-backbone-lr", "2",
    ],
    "evaluate tiles missing checkpoint": ["evaluate", "tiles", "gone.safetensors", "--data", "."],
    "evaluate nuclei missing data": ["evaluate", "nuclei", "--data", "no-such-folder"],
}  # fmt: skip
EXPECTED = {
    "pretrain missing slides": "no-such-slides does not exist",
    "pretrain missing teacher": "gone.safetensors does not exist",
    "finetune missing folder": "no-such-tiles does not exist",
    "finetune missing init": "--init gone.safetensors does not exist",
    "finetune bad backbone lr": "--pretrained-backbone-lr 2.0 must lie in (0, 1]",
    "evaluate tiles missing checkpoint": "gone.safetensors does not exist",
    "evaluate nuclei missing data": "no-such-folder does not exist",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_before_torch_loads(case, tmp_path):
    argv = [a.replace("OUT", str(tmp_path / "run")) for a in CASES[case]]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, cwd=tmp_path
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "torch": False}, done.stderr
    error = done.stderr.strip()
    assert EXPECTED[case] in error and error.count("\n") == 0, error
    assert not (tmp_path / "run").exists()  # nothing written


def test_every_named_nuclei_model_passes_the_path_checks():
    """A name such as ``learned`` is a model, not a missing file (it once was refused)."""
    import argparse

    from napari_rckd import zoo
    from napari_rckd.commands import checks

    for name in zoo.names():
        checks.evaluate(argparse.Namespace(command="nuclei", teacher=[name], data="."))
