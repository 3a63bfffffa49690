"""``cohort.html``: one self-contained page whose table and histograms are ``cohort.csv``'s
figures, with a heatmap thumbnail per predicted slide; it renders in headless Chromium."""

from __future__ import annotations

import csv
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from napari_rckd.cli import main

ARGS = ["--nuclei", "classical", "--slide-mpp", "0.499", "--quiet"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Page(HTMLParser):
    """The table's cells, the histograms' data and every URL the page would load."""

    def __init__(self):
        super().__init__()
        self.header, self.rows, self.histograms, self.images, self.links = [], [], {}, [], []
        self._cell, self._in = None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = ""
        if tag == "svg" and "data-column" in attrs:
            self.histograms[attrs["data-column"]] = attrs
        if tag == "img":
            self.images.append(attrs["src"])
        for key in ("href", "src"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        self._in.pop()
        if tag in ("td", "th"):
            (self.header if tag == "th" else self.rows[-1]).append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.fixture(scope="module")
def cohort_out(tmp_path_factory, crop_path):
    """A cohort of two slides and a broken one, predicted in this process."""
    cohort = tmp_path_factory.mktemp("cohort")
    shutil.copy(crop_path, cohort / "a.tif")
    (cohort / "bad.tif").write_bytes(b"II*\x00 not really a slide" * 50)
    out = tmp_path_factory.mktemp("out")
    assert main(["predict", str(cohort), "--out", str(out), *ARGS, "--export", "csv"]) == 1
    return cohort, out


def _parse(out: Path) -> _Page:
    page = _Page()
    page.feed((out / "cohort.html").read_text(encoding="utf-8"))
    return page


def test_the_page_shows_the_table_figures(cohort_out):
    cohort_out = cohort_out[1]
    with open(cohort_out / "cohort.csv", newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header, rows = next(reader), list(reader)
    page = _parse(cohort_out)
    assert page.header == header
    assert [row for row in page.rows if row] == rows  # every cell, as the CSV has it
    done = [dict(zip(header, row, strict=True)) for row in rows if row[1] == "done"]
    assert len(done) == 1 and int(done[0]["nuclei"]) > 20
    for column in ("nuclei_per_mm2", "tissue_mm2", "nuclei", "nuclear_area_median_um2"):
        svg = page.histograms[column]
        values = [float(v) for v in svg["data-values"].split()]
        assert values == [float(row[column]) for row in done], column
        assert sum(int(c) for c in svg["data-counts"].split()) == len(done)
    assert page.links == []  # nothing outside the page: no server, no external asset
    [picture] = page.images  # the failed slide has none
    assert picture.startswith("data:image/jpeg;base64,")


def test_the_thumbnail_shows_nuclei_density(cohort_out):
    import base64
    import io

    from PIL import Image

    from napari_rckd.inference.cohort_report import colorize, tile_counts
    from napari_rckd.inference.wholeslide import open_results

    cohort, out = cohort_out
    counts, area = tile_counts(open_results(out / "a.zarr")["nuclei_labels"])
    assert counts.shape == (3, 3) and (counts > 0).all()
    nuclei = next(row for row in _parse(out).rows if row and row[1] == "done")[5]
    assert counts.sum() == int(nuclei)  # every nucleus counted once, in its tile
    assert area.sum() == pytest.approx((768 * 0.499) ** 2 / 1e6, rel=0.01)
    picture = _parse(out).images[0].split(",", 1)[1]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(picture))))
    assert image.shape == (160, 160, 3)
    assert colorize(np.array([0.0, 1.0])).tolist() == [[0, 0, 4], [252, 255, 164]]


def test_a_resumed_run_keeps_the_pictures_of_skipped_slides(cohort_out, tmp_path):
    cohort, first = cohort_out
    out = tmp_path / "out"
    shutil.copytree(first, out)
    (out / "cohort.html").unlink()
    (cohort / "bad.tif").rename(tmp_path / "bad.tif")
    try:
        assert main(["predict", str(cohort), "--out", str(out), *ARGS, "--export", "csv"]) == 0
    finally:
        (tmp_path / "bad.tif").rename(cohort / "bad.tif")
    page = _parse(out)
    assert [row[:2] for row in page.rows if row] == [[str(cohort / "a.tif"), "skipped"]]
    assert page.images == _parse(first).images  # the picture made by the first run


def _browser() -> str | None:
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


def test_the_page_renders_in_headless_chromium(cohort_out, tmp_path):
    from PIL import Image

    cohort_out = cohort_out[1]
    browser = _browser()
    if browser is None:
        pytest.skip(
            f"no Chromium here (looked for {', '.join(BROWSERS)}); apt-get install chromium"
        )
    shot = tmp_path / "page.png"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1400",
        f"--screenshot={shot}", (cohort_out / "cohort.html").as_uri(),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert image.shape[:2] == (1400, 1200)
    colours = np.unique(image.reshape(-1, 3) // 16, axis=0)
    assert len(colours) > 20  # text, bars, the thumbnail's heatmap: not a blank page
    assert (image < 128).any(axis=2).mean() > 0.005  # dark ink somewhere
    # the histograms' bars are drawn (their colour, #4c6ef5)
    bars = (np.abs(image - np.array([0x4C, 0x6E, 0xF5])).sum(axis=2) < 30).sum()
    assert bars > 200
