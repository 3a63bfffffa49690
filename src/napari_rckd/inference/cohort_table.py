"""The cohort table: one row of figures per slide, ``DIR/cohort.csv``.

A slide's figures are computed where it was predicted (`slide_figures`) and kept in its
``<stem>.zarr`` root attributes, so a resumed run lists the slides it skipped with the figures
of the run that made them. Areas are in µm² and mm², from the slide's own pixel size.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from napari_rckd.atomic import atomic_open

TABLE_NAME = "cohort.csv"
FIGURES_ATTRIBUTE = "napari_rckd_figures"  # a slide's figures, in its .zarr root attributes
COLUMNS = (
    "file",
    "status",  # done, skipped (complete in DIR from an earlier run), failed
    "error",
    "mpp",
    "tissue_mm2",
    "nuclei",
    "nuclei_per_mm2",
    "nuclear_area_mean_um2",
    "nuclear_area_median_um2",
    "nuclear_area_iqr_um2",
    "tiles",
    "damaged_tiles",
    "bands",  # 1: the slide was one task; k > 1: k bands of tiles and a merge (`bands`)
    "models",
    "seconds",
    "worker",
)
FRACTIONS = ("subtype_", "region_")  # then <kind>_<class> fractions, for the models that ran


def slide_figures(analysis, nuclei_csv: Path | None) -> dict:
    """Figures of one finished whole-slide run (``analysis.last_run`` set, stores readable)."""
    slide = analysis.slide
    tissue_mm2 = analysis.tissue.area_px0 * slide.mpp**2 / 1e6
    areas = _csv_column(nuclei_csv, "area_um2") if nuclei_csv and nuclei_csv.is_file() else None
    count = len(areas) if areas is not None else (analysis.last_run or {}).get("nuclei")
    figures = dict(
        mpp=round(slide.mpp, 5),
        tissue_mm2=round(tissue_mm2, 4),
        nuclei=count,
        nuclei_per_mm2=round(count / tissue_mm2, 1) if count is not None and tissue_mm2 else None,
        tiles=(analysis.last_run or {}).get("tiles"),
    )
    if areas is not None and len(areas):
        q1, median, q3 = np.percentile(areas, [25, 50, 75])
        figures.update(
            nuclear_area_mean_um2=round(float(areas.mean()), 2),
            nuclear_area_median_um2=round(float(median), 2),
            nuclear_area_iqr_um2=round(float(q3 - q1), 2),
        )
    stores, sources = analysis.results.stores, analysis.results.sources
    if "subtype_class" in stores:  # one pixel per tile: the fraction of predicted tiles
        names = sources["subtype"].class_names
        figures.update(_fractions(stores["subtype_class"], 0, names, "subtype"))
    if "region_mask" in stores:  # the coarsest pyramid level is plenty for a fraction
        store = stores["region_mask"]
        names = sources["region"].class_names
        figures.update(_fractions(store, len(store.levels) - 1, names, "region"))
    return figures


def _fractions(store, level: int, names, prefix: str) -> dict:
    from napari_rckd.inference.tiling import Box

    shape = store.levels[level].shape[-2:]
    classes = store.read(Box(0, 0, *shape), level=level)
    counts = np.bincount(classes.ravel(), minlength=len(names) + 1)[1 : len(names) + 1]
    total = counts.sum()  # 0 = not predicted (glass)
    return {
        f"{prefix}_{name}": round(float(n / total), 4) if total else None
        for name, n in zip(names, counts, strict=True)
    }


def _csv_column(path: Path, name: str) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        column = next(reader).index(name)
        return np.array([float(row[column]) for row in reader], np.float64)


def write_table(out: Path, rows: Iterable[dict]) -> Path:
    """``out/cohort.csv`` (atomically): the fixed columns, then every fraction column seen."""
    rows = list(rows)
    extra = sorted({key for row in rows for key in row if key.startswith(FRACTIONS)})
    path = Path(out) / TABLE_NAME
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, [*COLUMNS, *extra], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(value) for key, value in row.items()})
    return path


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value
