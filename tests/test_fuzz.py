"""Mutated TIFFs never hang, crash or raise anything but the project's error (see docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_rckd.bench.fuzz_inputs import MUTATIONS, mutate, write_seeds

INPUTS = 300


def test_reader_fuzz_has_no_hang_crash_or_raw_exception(tmp_path):
    """The `bench fuzz` command itself, in a fresh process, as CI runs it."""
    report = tmp_path / "fuzz.json"
    command = [sys.executable, "-m", "napari_rckd.cli", "bench", "fuzz", "--n", str(INPUTS)]
    command += ["--seed", "11", "--timeout", "30", "--json", str(report), "--keep", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    counts = {row["outcome"]: row["inputs"] for row in json.loads(report.read_text())["rows"]}
    assert sum(counts.values()) == INPUTS, done.stdout + done.stderr
    assert (counts["hang"], counts["crash"], counts["raw"]) == (0, 0, 0), done.stdout
    assert done.returncode == 0
    # the mutations reach all three paths, or the fuzz proves little
    assert min(counts["ok"], counts["refused"], counts["damaged"]) > 0, counts


def test_seeds_open_and_mutations_change_them(tmp_path):
    from napari_rckd.io import open_slide

    seeds = write_seeds(tmp_path)
    levels = {}
    for seed in seeds:
        with open_slide(tmp_path / seed.name) as slide:
            levels[seed.name] = len(slide.levels)
    assert levels["subifd-pyramid.ome.tif"] == 3 and levels["wide-single-level.tif"] == 4
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(200):
        kind, data = mutate(seeds[0], rng)
        kinds.add(kind)
        assert data != seeds[0].data or kind == "overwrite"  # an overwrite may write what was there
    assert kinds == set(MUTATIONS)


@pytest.mark.parametrize("outcome", ["hang", "crash"])
def test_sandbox_reports_hangs_and_crashes(outcome, tmp_path, monkeypatch):
    """The harness must be able to see the failures it exists to count."""
    from napari_rckd.bench import fuzz_sandbox

    def misbehave(path: Path) -> str:
        if outcome == "hang":
            while True:
                pass
        os.abort()

    monkeypatch.setattr(fuzz_sandbox, "exercise", misbehave)
    result = fuzz_sandbox.run_isolated(tmp_path / "x.tif", 1.0, fuzz_sandbox.memory_cap(2**30))
    assert result.startswith(outcome)


def test_input_that_made_tifffile_loop_is_refused(tmp_path):
    """Found by `bench fuzz --seed 1` (input 2084): a bit flip in a tifffile-written grey TIFF
    made tifffile's shaped-series parser loop forever; the reader now skips that parser."""
    from napari_rckd.bench import fuzz_sandbox

    seeds = write_seeds(tmp_path / "seeds")
    rng = np.random.default_rng(1)
    for index in range(2085):  # replay the run's random stream up to that input
        kind, data = mutate(seeds[index % len(seeds)], rng)
    assert (kind, seeds[2084 % len(seeds)].name) == ("bitflip", "grey-tiled.tif")
    path = tmp_path / "looped.tif"
    path.write_bytes(data)
    assert fuzz_sandbox.run_isolated(path, 30.0, fuzz_sandbox.memory_cap(2**30)) == "refused"
