"""Bands of tiles: one slide as several Dask tasks, merged into the results of the one-task run.

A cohort of a few large slides would leave most workers idle with one task per slide, so a
slide's tile rows are cut into bands (`band_rows`). `predict_band` predicts the tissue tiles
of one band into a zarr of its own (``DIR/.<stem>.bands.staging/band-<k>.zarr``), as the
one-task run would if the slide held only that band, and keeps the nuclei windows of its first
`REPLAY_ROWS` tile rows as the model gave them. `merge_bands` then builds the slide's results,
staged and published whole like any slide (`outputs.staged_outputs`):

* per-tile and core-only results (subtype, region, nuclei probability) are copied: each tile
  writes only its own core, so the order does not matter;
* nuclei labels are stitched across tiles (`instances`), and a tile's result depends on what
  its neighbours wrote before it. The one-task run stitches the rows top to bottom, so band k
  must be stitched onto the finished bands above it. The merge replays band k's first rows
  from their kept windows, onto the slide and onto an empty shadow (what band k saw alone),
  and compares them over the window strip of the last replayed row. Once they agree, every
  later row reads and writes the same pixels in both (a stitch touches its window and the
  windows of the tiles one row up, and the halo is under half a tile), so the rest of band k
  is copied from its own zarr. Nuclei cut by the border are thereby merged exactly as the
  one-task run merges them: same instances, same ids, same pixels. Should the strips still
  differ after the kept rows (a nucleus chain taller than a tile), the merge predicts the
  band's remaining rows itself, which is slower but still exact.

Exports and the cohort row are written from the merged stores, as `export_nuclei` writes the
same files afterwards that a streamed run writes during the tiles (`nuclei_stream`).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.inference.cohort_slide import (
    CohortSettings,
    checked_sources,
    failed_row,
    published_before,
    require_mpp,
    worker,
    worker_reporter,
)
from napari_rckd.inference.stitching import stitch_instances
from napari_rckd.inference.store import ResultStore, open_root
from napari_rckd.inference.tiling import Box

log = logging.getLogger(__name__)

REPLAY_ROWS = 2  # nuclei tile rows of a band kept for the merge (one is nearly always enough)
MIN_BAND_ROWS = 4  # tile rows of the slide's main grid per band, at least
LABELS = "nuclei_labels"


def bands_folder(out: str | Path, stem: str) -> Path:
    """Where the bands of a slide are staged (`outputs.recover` removes what a killed run left)."""
    return Path(out) / f".{stem}.bands.staging"


def usable_bands(predictor, wanted: int) -> int:
    """How many bands the slide of ``predictor`` is cut into when ``wanted``: at most one per
    `MIN_BAND_ROWS` tile rows, and one when its halo is not under half a tile."""
    grid = predictor.grids[_key(predictor)]
    if grid.tile < 2 * grid.halo:
        return 1
    return max(1, min(int(wanted), grid.rows // MIN_BAND_ROWS))


def band_rows(predictor, count: int) -> list[dict[str, range]]:
    """For each band, the tile rows of each source: the key grid's rows cut evenly, the other
    grids' rows by where their cores start on the slide."""
    key = predictor.grids[_key(predictor)]
    starts = [k * key.rows // count for k in range(count)]
    edges = [-math.inf] + [s * key.tile * key.level0_per_px for s in starts[1:]] + [math.inf]
    bands = []
    for k in range(count):
        rows = {}
        for name, grid in predictor.grids.items():
            step = grid.tile * grid.level0_per_px  # where row r's core starts, level 0
            inside = [r for r in range(grid.rows) if edges[k] <= r * step < edges[k + 1]]
            rows[name] = range(inside[0], inside[-1] + 1) if inside else range(0)
        bands.append(rows)
    return bands


def _key(predictor) -> str:
    return "nuclei" if "nuclei" in predictor.grids else next(iter(predictor.grids))


def count_bands(path: str | Path, settings: CohortSettings, wanted: int) -> int:
    """`usable_bands` of one slide, for the client to plan (1 when it cannot be opened: its
    one task then reports why)."""
    if wanted <= 1:
        return 1
    try:
        with _opened(path, settings) as (slide, predictor, _):
            return usable_bands(predictor, wanted)
    except Exception:  # noqa: BLE001  (the slide's task tells what is wrong with it)
        log.debug("could not plan bands of %s", path, exc_info=True)
        return 1


class _opened:
    """The slide, a predictor of its whole-slide sources on ``root`` (memory by default) and
    its tissue mask."""

    def __init__(self, path, settings, root=None):
        self.path, self.settings, self.root = Path(path), settings, root

    def __enter__(self):
        from napari_rckd.inference.predictor import Predictor
        from napari_rckd.io import open_slide
        from napari_rckd.io.tissue import detect_tissue

        sources = checked_sources(self.settings)
        self.slide = open_slide(self.path, mpp=self.settings.slide_mpp)
        try:
            require_mpp(self.slide, self.path)
            tissue = detect_tissue(self.slide, self.path.name)
            wide = [source.for_whole_slide() for source in sources]
            root = open_root(self.root) if self.root is not None else None
            self.predictor = Predictor(
                self.slide, wide, root, None, tissue, self.settings.batch_size
            )
        except BaseException:
            self.slide.close()
            raise
        return self.slide, self.predictor, tissue

    def __exit__(self, *exc):
        self.predictor.close()
        self.slide.close()


class _Recording:
    """A nuclei source that also keeps the windows of some tile rows in a zarr group."""

    def __init__(self, source, rows: range, group):
        self._source, self._rows, self._group = source, rows, group

    def __getattr__(self, name):
        return getattr(self._source, name)

    def write(self, stores, grid, row, col, out):
        if row in self._rows:
            window = out["nuclei_labels"]
            array = self._group.create_array(
                f"{row}_{col}", shape=window.shape, dtype=window.dtype, chunks=window.shape
            )
            array[...] = window
        self._source.write(stores, grid, row, col, out)


def predict_band(path: str | Path, settings: CohortSettings, band: int, count: int) -> dict:
    """Predict band ``band`` of ``count`` of a slide into its zarr in `bands_folder`; returns
    the tiles it predicted ``(source, row, col)``, the damaged ones and its seconds."""
    from napari_rckd.inference.wholeslide import tissue_tiles

    start, path = time.perf_counter(), Path(path)
    report = worker_reporter()
    target = bands_folder(settings.out, path.stem) / f"band-{band}.zarr"
    if target.exists():  # an earlier attempt of this task
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _opened(path, settings, target) as (slide, predictor, tissue):
        rows = band_rows(predictor, count)[band]
        if "nuclei" in predictor.sources:
            kept = range(rows["nuclei"].start, rows["nuclei"].start + REPLAY_ROWS)
            group = predictor.root.create_group("replay")
            predictor.sources["nuclei"] = _Recording(predictor.sources["nuclei"], kept, group)
        todo = [t for t in tissue_tiles(predictor, tissue) if t[1] in rows[t[0]]]
        done = 0
        for _, batch, _ in predictor.run_batches(todo, cache_results=False):
            done += len(batch)
            if report is not None:
                report(len(batch), done, len(todo))
        damaged = len(predictor.damaged)
    seconds = time.perf_counter() - start
    return dict(tiles=todo, damaged=damaged, seconds=seconds)


def merge_bands(path: str | Path, settings: CohortSettings, parts: list[dict]) -> dict:
    """The slide's results from its predicted bands (``parts``, in band order), staged and
    published into ``settings.out``; returns its row of the cohort table."""
    from napari_rckd.inference.outputs import staged_outputs
    from napari_rckd.inference.wholeslide import MAX_DAMAGED, create_output

    start, path = time.perf_counter(), Path(path)
    folder, out = bands_folder(settings.out, path.stem), Path(settings.out)
    total = sum(len(part["tiles"]) for part in parts)
    damaged = sum(part["damaged"] for part in parts)
    if not total:
        raise RckdError(
            f"no tissue tiles to predict in {path.name}: the tissue mask is empty at the models' "
            "tile size; check the slide or lower min_tissue."
        )
    if damaged > MAX_DAMAGED * total:
        raise RckdError(
            f"{path.name} is damaged: {damaged} of its {total} tissue tiles could not be "
            "decoded, too many for useful results; copy or export it again."
        )
    with staged_outputs(out, path.stem, settings.overwrite) as staging:
        zarr_path = staging / f"{path.stem}.zarr"
        with _opened(path, settings, zarr_path) as (slide, predictor, tissue):
            create_output(zarr_path, slide, predictor.sources.values())
            for k, rows in enumerate(band_rows(predictor, len(parts))):
                band_root = open_root(folder / f"band-{k}.zarr", mode="r")
                _merge_band(predictor, band_root, parts[k], rows)
            for store in predictor.stores.values():
                store.flush()
            open_root(zarr_path).attrs["napari_rckd_complete"] = True  # a fresh handle: its
            # attributes are read now, so the slide's (create_output) are kept
            row = _finish(path, settings, slide, predictor, tissue, staging, total, damaged)
    shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - start + sum(part["seconds"] for part in parts)
    return dict(row, bands=len(parts), seconds=round(seconds, 2))


def _merge_band(predictor, band_root, part: dict, rows: dict[str, range]) -> None:
    for name, source in predictor.sources.items():
        grid = predictor.grids[name]
        tiles = [(row, col) for kind, row, col in part["tiles"] if kind == name]
        for spec in source.results(grid):
            if spec.name == LABELS:
                _merge_labels(predictor, band_root, tiles, rows[name])
                continue
            mine, merged = ResultStore.open(band_root, spec.name), predictor.stores[spec.name]
            for row, col in tiles:  # a tile writes its core (one pixel per tile: per_tile)
                box = Box(row, col, row + 1, col + 1) if spec.per_tile else grid.core(row, col)
                merged.write(box, mine.read(box))


def _merge_labels(predictor, band_root, tiles: list[tuple[int, int]], rows: range) -> None:
    """Band ``rows``' nuclei stitched onto the bands above them, as the one-task run does."""
    grid, merged = predictor.grids["nuclei"], predictor.stores[LABELS]
    mine = ResultStore.open(band_root, LABELS)
    if not rows:
        return
    end = grid.window(rows[-1], 0).y1  # how far down the band's stitching writes
    if rows.start == 0:  # nothing above: the band alone is the one-task run so far
        _copy_rows(mine, merged, 0, end)
        return
    alone = ResultStore.create(
        open_root(), LABELS, merged.shape, merged.tile, merged.levels[0].dtype, "labels",
        merged.mpp, merged.slide_mpp,
    )  # fmt: skip
    kept = band_root["replay"]
    for row in rows:
        if row >= rows.start + REPLAY_ROWS:  # not kept: predict the rest here, in order
            log.info("band rows from %d are predicted again to merge them exactly", row)
            predictor.compute([("nuclei", r, c) for r, c in tiles if r >= row])
            return
        for r, c in (tile for tile in tiles if tile[0] == row):
            window = np.asarray(kept[f"{r}_{c}"][...])
            stitch_instances(merged, grid, r, c, window)
            stitch_instances(alone, grid, r, c, window)
        strip = Box(grid.window(row, 0).y0, 0, grid.window(row, 0).y1, grid.shape[1])
        if row == rows[-1]:
            return  # the whole band replayed
        if np.array_equal(merged.read(strip), alone.read(strip)):
            _copy_rows(mine, merged, int(strip.y0), end)
            return


def _copy_rows(source: ResultStore, target: ResultStore, y0: int, y1: int) -> None:
    """Rows ``y0:y1`` of ``target`` replaced by ``source``'s, a tile row at a time."""
    y0, y1 = max(0, y0), min(y1, target.shape[0])
    for top in range(y0, y1, target.tile):
        box = Box(top, 0, min(top + target.tile, y1), target.shape[1])
        pixels = source.read(box)
        if pixels.any() or target.read(box).any():
            target.write(box, pixels)


def _finish(path, settings, slide, predictor, tissue, staging, total, damaged) -> dict:
    """Exports and figures of the merged slide, as `cohort_slide._predict_open` makes them."""
    from napari_rckd.inference.analysis import Analysis
    from napari_rckd.inference.cohort_report import keep_thumbnail
    from napari_rckd.inference.cohort_table import FIGURES_ATTRIBUTE, slide_figures
    from napari_rckd.inference.export import NucleiFiles, export_targets, write_targets
    from napari_rckd.inference.nuclei_table import iter_nuclei

    targets = export_targets(predictor.sources.values(), staging / path.stem, settings.exports)
    streamed = [targets.pop(("nuclei", suffix), None) for suffix in ("geojson", "csv")]
    nuclei = None
    if any(streamed):
        subtype = predictor.sources.get("subtype")
        with NucleiFiles(*streamed) as files:
            files.write(
                iter_nuclei(
                    predictor.stores[LABELS], slide, predictor.stores.get("subtype_class"),
                    subtype.class_names if subtype is not None else None,
                )
            )  # fmt: skip
        nuclei = files.count
    if targets:
        write_targets(predictor.stores, predictor.sources, slide, targets)
    analysis = Analysis(slide, sources=list(predictor.sources.values()))
    analysis._tissue, analysis.results = tissue, predictor
    analysis.last_run = dict(tiles=total, nuclei=nuclei)
    figures = slide_figures(analysis, staging / f"{path.stem}.nuclei.csv")
    figures["damaged_tiles"] = damaged
    open_root(staging / f"{path.stem}.zarr").attrs[FIGURES_ATTRIBUTE] = figures
    labels = predictor.stores.get(LABELS)
    keep_thumbnail(staging / f"{path.stem}.zarr", slide, labels, tissue)  # for cohort.html
    models = " | ".join(source.identity for source in predictor.sources.values())
    return dict(file=str(path), status="done", **figures, models=models, worker=worker())


def band_task(path: str, settings: CohortSettings, band: int, count: int) -> dict:
    """The Dask task of one band: a bad slide becomes its one sentence (the merge reports it);
    anything else is raised, for Dask to run the band again."""
    try:
        return predict_band(path, settings, band, count)
    except RckdError as error:
        return dict(error=str(error))


def merge_task(path: str, settings: CohortSettings, parts: list[dict]) -> dict:
    """The Dask task that merges a slide's bands into its results and cohort row (a retry
    after a kill during the publication finishes it, as `cohort_slide.run_task` does)."""
    errors = [part["error"] for part in parts if "error" in part]
    try:
        if errors:
            row = failed_row(path, errors[0])
        else:
            finished = published_before(Path(path), settings) if settings.planned else None
            row = finished or merge_bands(path, settings, parts)
    except RckdError as error:
        row = failed_row(path, str(error))
    shutil.rmtree(bands_folder(settings.out, Path(path).stem), ignore_errors=True)
    return row


def predict_in_bands(path: str | Path, settings: CohortSettings, count: int) -> dict:
    """One slide as ``count`` bands and their merge, one after another in this process (what
    a cluster runs as separate tasks)."""
    parts = [band_task(str(path), settings, band, count) for band in range(count)]
    return merge_task(str(path), settings, parts)
