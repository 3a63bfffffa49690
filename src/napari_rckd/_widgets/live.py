"""Live analysis: camera moves become predictor plans, finished tiles become layer refreshes.

``LiveAnalysis`` binds a viewer and a slide's image layer to a headless ``Predictor``. A camera
or dims change restarts a short debounce timer; when it fires, the view is read from the image
layer's ``corner_pixels`` at its ``data_level`` (scaled to level 0 by ``downsample_factors``),
planned (centre first, nuclei only when zoomed in far enough) and handed to the predictor's
worker thread, so the UI thread never runs a model.

A finished tile wakes the UI thread through a queued Qt signal; refreshes are coalesced to at
most one per frame, a layer is touched only when what the worker wrote (a tile's core, or
more where stitching merged nuclei across a seam) lies in the region it has loaded (one that
finished after the camera left is drawn by napari's own slicing when the camera comes back).
The status text is sent only when it changes, at most twice a second, so a busy worker does
not make Qt re-lay out the dock on every tile.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from napari_rckd._widgets.result_layers import RESULT_SOURCE, add_result_layers, source_classes
from napari_rckd.inference.predictor import Predictor, TileDone
from napari_rckd.inference.scheduler import view_from_corner_pixels
from napari_rckd.inference.tiling import Box

log = logging.getLogger(__name__)

DEBOUNCE_MS = 120  # wait this long after the last camera event: one plan per gesture
FRAME_MS = 16  # at most one refresh per frame (60 Hz)
REFRESH_MS = 500  # drain finished tiles at least this often (a missed wake-up costs little)
STATUS_MS = 500  # the status text changes at most this often
RATE_WINDOW_S = 5.0  # tiles/s is measured over this many seconds


class _Wake(QObject):
    """Carries "a tile finished" from the worker thread to the UI thread (queued signal)."""

    tile_done = Signal()


class LiveAnalysis:
    """Keeps a predictor busy with what ``image_layer`` shows and the result layers up to date.

    ``on_status(text)`` receives short messages (zoom hints, tiles/s or idle, cache use).
    """

    def __init__(
        self,
        viewer,
        image_layer,
        predictor: Predictor,
        on_status: Callable[[str], None] | None = None,
        debounce_ms: int = DEBOUNCE_MS,
        refresh_ms: int = REFRESH_MS,
    ):
        self.viewer, self.image_layer, self.predictor = viewer, image_layer, predictor
        self.on_status = on_status
        # kinds (nuclei, subtype, region) whose layers are toggled on; a preview goes with its kind
        self.active: set[str] = {source.kind for source in predictor.sources.values()}
        self.layers = add_result_layers(
            viewer, predictor.stores, source_classes(predictor.sources.values()), image_layer.name
        )
        for name in self.layers:  # where the worker writes is what the layers update
            predictor.stores[name].track_changes()
        self.message = ""
        self.submitted = 0  # plans handed to the worker (tests check toggling stops them)
        self.last_plan = None
        self.planned_at: float | None = None  # perf_counter() when the last plan was submitted
        self.last_refresh: float | None = None  # perf_counter() of the last layer refresh
        self._done_times: collections.deque[float] = collections.deque()
        self._enabled = False
        self._sent, self._sent_message, self._sent_at = None, None, -1e9  # the last status
        self._debounce = _single_shot(debounce_ms, self.update_view)
        self._frame = _single_shot(FRAME_MS, self.poll)
        self._status = _single_shot(STATUS_MS, self._report)
        self._refresh = QTimer()
        self._refresh.setInterval(refresh_ms)
        self._refresh.timeout.connect(self.poll)
        self._wake = _Wake()
        self._wake.tile_done.connect(self._on_tile_done)
        previous = predictor.on_tile_done

        def notify(event: TileDone) -> None:  # on the worker thread
            if previous is not None:
                previous(event)
            self._wake.tile_done.emit()

        predictor.on_tile_done = notify
        predictor.start()

    # -- on and off ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Follow the camera (and plan the current view at once), or stop asking for tiles."""
        if enabled == self._enabled:
            return
        self._enabled = enabled
        events = (self.viewer.scene.camera.events.center, self.viewer.scene.camera.events.zoom)
        events += (self.viewer.dims.events.current_step,)
        for event in events:
            (event.connect if enabled else event.disconnect)(self._on_camera_changed)
        if enabled:
            self._refresh.start()
            self.update_view()
        else:
            self._debounce.stop()
            self._frame.stop()
            self._cancel_pending()
            self.poll()  # show what finished; the timers stop with live mode
            self._refresh.stop()
            self._status.stop()  # a deferred status must not outlive the widget showing it
            self._report(now=True)  # "live off", not the last rate

    def set_active(self, kind: str, active: bool) -> None:
        """A layer toggle: show or hide the kind's layers and compute it only while shown."""
        (self.active.add if active else self.active.discard)(kind)
        for name, layer in self.layers.items():
            if RESULT_SOURCE[name] == kind:
                layer.visible = active
        if self._enabled:
            self.update_view()

    def _on_camera_changed(self, event=None) -> None:
        self._debounce.start()  # restarts: the plan waits for the camera to settle

    def _cancel_pending(self) -> None:
        # An empty view starts a new generation: queued requests are dropped and the batch in
        # flight is cached, not written.
        self.predictor.submit(self.predictor.plan_view(Box(0, 0, 0, 0), 0.0))

    # -- planning -----------------------------------------------------------------------------

    def current_view(self) -> tuple[Box, float]:
        """The level-0 box on screen and how many screen pixels one level-0 pixel covers.

        napari 0.9 only moves ``corner_pixels`` when the view leaves the region already loaded
        (expanded to chunk borders), so after a zoom-in they still cover the old, larger region.
        The canvas rectangle (camera centre ± canvas size / zoom) is intersected with them.
        """
        layer, slide = self.image_layer, self.predictor.slide
        level = layer.data_level if layer.multiscale else 0
        factors = layer.downsample_factors if layer.multiscale else [[1.0, 1.0]]
        loaded = view_from_corner_pixels(layer.corner_pixels, level, factors, slide.shape)
        camera = self.viewer.scene.camera
        half = np.asarray(self.viewer.canvas.size, dtype=float) / (2 * camera.zoom)
        center = np.asarray(camera.center[-2:], dtype=float)
        lead = list(self.viewer.dims.point[:-2])
        corners = [layer.world_to_data(lead + list(center + s * half))[-2:] for s in (-1, 1)]
        (y0, x0), (y1, x1) = np.min(corners, axis=0), np.max(corners, axis=0)
        on_canvas = Box(float(y0) + 0.5, float(x0) + 0.5, float(y1) + 0.5, float(x1) + 0.5)
        return on_canvas.intersect(loaded), float(camera.zoom * layer.scale[-1])

    def update_view(self):
        """Plan what is on screen now and hand it to the worker (replacing older plans)."""
        if not self._enabled:
            return None
        view, screen_px = self.current_view()
        plan = self.predictor.plan_view(view, screen_px)
        sources = self.predictor.sources
        plan.requests = [r for r in plan.requests if sources[r.model].kind in self.active]
        self.predictor.submit(plan)
        self.planned_at = time.perf_counter()
        self.submitted += 1
        self.last_plan = plan
        hints = [text for name, text in plan.skipped.items() if sources[name].kind in self.active]
        self.message = "; ".join(hints)
        self._report()
        return plan

    # -- results ------------------------------------------------------------------------------

    @property
    def refresh_pending(self) -> bool:
        """A refresh is scheduled for the next frame."""
        return self._frame.isActive()

    def _on_tile_done(self) -> None:
        """A tile finished: refresh in the next frame, together with any that follow."""
        if self._enabled and not self._frame.isActive():  # off: set_enabled(False) drained it
            since_ms = 1000 * (time.perf_counter() - (self.last_refresh or 0.0))
            self._frame.start(int(max(0.0, FRAME_MS - since_ms)))

    def poll(self) -> int:
        """Drain finished tiles and refresh each layer that shows one of them (UI thread);
        returns how many layers were refreshed."""
        finished: list[TileDone] = []
        while True:
            try:
                finished.append(self.predictor.events.get_nowait())
            except queue.Empty:
                break
        now = time.monotonic()
        self._done_times.extend([now] * len(finished))
        while self._done_times and now - self._done_times[0] > RATE_WINDOW_S:
            self._done_times.popleft()
        refreshed = 0
        for name, layer in self.layers.items():
            store = self.predictor.stores[name]
            if _any_loaded(layer, store.take_changes(), store.shape):
                layer.refresh()
                refreshed += 1
        if refreshed:
            self.last_refresh = time.perf_counter()
        self._report()  # also when nothing finished: the rate decays and "idle" must show
        return refreshed

    @property
    def tiles_per_second(self) -> float:
        return len(self._done_times) / RATE_WINDOW_S

    @property
    def idle(self) -> bool:
        """Nothing pending or running in the predictor."""
        return self.predictor.wait_idle(0)

    def _activity(self) -> str:
        if not self._enabled:
            return "live off"
        return "idle" if self.idle else f"{self.tiles_per_second:.1f} tiles/s"

    def status(self) -> str:
        """What the worker does (live off, idle or the recent tile rate), the memory the result
        layers and the cache hold against their budgets, and any hint."""
        cache, predictor = self.predictor.cache, self.predictor
        parts = [self._activity()]
        if predictor.memory_budget is not None:
            used, budget = predictor.results_nbytes / 2**20, predictor.memory_budget / 2**20
            parts.append(f"layers {used:.0f}/{budget:.0f} MB")
        parts.append(f"cache {cache.nbytes / 2**20:.0f}/{cache.max_bytes / 2**20:.0f} MB")
        return " · ".join(parts + ([self.message] if self.message else []))

    def _report(self, now: bool = False) -> None:
        """Send the status if it changed: a new hint at once, new figures at most every
        ``STATUS_MS`` (a label that changes on every tile makes Qt re-lay out the dock)."""
        text = self.status()
        if self.on_status is None or text == self._sent:
            return
        wait_ms = STATUS_MS - 1000 * (time.monotonic() - self._sent_at)
        if self.message == self._sent_message and wait_ms > 0 and not now:
            if not self._status.isActive():
                self._status.start(int(wait_ms))
            return
        self._sent, self._sent_message, self._sent_at = text, self.message, time.monotonic()
        self.on_status(text)

    # -- teardown -----------------------------------------------------------------------------

    def close(self, remove_layers: bool = False, wait: bool = True) -> None:
        """Stop following the camera and stop the worker; optionally remove the result layers.

        With ``wait=False`` the worker is joined on a helper thread so the UI never waits for
        the batch in flight.
        """
        self.set_enabled(False)
        if wait:
            self.predictor.close()
        else:
            threading.Thread(target=self.predictor.close, daemon=True).start()
        if remove_layers:
            for layer in self.layers.values():
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
            self.layers = {}


def _single_shot(interval_ms: int, callback) -> QTimer:
    timer = QTimer()
    timer.setSingleShot(True)
    timer.setInterval(interval_ms)
    timer.timeout.connect(callback)
    return timer


def _any_loaded(layer, boxes: list[Box], shape: tuple[int, int]) -> bool:
    """Whether any of ``boxes`` (level-0 pixels of the layer's data, of ``shape``) lies in the
    region the layer has loaded."""
    if not boxes or not layer.multiscale:
        return bool(boxes)
    loaded = view_from_corner_pixels(
        layer.corner_pixels, layer.data_level, layer.downsample_factors, shape
    )
    return any(not box.intersect(loaded).is_empty() for box in boxes)
