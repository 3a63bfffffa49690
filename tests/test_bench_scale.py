"""`bench scale` and `bench browse`: the structure and arithmetic of their rows (never speed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest


@pytest.mark.slow
def test_bench_scale_rows_and_summary(tmp_path, monkeypatch, capsys):
    from napari_rckd.cli import main

    monkeypatch.setenv("NAPARI_RCKD_CACHE", str(tmp_path / "cache"))  # slides generated here
    report = tmp_path / "scale.json"
    assert (
        main(["bench", "scale", "--sizes", "1024,2048", "--no-napari", "--json", str(report)]) == 0
    )
    figures = json.loads(report.read_text())
    rows = figures["rows"]
    assert [row["side_px"] for row in rows] == [1024, 2048]
    for row in rows:
        assert row["tiles"] > 0 and row["nuclei"] > 0
        assert row["tiles_per_s"] == pytest.approx(row["tiles"] / row["predict_s"], rel=0.1)
        assert 0 < row["model_share"] <= 1 and row["peak_rss_mb"] > 0
        ratio, predict = row["whole_over_predict"], row["predict_s"]
        rounding = (0.05 + 0.05 * ratio) / predict + 0.001  # both seconds are rounded to 0.1
        assert ratio == pytest.approx(row["whole_s"] / predict, abs=rounding)
    assert rows[1]["tiles"] > rows[0]["tiles"] and rows[1]["nuclei"] > rows[0]["nuclei"]
    ratios = figures["largest ÷ smallest"]
    assert ratios["peak_rss_mb"] == pytest.approx(
        rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], abs=0.01
    )
    assert sorted((tmp_path / "cache").glob("synthetic-he-*-seed1-*.ome.tif"))
    assert "Whole slides at growing sizes" in capsys.readouterr().out


def test_browse_visits_tissue_views_in_a_serpentine():
    from napari_rckd.bench.browse import view_centres

    class Tissue:  # tissue everywhere but the top-right view
        def fraction(self, y, x, height, width):
            return 0.0 if (y, x) == (0, 200) else 1.0

    slide = SimpleNamespace(shape=(300, 300), path=SimpleNamespace(name="s"))
    centres = view_centres(slide, Tissue(), 100, 100)
    assert centres == [
        (50, 50), (50, 150),  # row 0, left to right, without (0, 200)
        (150, 250), (150, 150), (150, 50),  # row 1, right to left
        (250, 50), (250, 150), (250, 250),
    ]  # fmt: skip
    steps = np.abs(np.diff(np.array(centres), axis=0)).max(axis=1)
    assert (steps <= 100).all()  # every jump is to a neighbouring view
