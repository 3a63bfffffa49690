"""Nuclei exported while a whole-slide run is still predicting, so the export is no second pass.

Stitching tile T changes only nuclei owned by tiles whose windows overlap T's (its 3×3
neighbourhood, the halo being under half a tile: ``inference.stitching``), and it writes
chunks at most two tiles from T (a duplicate is cleared in its owner's window). Measuring tile
X reads chunks at most one tile from X. So once every tile within three tiles of X that the
run computes is written, X's nuclei are final and no write can touch what measuring X reads:
X is measured then, on an exporter thread beside the model, from the store the predictor
wrote. Tiles are exported in grid order, so the files are the ones `export_nuclei` writes
afterwards from the finished store.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from napari_rckd.inference.export import NucleiFiles
from napari_rckd.inference.nuclei_table import measure_tile
from napari_rckd.inference.store import ResultStore

SOURCE = "nuclei"  # the source whose tiles carry nuclei instances
REACH = 3  # tiles: writes for a tile this far away can no longer touch what measuring reads


class NucleiStream:
    """Feeds ``files`` with the nuclei of a whole-slide run: `planned` hears which tiles the run
    will compute, `written` which it has stitched, and `finish` exports what is left."""

    def __init__(
        self,
        files: NucleiFiles,
        labels: ResultStore,
        slide,
        classes: ResultStore | None = None,
        class_names: list[str] | None = None,
    ):
        self.files, self.labels, self.slide = files, labels, slide
        self.classes, self.class_names = classes, class_names
        self._order: list[tuple[int, int]] = []  # grid order: the order the files list nuclei in
        self._waiting: set[tuple[int, int]] = set()  # planned but not yet written
        self._next = 0  # index into _order of the first tile not handed to the exporter
        # one thread, so tiles are written in the order they are submitted
        self._exporter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rckd-export")
        self._submitted: list[Future] = []
        self.busy_s = 0.0  # seconds the exporter thread spent measuring and writing

    def planned(self, requests: Iterable[tuple[str, int, int]]) -> None:
        """The (source, row, col) the run will compute; only nuclei tiles are kept."""
        tiles = {(row, col) for source, row, col in requests if source == SOURCE}
        self._order, self._waiting, self._next = sorted(tiles), tiles, 0

    def written(self, source: str, tiles: Iterable[tuple[int, int]]) -> None:
        """Tiles the predictor has just stitched: export every tile that became final."""
        if source != SOURCE:
            return
        self._waiting.difference_update(tiles)
        while self._next < len(self._order) and self._final(*self._order[self._next]):
            self._submit(*self._order[self._next])
        self._raise_failures()

    def finish(self) -> None:
        """Export every tile not exported yet (the run has written all it will) and wait."""
        self._waiting.clear()
        while self._next < len(self._order):
            self._submit(*self._order[self._next])
        self._exporter.shutdown(wait=True)
        for future in self._submitted:
            future.result()

    def close(self) -> None:
        """Stop the exporter after the tile in hand (a failed or cancelled run)."""
        self._exporter.shutdown(wait=True, cancel_futures=True)

    def _final(self, row: int, col: int) -> bool:
        near = range(-REACH, REACH + 1)
        return not any((row + dy, col + dx) in self._waiting for dy in near for dx in near)

    def _submit(self, row: int, col: int) -> None:
        self._submitted.append(self._exporter.submit(self._export, row, col))
        self._next += 1

    def _export(self, row: int, col: int) -> None:
        started = time.perf_counter()
        self.files.write(
            measure_tile(self.labels, self.slide, row, col, self.classes, self.class_names)
        )
        self.busy_s += time.perf_counter() - started

    def _raise_failures(self) -> None:
        """An export that failed (a full disk, say) stops the run at once, not at its end."""
        while self._submitted and self._submitted[0].done():
            self._submitted.pop(0).result()
