"""Nuclei exported while a whole-slide run is still predicting, so the export is no second pass.

Stitching tile T can change only nuclei owned by the tiles whose windows overlap T's: its 3×3
neighbourhood, since the halo is under half a tile (``inference.instances``). So a tile's nuclei
are final once every tile of its neighbourhood that the run will compute is written, and they
are measured then, from the store the predictor just wrote, on the predictor's thread (no
reader ever races a writer). Tiles are exported in grid order, so the files are the same as
`export_nuclei` writes afterwards from the finished store.
"""

from __future__ import annotations

from collections.abc import Iterable

from napari_rckd.inference.export import NucleiFiles
from napari_rckd.inference.nuclei_table import measure_tile
from napari_rckd.inference.store import ResultStore

SOURCE = "nuclei"  # the source whose tiles carry nuclei instances


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
        self._next = 0  # index into _order of the first tile not exported

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
            self._export(*self._order[self._next])

    def finish(self) -> None:
        """Export every tile not exported yet (the run has written all it will)."""
        self._waiting.clear()
        while self._next < len(self._order):
            self._export(*self._order[self._next])

    def _final(self, row: int, col: int) -> bool:
        return not any(
            (row + dy, col + dx) in self._waiting for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        )

    def _export(self, row: int, col: int) -> None:
        self.files.write(
            measure_tile(self.labels, self.slide, row, col, self.classes, self.class_names)
        )
        self._next += 1
