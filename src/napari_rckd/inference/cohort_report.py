"""``DIR/cohort.html``: the cohort table as one page a pathologist opens in any browser.

One self-contained file (no server, no script, nothing fetched: inline CSS, inline SVG, JPEG
thumbnails as data URIs): how many slides are done, skipped, failed or pending; a histogram of
each per-slide figure; a card per slide with its thumbnail and its nuclei density as a heatmap;
and the table itself. The page is rendered from ``DIR/cohort.csv`` as written, so its figures
are the table's. A slide's thumbnail is made where it was predicted (`density_thumbnail`) and
kept in its ``<stem>.zarr`` root attributes, like its figures.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import math
from pathlib import Path

import numpy as np

from napari_rckd.atomic import atomic_open

log = logging.getLogger(__name__)

REPORT_NAME = "cohort.html"
THUMBNAIL_ATTRIBUTE = "napari_rckd_thumbnail"  # a JPEG data URI, in a slide's .zarr attributes
THUMBNAIL_SIDE = 160  # px: about 5 KB a slide, 50 MB for 10,000 slides
DENSITY_TOP = 10_000  # nuclei per mm² at the top of every heatmap's scale (the same for all)
HISTOGRAMS = (
    ("nuclei_per_mm2", "nuclei per mm² of tissue"),
    ("tissue_mm2", "tissue area (mm²)"),
    ("nuclei", "nuclei"),
    ("nuclear_area_median_um2", "median nuclear area (µm²)"),
    ("seconds", "seconds per slide"),
)
# inferno-like stops, dark (few nuclei) to light (many)
STOPS = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)])
MIN_TISSUE_MM2 = 0.001  # a tile's tissue counted as at least this (a sliver of tissue: no spike)
MAX_READ_SIDE = 4096  # px: a slide without a level this small gets its tissue mask as thumbnail


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 along `STOPS`."""
    x = np.clip(values, 0, 1) * (len(STOPS) - 1)
    low = np.minimum(x.astype(int), len(STOPS) - 2)
    t = (x - low)[..., None]
    return np.round(STOPS[low] * (1 - t) + STOPS[low + 1] * t).astype(np.uint8)


def tile_counts(labels) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei of each tile of a stitched labels store (a nucleus counts in the tile that owns
    it: ``id // ID_STRIDE``) and each tile's area in mm², read a tile row at a time."""
    from napari_rckd.inference.nuclei_table import grid_size
    from napari_rckd.inference.stitching import ID_STRIDE
    from napari_rckd.inference.tiling import Box

    rows, cols = grid_size(labels)
    counts, area = np.zeros((rows, cols), np.int64), np.zeros((rows, cols), np.float64)
    tile = labels.tile
    for row in range(rows):
        band = labels.read(Box(row * tile, 0, (row + 1) * tile, labels.shape[1]))
        for col in range(cols):
            ids = band[:, col * tile : (col + 1) * tile]
            start = (row * cols + col) * ID_STRIDE  # the tile's ids: start + 1 .. start + k
            local = ids[(ids > start) & (ids < start + ID_STRIDE)].astype(np.int64) - start
            counts[row, col] = np.count_nonzero(np.bincount(local, minlength=1))
            pixels = band.shape[0] * min(tile, labels.shape[1] - col * tile)
            area[row, col] = pixels * labels.mpp**2 / 1e6
    return counts, area


def tile_density(labels, tissue=None, slide_mpp: float | None = None) -> np.ndarray:
    """Nuclei per mm² of each tile (`tile_counts`); with the slide's ``tissue`` mask, per mm²
    of the tile's tissue (as ``nuclei_per_mm2`` of the table), 0 where it has none."""
    counts, area = tile_counts(labels)
    if tissue is not None and slide_mpp:
        step = labels.tile * labels.mpp / slide_mpp  # level-0 px per tile
        fraction = np.array(
            [
                [tissue.fraction(r * step, c * step, step, step) for c in range(area.shape[1])]
                for r in range(area.shape[0])
            ]
        )
        area = area * fraction
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, counts / np.maximum(area, MIN_TISSUE_MM2), 0.0)


def density_thumbnail(slide, labels, tissue=None) -> str:
    """A JPEG data URI of the slide at most `THUMBNAIL_SIDE` px, with its nuclei per mm² of
    tissue (per nuclei tile, 0 to `DENSITY_TOP`) laid over it as a heatmap where there are
    nuclei."""
    from PIL import Image

    height, width = slide.shape[:2]
    scale = THUMBNAIL_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = _slide_image(slide, tissue, size)
    if labels is not None:
        density = tile_density(labels, tissue, slide.mpp)
        heat = Image.fromarray(colorize(density / DENSITY_TOP))
        per_tile = labels.tile * labels.mpp / slide.mpp * scale  # thumbnail px per tile
        full = (
            max(1, round(density.shape[1] * per_tile)),
            max(1, round(density.shape[0] * per_tile)),
        )
        heat = np.asarray(heat.resize(full, Image.NEAREST))[: size[1], : size[0]]
        seen = np.asarray(Image.fromarray(density > 0).resize(full, Image.NEAREST))
        seen = seen[: size[1], : size[0]]
        pad = [(0, size[1] - heat.shape[0]), (0, size[0] - heat.shape[1])]
        heat, seen = np.pad(heat, [*pad, (0, 0)]), np.pad(seen, pad)
        mixed = np.where(seen[..., None], 0.35 * image + 0.65 * heat, image)
        image = np.round(mixed).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def keep_thumbnail(zarr_path: Path, slide, labels, tissue=None) -> None:
    """`density_thumbnail` into the slide's results (a picture that cannot be made is logged:
    the slide's results are no worse for it)."""
    from napari_rckd.inference.store import open_root

    try:
        open_root(zarr_path).attrs[THUMBNAIL_ATTRIBUTE] = density_thumbnail(slide, labels, tissue)
    except Exception:  # noqa: BLE001
        log.warning("no thumbnail of %s for cohort.html", slide.path.name, exc_info=True)


def _slide_image(slide, tissue, size: tuple[int, int]) -> np.ndarray:
    """The slide at ``size`` (width, height), from its smallest level; its tissue mask (grey
    on white) when no level is small enough to read whole."""
    from PIL import Image

    level = len(slide.levels) - 1
    shape = slide.levels[level].shape
    if max(shape[:2]) <= MAX_READ_SIDE:
        pixels = slide.read_region(level, 0, 0, shape[0], shape[1])[..., :3]
    elif tissue is not None:
        pixels = np.where(np.asarray(tissue.mask)[..., None], 180, 255).astype(np.uint8)
        pixels = np.repeat(pixels, 3, axis=2)
    else:
        return np.full((size[1], size[0], 3), 255, np.uint8)
    return np.asarray(Image.fromarray(pixels).convert("RGB").resize(size, Image.BILINEAR))


def write_report(out: str | Path, thumbnails: dict | None = None) -> Path:
    """``out/cohort.html`` (atomically) from ``out/cohort.csv`` and the slides' thumbnails
    (``thumbnails``: file -> picture, those already read; filled in)."""
    from napari_rckd.inference.cohort_table import TABLE_NAME

    out = Path(out)
    with open(out / TABLE_NAME, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header, rows = list(reader.fieldnames or []), list(reader)
    thumbnails = {} if thumbnails is None else thumbnails
    for row in rows:
        if thumbnails.get(row["file"]) is None:
            thumbnails[row["file"]] = _thumbnail(out, row)
    path = out / REPORT_NAME
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(render(out.name, header, rows, thumbnails))
    return path


def _thumbnail(out: Path, row: dict) -> str | None:
    from napari_rckd.inference.store import open_root

    zarr = out / f"{Path(row['file']).stem}.zarr"
    if row["status"] not in ("done", "skipped") or not zarr.is_dir():
        return None
    try:
        return open_root(zarr, mode="r").attrs.get(THUMBNAIL_ATTRIBUTE)
    except Exception:  # noqa: BLE001  (a page without that picture, not a failed run)
        return None


def render(title: str, header: list[str], rows: list[dict], thumbnails: dict) -> str:
    """The page: summary, histograms, slide cards, table."""
    statuses = [row["status"] for row in rows]
    counts = ", ".join(
        f"{statuses.count(s)} {s}" for s in ("done", "skipped", "failed", "pending")
        if s in statuses
    )  # fmt: skip
    histograms = "".join(
        histogram(column, label, [float(row[column]) for row in rows if row.get(column)])
        for column, label in HISTOGRAMS
        if column in header
    )
    cards = "".join(_card(row, thumbnails.get(row["file"])) for row in rows)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join(
        f'<tr class="{html.escape(row["status"])}">'
        + "".join(f"<td>{html.escape(row.get(name) or '')}</td>" for name in header)
        + "</tr>"
        for row in rows
    )
    return PAGE.format(
        title=html.escape(title),
        counts=html.escape(counts or "no slides"),
        legend=_legend(),
        histograms=histograms or "<p>No figures yet.</p>",
        cards=cards,
        head=head,
        body=body,
    )


def histogram(column: str, label: str, values: list[float], bins: int = 12) -> str:
    """An inline SVG histogram of ``values``; ``data-values`` keeps them, for checks."""
    width, height, top, bottom = 300, 150, 24, 22
    data = " ".join(f"{v:g}" for v in values)
    if not values:
        return ""
    low, high = min(values), max(values)
    n = 1 if high == low else min(bins, max(1, len(values)))
    counts, edges = np.histogram(values, bins=n, range=(low, high if high > low else low + 1))
    peak, bar = max(1, int(counts.max())), width / n
    bars = "".join(
        f'<rect x="{k * bar + 1:.1f}" y="{top + (height - top - bottom) * (1 - c / peak):.1f}" '
        f'width="{bar - 2:.1f}" height="{(height - top - bottom) * c / peak:.1f}">'
        f"<title>{c} slides: {edges[k]:.4g} to {edges[k + 1]:.4g}</title></rect>"
        for k, c in enumerate(counts)
    )
    return (
        f'<figure><svg class="hist" data-column="{column}" data-values="{data}" '
        f'data-counts="{" ".join(str(int(c)) for c in counts)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img">'
        f'<text x="0" y="14">{html.escape(label)} (n = {len(values)})</text>{bars}'
        f'<line x1="0" x2="{width}" y1="{height - bottom}" y2="{height - bottom}"/>'
        f'<text x="0" y="{height - 6}">{_short(low)}</text>'
        f'<text x="{width}" y="{height - 6}" text-anchor="end">{_short(high)}</text>'
        f"</svg></figure>"
    )


def _short(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _card(row: dict, thumbnail: str | None) -> str:
    name = html.escape(Path(row["file"]).name)
    if thumbnail and thumbnail.startswith("data:image/"):
        picture = f'<img src="{html.escape(thumbnail)}" alt="{name}">'
    else:
        picture = '<div class="none">no picture</div>'
    if row["status"] == "failed":
        what = html.escape(row.get("error") or "failed")
    elif row.get("nuclei_per_mm2"):
        what = f"{html.escape(row['nuclei_per_mm2'])} nuclei/mm², {html.escape(row['nuclei'])}"
        what += " nuclei"
    else:
        what = html.escape(row["status"])
    return f'<div class="card {html.escape(row["status"])}">{picture}<b>{name}</b><br>{what}</div>'


def _legend() -> str:
    stops = "".join(
        f'<stop offset="{k / (len(STOPS) - 1):.2f}" stop-color="rgb{tuple(int(v) for v in c)}"/>'
        for k, c in enumerate(STOPS)
    )
    return (
        '<svg width="260" height="34" viewBox="0 0 260 34"><defs><linearGradient id="heat">'
        f'{stops}</linearGradient></defs><rect x="0" y="0" width="260" height="14" '
        'fill="url(#heat)"/><text x="0" y="30">0</text><text x="260" y="30" '
        f'text-anchor="end">{DENSITY_TOP:,} nuclei/mm²</text></svg>'
    )


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cohort {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.5em; }}
.hists {{ display: flex; flex-wrap: wrap; gap: 1.5em; }}
figure {{ margin: 0; }}
.hist rect {{ fill: #4c6ef5; }} .hist line {{ stroke: #555; }} .hist text {{ font-size: 12px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 0.8em; }}
.card {{ width: 170px; font-size: 12px; border: 1px solid #ccc; padding: 5px;
  overflow-wrap: anywhere; }}
.card img {{ max-width: 160px; max-height: 160px; display: block; margin-bottom: 4px; }}
.card .none {{ width: 160px; height: 60px; background: #eee; color: #888; text-align: center;
  line-height: 60px; margin-bottom: 4px; }}
.card.failed {{ border-color: #c92a2a; background: #fff5f5; }}
.wide {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }}
td:nth-child(3) {{ white-space: normal; min-width: 24em; }}
th {{ background: #f1f3f5; position: sticky; top: 0; }}
td:first-child, td:nth-child(2), td:nth-child(3) {{ text-align: left; }}
tr.failed td {{ background: #fff5f5; }}
</style></head><body>
<h1>Cohort {title}</h1>
<p>{counts}. Figures per slide as in <code>cohort.csv</code>; areas from each slide's own
pixel size.</p>
<h2>Per-slide figures</h2>
<div class="hists">{histograms}</div>
<h2>Slides</h2>
<p>Nuclei per mm² of tissue in each tile, over the slide (tiles without nuclei show the
slide):</p>
{legend}
<div class="cards">{cards}</div>
<h2>Table</h2>
<div class="wide"><table id="table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</div>
</body></html>
"""
