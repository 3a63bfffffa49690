"""`napari-rckd bench models` runs end to end and writes the figures it prints."""

from __future__ import annotations

import json

import pytest
import torch

from napari_rckd.cli import main


def test_bench_models_writes_rows(tmp_path, capsys):
    out = tmp_path / "models.json"
    argv = ["bench", "models", "--models", "rckd_csat", "resnet18", "--sizes", "64"]
    argv += ["--batch", "1", "--seconds", "0.01", "--threads", "1", "--json", str(out)]
    argv += ["--nuclei", "builtin", "csat", "--runtime-batches", "1", "2"]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide; do not slow other tests
    payload = json.loads(out.read_text())
    rows = {row["model"]: row for row in payload["rows"]}
    assert set(rows) == {"rckd_csat", "resnet18"}
    csat = rows["rckd_csat"]
    assert 2.8 < csat["params_M"] < 3.2
    assert abs(csat["GMACs"] - 1.07 * (64 / 224) ** 2) < 0.02  # MACs scale with pixels
    assert csat["images_per_s"] > 0
    # the row's arithmetic, not its speed: MAC/s from images/s, and the share of the peak
    assert csat["GMAC_per_s"] == pytest.approx(csat["GMACs"] * csat["images_per_s"])
    peak = payload["matmul_peak_GMAC_per_s"]  # rounded to 0.1 in the JSON: +-0.05
    assert csat["fraction_of_peak"] * peak == pytest.approx(csat["GMAC_per_s"], rel=0.1 / peak)
    # CSAT's FPN decoder is a small share of its encoder (0.16 at 160 px, docs/performance.md)
    assert 0.05 < csat["decoder_per_encoder"] < 0.5 and csat["dense_decoder_GMACs"] > 0
    assert csat["decoder"] == "standard"
    assert payload["matmul_peak_GMAC_per_s"] > 0
    nuclei = {row["nuclei_model"]: row["tiles_per_s"] for row in payload["nuclei_models"]}
    assert set(nuclei) == {"builtin", "csat"} and min(nuclei.values()) > 0
    # csat by name and by file: one code path, the same outputs, a row per batch for each
    runtime = payload["nuclei_runtime"]
    assert [(r["given_as"], r["batch"]) for r in runtime] == [
        ("name", 1), ("name", 2), ("file", 1), ("file", 2)
    ]  # fmt: skip
    assert len({r["code_path"] for r in runtime}) == 1 and "ModelRunner" in runtime[0]["code_path"]
    assert all(r["same_output"] and r["tiles_per_s"] > 0 for r in runtime)
    printed = capsys.readouterr().out
    assert "| rckd_csat" in printed and "Nuclei models end to end" in printed
