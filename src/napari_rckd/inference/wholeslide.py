"""Whole-slide mode: every tissue tile of every source, with progress and cancel, into an
OME-Zarr directory that re-opens over the slide.

``run_whole_slide`` is a generator yielding ``Progress`` after each batch, so the CLI wraps it
in tqdm and a GUI in a thread worker; setting ``stop`` ends it after the batch in flight (at
most one batch of model time). The store's root attributes record the slide and sources, and
``open_results`` gives the ``ResultStore`` of each result back with its µm scale/translate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from napari_rckd.errors import RckdError
from napari_rckd.inference.predictor import Predictor
from napari_rckd.inference.store import ResultStore, open_root

log = logging.getLogger(__name__)

MIN_TISSUE = 0.05
# A slide with more than this fraction of undecodable tissue tiles fails instead of giving
# results that are mostly holes; fewer are skipped and counted.
MAX_DAMAGED = 0.5


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    source: str  # the source of the last batch
    cancelled: bool = False
    damaged: int = 0  # tiles skipped so far because the slide could not be decoded there


def tissue_tiles(predictor: Predictor, tissue, min_tissue: float = MIN_TISSUE):
    """(source, row, col) of every tile whose core holds at least ``min_tissue`` tissue, nuclei
    last: a streamed nuclei export names each nucleus by a subtype map already complete."""
    requests = []
    for name, grid in sorted(predictor.grids.items(), key=lambda item: item[0] == "nuclei"):
        for row in range(grid.rows):
            for col in range(grid.cols):
                core = grid.to_level0(grid.core(row, col))
                if tissue is None or (
                    tissue.fraction(core.y0, core.x0, core.height, core.width) >= min_tissue
                ):
                    requests.append((name, row, col))
    return requests


def run_whole_slide(
    predictor: Predictor,
    tissue,
    stop: threading.Event | None = None,
    min_tissue: float = MIN_TISSUE,
    listener=None,
) -> Iterator[Progress]:
    """Compute all tissue tiles not yet done, yielding progress after every batch.

    A ``listener`` (e.g. a `NucleiStream`) hears ``planned(requests)`` before the first batch
    and ``written(source, tiles)`` after each batch is in the stores."""
    todo = [r for r in tissue_tiles(predictor, tissue, min_tissue) if not predictor.is_done(*r)]
    if not todo:
        raise RckdError(
            f"no tissue tiles to predict in {predictor.slide.path.name}: the tissue mask is empty "
            "at the models' tile size; check the slide or lower min_tissue."
        )
    if listener is not None:
        listener.planned(todo)
    done, name = 0, todo[0][0]
    for name, batch, _ in predictor.run_batches(todo, stop, cache_results=False):
        done += len(batch)
        damaged = len(predictor.damaged)
        if damaged > MAX_DAMAGED * len(todo):
            raise RckdError(
                f"{predictor.slide.path.name} is damaged: {damaged} of its {len(todo)} tissue "
                "tiles could not be decoded, too many for useful results; copy or export it again."
            )
        if listener is not None:
            listener.written(name, [(request.row, request.col) for request in batch])
        yield Progress(done, len(todo), name, damaged=damaged)
    if done < len(todo):
        log.info("whole-slide run cancelled after %d of %d tiles", done, len(todo))
        yield Progress(done, len(todo), name, cancelled=True, damaged=len(predictor.damaged))
        return
    predictor.root.attrs["napari_rckd_complete"] = True


def create_output(path: str | Path, slide, sources) -> Path:
    """The OME-Zarr directory for a slide's results, stamped with what made them."""
    path = Path(path)
    root = open_root(path)
    root.attrs["napari_rckd_slide"] = dict(
        name=slide.path.name,
        shape=list(slide.shape),
        mpp=slide.mpp,
        sources={source.name: source.identity for source in sources},
    )
    return path


def open_results(path: str | Path) -> dict[str, ResultStore]:
    """Every result in a whole-slide output directory, by name."""
    path = Path(path)
    if not path.is_dir():
        raise RckdError(f"no whole-slide results at {path}; run `napari-rckd predict` first.")
    root = open_root(path, mode="r")
    names = [name for name, _ in root.groups() if "napari_rckd" in root[name].attrs]
    if not names:
        raise RckdError(f"{path} holds no napari-rckd results; point at a predict output .zarr.")
    return {name: ResultStore.open(root, name) for name in sorted(names)}
