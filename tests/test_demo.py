"""`napari-rckd demo --headless` runs the whole workflow (tiny budget) and leaves screenshots,
valid exports and a demo.json whose checkpoints load; the annotations come from ground truth."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

DEMO_S = 600  # bounds a hang on a busy 2-core CPU, not a speed


def test_ground_truth_annotations_lie_inside_their_class():
    from napari_rckd._widgets.demo_script import cancer_mask, ground_truth_annotations
    from napari_rckd.io.synthetic import MAP_DOWNSAMPLE, REGION_CLASSES, synthetic_region_map

    region_map = synthetic_region_map(4096, seed=0)
    shapes = ground_truth_annotations(region_map, MAP_DOWNSAMPLE)
    assert {name for name, _, _ in shapes} == {"tumour", "stroma", "normal"}
    assert {kind for _, kind, _ in shapes} == {"rectangle", "polygon"}
    for name, _, vertices in shapes:
        corners = (vertices // MAP_DOWNSAMPLE).astype(int)
        (y0, x0), (y1, x1) = corners.min(axis=0), corners.max(axis=0)
        block = region_map[y0 : y1 + 1, x0 : x1 + 1]
        assert (block == REGION_CLASSES.index(name)).all(), name

    centre = shapes[0][2].mean(axis=0)
    mask = cancer_mask(region_map, MAP_DOWNSAMPLE, 2, (2048, 2048), centre, 600)
    assert set(np.unique(mask)) == {0, 1, 2}
    y, x = (centre // 2).astype(int)
    assert mask[y, x] == 2  # the tumour square's centre is tumour
    assert not mask[: max(y - 301, 0)].any()  # nothing painted outside the window


@pytest.mark.gui
@pytest.mark.slow
def test_headless_demo_writes_screenshots_exports_and_loadable_checkpoints(tmp_path):
    from PIL import Image

    from napari_rckd.io.annotations import read_annotations
    from napari_rckd.models import load_checkpoint

    out = tmp_path / "demo"
    command = [sys.executable, "-m", "napari_rckd.cli", "demo", "--headless", "--out", str(out),
               "--steps", "1", "--tiles", "8"]  # fmt: skip
    env = dict(os.environ, NAPARI_RCKD_CONFIG=str(tmp_path / "config"))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=DEMO_S)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((out / "demo.json").read_text())
    names = [step["name"] for step in summary["steps"]]
    assert names[:4] == ["slide", "annotations", "training", "trained"] and names[-1] == "exported"
    assert sum(name.startswith("live") for name in names) == 5
    for step in summary["steps"]:
        pixels = np.asarray(Image.open(out / step["screenshot"]).convert("RGB"), float)
        assert pixels.shape[0] > 400 and pixels.std() > 10, step["screenshot"]

    assert set(summary["checkpoints"]) == {"nuclei", "subtype", "region"}
    tasks = {
        kind: load_checkpoint(path)[0].config.task for kind, path in summary["checkpoints"].items()
    }
    assert tasks == {"nuclei": "dense", "subtype": "classify", "region": "dense"}
    assert summary["tiles_computed"]["nuclei (teacher)"] > 0
    assert summary["tiles_computed"]["subtype"] > 0 and summary["tiles_computed"]["region"] > 0

    exports = {name: out / name for name in summary["files"] if name.startswith("export/")}
    by_suffix = {path.name.split(".", 1)[1]: path for path in exports.values()}
    assert {"nuclei.geojson", "nuclei.csv", "nuclei.ome.tif", "subtype.geojson",
            "region.geojson", "region.ome.tif"} <= set(by_suffix)  # fmt: skip
    regions = read_annotations(by_suffix["region.geojson"])
    assert regions and {r.name for r in regions} <= {"normal", "tumour"}
    with by_suffix["nuclei.csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and float(rows[0]["area_um2"]) > 0
    nuclei = json.loads(by_suffix["nuclei.geojson"].read_text())
    assert len(nuclei["features"]) == len(rows)


def test_budget_sets_the_training_unless_steps_and_tiles_are_given():
    from napari_rckd.cli import build_parser
    from napari_rckd.commands.demo import training_budget

    def budget(*extra):
        return training_budget(build_parser().parse_args(["demo", "--out", "x", *extra]))

    assert budget() == (20, 64)
    assert budget("--budget", "full") == (300, 512)
    assert budget("--budget", "full", "--steps", "5") == (5, 512)
