"""`napari-rckd bench viewport` in a real viewer on a real slide: a small canvas, real figures."""

from __future__ import annotations

import json

import pytest

from conftest import shared_path

pytestmark = pytest.mark.gui


def test_bench_viewport_times_a_pan_on_a_real_slide(qapp, tmp_path, capsys):
    from napari_rckd.cli import main

    slide = shared_path("slides/cmu-1-small-region.svs")
    out = tmp_path / "viewport.json"
    argv = ["bench", "viewport", str(slide), "--width", "480", "--height", "640"]
    argv += ["--path-steps", "3", "--tail-ms", "100", "--nuclei", "classical"]
    assert main([*argv, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    steps = {row["step"]: row for row in figures["rows"]}
    assert figures["canvas"] == [480, 640]
    pan = steps["pan to a new view"]
    assert pan["tiles computed"] > 0 and 0 < pan["first tile s"] <= pan["complete s"]
    assert 0 < pan["first after plan s"] <= pan["complete after plan s"] < pan["complete s"]
    assert 0 < pan["model 1 tile s"] <= pan["model view s"]
    assert pan["first_tile_ratio"] == pan["first after plan s"] / pan["model 1 tile s"]
    assert pan["complete_ratio"] == pan["complete after plan s"] / pan["model view s"]
    back = steps["pan back (re-display)"]
    assert back["tiles computed"] == 0 and back["first tile s"] > 0  # napari slices the stores
    for row in figures["rows"]:  # every row, the baseline too, says how the event loop fared
        assert 0 < row["event_gap_p99_ms"] <= row["event_gap_max_ms"]
    assert "Live viewport inference on cmu-1-small-region.svs" in capsys.readouterr().out


def test_bench_viewport_puts_the_quick_preview_beside_the_slow_model(qapp, tmp_path):
    from napari_rckd.cli import main

    slide = shared_path("slides/cmu-1-small-region.svs")
    out = tmp_path / "viewport.json"
    argv = ["bench", "viewport", str(slide), "--width", "320", "--height", "256"]
    argv += ["--path-steps", "3", "--tail-ms", "100", "--nuclei", "builtin"]
    assert main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    pans = {(row["step"], row["preview"]): row for row in rows if row["step"].startswith("pan to")}
    assert set(pans) == {("pan to a new view", False), ("pan to a new view", True)}
    without, with_preview = pans["pan to a new view", False], pans["pan to a new view", True]
    assert without["preview complete s"] is None
    assert 0 < with_preview["preview complete s"] <= with_preview["complete s"]
    # the preview's tiles come on top of the same view's builtin tiles
    assert with_preview["tiles computed"] > without["tiles computed"]
