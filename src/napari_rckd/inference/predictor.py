"""The predictor: slide windows in, model sources run in batches, results stitched into stores.

One ``Predictor`` ties a slide to its sources (nuclei, subtype, region), their tile grids, the
result stores (memory, or an on-disk OME-Zarr for whole-slide runs), a shared bounded
``ResultCache`` and a ``ViewportScheduler``. ``compute(requests)`` works synchronously (tests,
whole-slide runs); ``start()`` + ``submit(plan)`` run the same code on a worker thread for a
viewer, dropping requests a camera move made stale. Every finished tile is announced on
``events`` (a queue) and to ``on_tile_done`` so a GUI can refresh just that box.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import zarr

from napari_rckd.errors import RckdError
from napari_rckd.inference.cache import ResultCache
from napari_rckd.inference.native_memory import release_free_memory
from napari_rckd.inference.scheduler import ModelTiles, Plan, TileRequest, ViewportScheduler
from napari_rckd.inference.sources import Source
from napari_rckd.inference.store import ResultStore, open_root
from napari_rckd.inference.tiling import Box, TileGrid
from napari_rckd.io.slide import DamagedSlideError

log = logging.getLogger(__name__)

DEFAULT_BATCH = 4
# Eviction frees memory down to this share of the budget, so it runs once per many batches.
EVICT_TO = 0.8


@dataclass(frozen=True)
class TileDone:
    """A tile's results are in the stores: ``box`` is its core in level-0 slide pixels."""

    source: str
    row: int
    col: int
    box: Box
    generation: int


class Predictor:
    """Computes tiles of ``sources`` over ``slide`` into result stores under ``root``."""

    def __init__(
        self,
        slide,
        sources: Sequence[Source],
        root: zarr.Group | None = None,
        cache: ResultCache | None = None,
        tissue=None,
        batch_size: int = DEFAULT_BATCH,
        on_tile_done: Callable[[TileDone], None] | None = None,
        memory_budget: int | None = None,
    ):
        if slide.mpp is None:
            raise RckdError(
                f"{slide.path.name} does not record its pixel size; open it with the scanner's "
                "value (open_slide(path, mpp=...), or --slide-mpp on the command line)."
            )
        if not sources:
            raise RckdError(
                "nothing to predict: choose at least one model (nuclei, subtype, region)."
            )
        self.slide = slide
        self.sources = {source.name: source for source in sources}
        self.grids: dict[str, TileGrid] = {s.name: s.grid(slide.shape, slide.mpp) for s in sources}
        self.root = root if root is not None else open_root()
        self.stores: dict[str, ResultStore] = {}
        for source in sources:
            for spec in source.results(self.grids[source.name]):
                self.stores[spec.name] = self._store(source, spec)
        self.cache = cache if cache is not None else ResultCache()
        self.batch_size = max(1, int(batch_size))
        self.on_tile_done = on_tile_done
        self.events: queue.Queue[TileDone] = queue.Queue()
        # Windows that could not be decoded: predicted as blank glass instead of stopping the
        # run; whole-slide runs report the count and refuse a slide that is mostly damaged.
        self.damaged: set[tuple[str, int, int]] = set()
        self.scheduler = ViewportScheduler(
            [
                ModelTiles(s.name, self.grids[s.name], s.min_screen_px, s.preview_of)
                for s in sources
            ],
            tissue,
        )
        self._done: set[tuple[str, int, int]] = set()
        # Live results in memory are bounded: past ``memory_budget`` bytes, the tiles seen
        # least recently (written, or needed by a view) are evicted and computed again, or
        # taken from the result cache, when a view needs them again. None: never evicted.
        self.memory_budget = memory_budget
        self._seen: OrderedDict[tuple[str, int, int], int] = OrderedDict()  # -> generation
        self._seen_lock = threading.Lock()
        self._pending: list[TileRequest] = []
        self._wake = threading.Condition()
        self._closing = False
        self._busy = False
        self._worker: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rckd-read")

    def _store(self, source: Source, spec) -> ResultStore:
        grid = self.grids[source.name]
        if spec.name in self.root:  # an existing on-disk run: resume into it
            store = ResultStore.open(self.root, spec.name)
            if store.shape != ((grid.rows, grid.cols) if spec.per_tile else grid.shape):
                raise RckdError(
                    f"result {spec.name!r} in the output store was made with another model or "
                    "slide (shape differs); write to a new --out folder or delete the old one."
                )
            return store
        shape, mpp, chunk = grid.shape, source.mpp, grid.tile
        if spec.per_tile:  # one pixel per tile, a tile's core wide
            shape, mpp, chunk = (grid.rows, grid.cols), source.mpp * grid.tile, 256
        return ResultStore.create(
            self.root,
            spec.name,
            shape,
            chunk,
            spec.dtype,
            spec.kind,
            mpp,
            self.slide.mpp,
            list(spec.channels) if spec.channels else None,
        )

    # -- what is done -------------------------------------------------------------------------

    def is_done(self, source: str, row: int, col: int) -> bool:
        return (source, row, col) in self._done

    def tiles_done(self, source: str) -> list[tuple[int, int]]:
        return sorted((r, c) for s, r, c in self._done if s == source)

    def plan_view(self, view: Box, screen_px_per_level0_px: float) -> Plan:
        """The scheduler's plan for a view (level-0 box), leaving out tiles already computed
        (which the view keeps fresh in memory)."""
        generation = self.scheduler.generation + 1  # the plan's, once it starts

        def done(source: str, row: int, col: int) -> bool:
            if not self.is_done(source, row, col):
                return False
            self._touch((source, row, col), generation)
            return True

        return self.scheduler.plan(view, screen_px_per_level0_px, done)

    # -- bounded memory -----------------------------------------------------------------------

    @property
    def results_nbytes(self) -> int:
        """Bytes the in-memory result stores hold (0 for a whole-slide run on disk)."""
        return sum(store.nbytes_in_memory for store in self.stores.values())

    def _touch(self, key: tuple[str, int, int], generation: int) -> None:
        if self.memory_budget is None or not self.sources[key[0]].evictable:
            return
        with self._seen_lock:
            self._seen[key] = generation
            self._seen.move_to_end(key)

    def evict_over_budget(self) -> int:
        """Evict the least recently seen tiles until the results fit in ``EVICT_TO`` of the
        budget, never a tile the current view needs; returns how many were evicted."""
        if self.memory_budget is None or self.results_nbytes <= self.memory_budget:
            return 0
        evicted, current = 0, self.scheduler.generation
        while self.results_nbytes > EVICT_TO * self.memory_budget:
            with self._seen_lock:
                if not self._seen or next(iter(self._seen.values())) >= current:
                    break  # what is left is on screen now
                key, _ = self._seen.popitem(last=False)
            name, row, col = key
            source, grid = self.sources[name], self.grids[name]
            box = source.evict(self.stores, grid, row, col)
            self._done.discard(key)
            for spec in source.results(grid):
                self.stores[spec.name].release(box)
            evicted += 1
        if evicted:
            release_free_memory()  # else the allocator keeps what the evicted tiles held
            log.debug("evicted %d live tiles: results now %d bytes", evicted, self.results_nbytes)
        return evicted

    # -- synchronous computation --------------------------------------------------------------

    def compute(
        self,
        requests: Iterable[TileRequest | tuple[str, int, int]],
        stop: threading.Event | None = None,
        drop_stale: bool = False,
    ) -> int:
        """Compute and write ``requests`` (grouped by source, batched), return how many were
        written. Stops between batches once ``stop`` is set."""
        return sum(written for _, _, written in self.run_batches(requests, stop, drop_stale))

    def run_batches(
        self,
        requests: Iterable[TileRequest | tuple[str, int, int]],
        stop: threading.Event | None = None,
        drop_stale: bool = False,
        cache_results: bool = True,
    ) -> Iterator[tuple[str, list[TileRequest], int]]:
        """Run ``requests`` batch by batch, yielding (source, batch, tiles written) after each.

        The next batch's windows are read on the reader threads while the model runs on this
        one, so reading costs no wall time as long as it is faster than the model. A whole-slide
        run passes ``cache_results=False``: its tiles are never asked for again."""
        batches = self.batches(requests)
        current = next(batches, None)
        reads = self._start_reads(*current) if current else {}
        while current is not None:
            if stop is not None and stop.is_set():
                return
            following = next(batches, None)
            next_reads = self._start_reads(*following) if following else {}
            written = self.run_batch(*current, drop_stale, reads, cache_results)
            yield current[0], current[1], written
            current, reads = following, next_reads

    def batches(self, requests):
        """Consecutive same-source runs cut into batches, in the order given."""
        batch: list = []
        for request in requests:
            if isinstance(request, tuple):
                request = TileRequest(*request, generation=self.scheduler.generation, distance=0.0)
            if request.model not in self.sources:
                raise RckdError(f"no source named {request.model!r}; have {sorted(self.sources)}.")
            if batch and (request.model != batch[0].model or len(batch) == self.batch_size):
                yield batch[0].model, batch
                batch = []
            batch.append(request)
        if batch:
            yield batch[0].model, batch

    def _start_reads(self, name: str, batch: list[TileRequest]) -> dict[TileRequest, Future]:
        """Start reading the windows of ``batch`` that no cached result makes unnecessary."""
        source, key = self.sources[name], self._cache_key(name)
        return {
            request: self._reader.submit(self._read, name, request)
            for request in batch
            if self._cached(source, key, request) is None
        }

    def _read(self, name: str, request: TileRequest) -> np.ndarray:
        source, grid = self.sources[name], self.grids[name]
        y, x = grid.window_level0(request.row, request.col)
        try:
            return self.slide.read_at_mpp(y, x, source.window, source.mpp)
        except DamagedSlideError as error:
            if not self.damaged:
                log.warning("skipping windows that cannot be read (predicted as glass): %s", error)
            self.damaged.add((name, request.row, request.col))
            return np.full((source.window, source.window, 3), 255, np.uint8)

    def _cache_key(self, name: str) -> str:
        return f"{self.sources[name].identity}@{self.slide.path}"

    def run_batch(
        self,
        name: str,
        batch: list[TileRequest],
        drop_stale: bool,
        reads: dict[TileRequest, Future] | None = None,
        cache_results: bool = True,
    ) -> int:
        """Predict, write and announce one batch of ``name`` tiles; ``reads`` are windows already
        being read (``run_batches`` starts them a batch ahead). Returns the tiles written."""
        source, key = self.sources[name], self._cache_key(name)
        if drop_stale:
            batch = self.scheduler.current(batch)
        if reads is None:
            reads = self._start_reads(name, batch)
        outputs: dict[TileRequest, dict] = {}
        missing = []
        for request in batch:
            cached = self._cached(source, key, request)
            if cached is None:
                missing.append(request)
            else:
                outputs[request] = cached
        if missing:
            windows = np.stack(
                [reads[r].result() if r in reads else self._read(name, r) for r in missing]
            )
            for request, output in zip(missing, source.predict(windows), strict=True):
                outputs[request] = output
                for result, array in output.items() if cache_results else ():
                    self.cache.put_result(key, result, 0, (request.row, request.col), array)
        shown, written, hidden = [], 0, set()
        for request in batch:
            if drop_stale and self.scheduler.is_stale(request):
                continue  # kept in the cache: panning back costs no model time
            if not self.is_done(name, request.row, request.col):
                source.write(
                    self.stores, self.grids[name], request.row, request.col, outputs[request]
                )
                self._done.add((name, request.row, request.col))
                self._touch((name, request.row, request.col), request.generation)
                hidden |= self._hide_previews(name, request.row, request.col)
                written += 1
            shown.append(request)
        for written_to in [name, *sorted(hidden)]:  # one pyramid rebuild per batch
            for spec in self.sources[written_to].results(self.grids[written_to]):
                self.stores[spec.name].flush()
        for request in shown:
            self._announce(name, request)
        self.evict_over_budget()
        return written

    def _hide_previews(self, name: str, row: int, col: int) -> set[str]:
        """A preview shows only where the model it stands in for has not answered: clear it
        under a tile of that model just written, or under the model's tiles already done.
        Returns the previews cleared (their pyramids are rebuilt with the batch's)."""
        preview_of = self.sources[name].preview_of
        if preview_of is not None:  # a preview tile: hidden where the model is already done
            grid, exact = self.grids[name], self.grids[preview_of]
            window = exact.to_grid(grid.to_level0(grid.window(row, col)))
            done = [(r, c) for r, c in exact.tiles_in(window) if self.is_done(preview_of, r, c)]
            boxes = [exact.to_level0(exact.core(r, c)) for r, c in done]
            previews = [name]
        else:
            boxes = [self.grids[name].to_level0(self.grids[name].core(row, col))]
            previews = [n for n, s in self.sources.items() if s.preview_of == name]
        for preview in previews:
            for box in boxes:
                self.sources[preview].hide(self.stores, self.grids[preview], box)
        return set(previews) if boxes else set()

    def _cached(self, source: Source, key: str, request: TileRequest) -> dict | None:
        names = [spec.name for spec in source.results(self.grids[source.name])]
        arrays = {n: self.cache.get_result(key, n, 0, (request.row, request.col)) for n in names}
        return None if any(a is None for a in arrays.values()) else arrays

    def _announce(self, name: str, request: TileRequest) -> None:
        grid = self.grids[name]
        box = grid.to_level0(grid.core(request.row, request.col))
        event = TileDone(name, request.row, request.col, box, request.generation)
        self.events.put(event)
        if self.on_tile_done is not None:
            self.on_tile_done(event)

    # -- worker thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Run submitted plans on a daemon worker thread until ``close()``."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="rckd-predict", daemon=True)
            self._worker.start()

    def submit(self, plan: Plan) -> None:
        """Replace whatever is pending with ``plan``'s requests (the old ones are stale anyway)."""
        with self._wake:
            self._pending = list(plan.requests)
            self._wake.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or running (tests and scripts)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _work(self) -> None:
        """Run pending requests; after a camera move the first batch is the centre tile alone
        (it shows after one tile of model time), then batches double up to ``batch_size``.
        The next batch's windows are read while the model runs on the current one."""
        size, generation, reads = 1, None, {}
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending or self._closing)
                if self._closing:
                    return
                pending = self.scheduler.current(self._pending)
                if pending and pending[0].generation != generation:
                    size, generation = 1, pending[0].generation
                name = pending[0].model if pending else None
                same = [r for r in pending if r.model == name]
                batch, following = same[:size], same[size : size + min(2 * size, self.batch_size)]
                self._pending = [r for r in pending if r not in batch]
                self._busy = bool(batch)
            reads = {r: f for r, f in reads.items() if r in batch}  # stale reads: dropped
            try:
                if batch:
                    reads.update(self._start_reads(name, [r for r in batch if r not in reads]))
                    ahead = self._start_reads(name, following)
                    self.run_batch(name, batch, True, reads)
                    reads = ahead
                    size = min(2 * size, self.batch_size)
            except Exception:  # a worker must survive a bad tile; the GUI shows the log
                log.exception("prediction of %s tiles failed", name)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def close(self) -> None:
        """Stop the worker (after its current batch) and the reader threads."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        self._reader.shutdown(wait=True)

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
