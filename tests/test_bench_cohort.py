"""`bench cohort`: the table's rows and figures, the JSON, the estimate (structure only: no
timing is asserted)."""

from __future__ import annotations

import json
import shutil

import pytest

from napari_rckd.cli import main

pytest.importorskip("distributed")


@pytest.mark.slow
def test_bench_cohort_reports_every_mode_and_the_estimate(tmp_path, crop_path, monkeypatch, capsys):
    from napari_rckd.bench import cohort

    def slide_for(size: int, seed: int):  # the real-tissue crop instead of synthetic slides
        path = tmp_path / "slides" / f"s{size}-{seed}.tif"
        path.parent.mkdir(exist_ok=True)
        shutil.copy(crop_path, path)
        return path

    monkeypatch.setattr(cohort, "slide_for", slide_for)
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "cohort",
        "--slides",
        "2",
        "--size",
        "1",
        "--large-size",
        "2",
        "--slide-mpp",
        "0.499",
    ]
    assert main([*argv, "--empty-tasks", "10", "--rounds", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [row["cluster"] for row in rows] == ["none", "local:1", "local:2"]
    for row in rows:
        assert row["slides"] == 2 and row["tiles"] == 18  # 3 × 3 tiles a slide
        assert row["slides_per_h"] > 0 and row["tiles_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["tasks_per_slide"] == 1  # 3 tile rows: too few to cut into bands
        assert row["runs_s"] == str(row["run_s"])  # one round
    ratio = result["Dask overhead: local:1 ÷ in-process slides/h (goal ≥ 0.95)"]
    assert ratio == round(rows[1]["slides_per_h"] / rows[0]["slides_per_h"], 3)
    assert result["scheduler overhead per task (ms)"] > 0
    assert result["worker peak RSS after 1² slides (MB)"] > 0
    assert result["worker peak RSS after a 2² slide too (MB)"] > 0
    assert result["worker peak RSS 2² ÷ 1²"] > 0
    assert result["estimate"].startswith("10,000 slides on 16 workers like local:1's one")
    assert "Dask overhead" in printed and "10,000 slides" in printed
