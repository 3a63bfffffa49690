"""Live analysis: camera moves become predictor plans, finished tiles become layer refreshes.

``LiveAnalysis`` binds a viewer and a slide's image layer to a headless ``Predictor``. A camera
or dims change restarts a short debounce timer; when it fires, the view is read from the image
layer's ``corner_pixels`` at its ``data_level`` (scaled to level 0 by ``downsample_factors``),
planned (centre first, nuclei only when zoomed in far enough) and handed to the predictor's
worker thread, so the UI thread never runs a model. A second timer drains ``predictor.events``
on the UI thread and refreshes only the layers whose source finished tiles.

Result layers show the zarr arrays of the stores directly, not ``dask_levels()``: napari keeps
an opportunistic dask cache keyed by task name, which would keep showing a tile's old (empty)
pixels after the worker wrote it.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QTimer

from napari_rckd.inference.predictor import Predictor
from napari_rckd.inference.scheduler import view_from_corner_pixels
from napari_rckd.inference.store import ResultStore
from napari_rckd.inference.tiling import Box

log = logging.getLogger(__name__)

DEBOUNCE_MS = 120  # wait this long after the last camera event: one plan per gesture
REFRESH_MS = 100  # how often finished tiles are drained into layer refreshes
RATE_WINDOW_S = 5.0  # tiles/s is measured over this many seconds
# the source each result belongs to, and how it is shown (None: kept in the store only)
RESULT_SOURCE = {
    "nuclei_labels": "nuclei",
    "subtype_class": "subtype",
    "region_prob": "region",
    "region_mask": "region",
}


class ChannelView:
    """One channel of a C×H×W array, read lazily (napari slices it like a 2-D array)."""

    def __init__(self, array, channel: int):
        self.array, self.channel = array, channel
        self.shape = tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.array[(self.channel, *key)])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype=dtype)


def _placement(store: ResultStore) -> dict:
    """µm scale and half-pixel translation that put a result exactly over the slide layer."""
    scale, shift = store.scale_um(0), store.translate_um(0)
    return dict(scale=(scale, scale), translate=(shift, shift), units=("um", "um"))


def _layer(levels: list, kwargs: dict, kind: str) -> tuple:
    """LayerData; napari misreads a one-level multiscale list as 1-D, so one level is plain."""
    if len(levels) == 1:
        return (levels[0], {**kwargs, "multiscale": False}, kind)
    return (levels, {**kwargs, "multiscale": True}, kind)


def _class_colormap(colors: list[str]) -> dict:
    """Value k+1 = class k in its colour; 0 (not computed / background) transparent."""
    colormap = {None: "transparent", 0: "transparent"}
    colormap.update({k + 1: color for k, color in enumerate(colors)})
    return colormap


def result_layer_data(
    stores: dict[str, ResultStore], classes: dict[str, tuple[list, list]], prefix: str
) -> list[tuple]:
    """napari LayerData for each displayable result; ``classes`` maps a source name to its
    (class names, class colours)."""
    layers = []
    if "nuclei_labels" in stores:
        store = stores["nuclei_labels"]
        kwargs = dict(name=f"{prefix} nuclei", opacity=0.6, **_placement(store))
        layers.append(_layer(list(store.levels), kwargs, "labels"))
    if "subtype_class" in stores:
        store, (names, colors) = stores["subtype_class"], classes["subtype"]
        kwargs = dict(
            name=f"{prefix} subtype",
            opacity=0.35,
            colormap=_class_colormap(colors),
            features={"index": np.arange(len(names) + 1), "class": ["", *names]},
            metadata={"probabilities": stores.get("subtype_prob"), "class_names": names},
            **_placement(store),
        )
        layers.append(_layer(list(store.levels), kwargs, "labels"))
    if "region_prob" in stores:
        store, (names, _) = stores["region_prob"], classes["region"]
        channel = len(names) - 1  # the last class: the positive one ("cancer") by convention
        kwargs = dict(
            name=f"{prefix} {names[channel]} probability",
            colormap="inferno",
            contrast_limits=(0.0, 1.0),
            opacity=0.45,
            blending="translucent",
            metadata={"class_name": names[channel]},
            **_placement(store),
        )
        layers.append(_layer([ChannelView(a, channel) for a in store.levels], kwargs, "image"))
    if "region_mask" in stores:
        store, (names, colors) = stores["region_mask"], classes["region"]
        kwargs = dict(
            name=f"{prefix} region outline",
            colormap=_class_colormap(colors),
            features={"index": np.arange(len(names) + 1), "class": ["", *names]},
            **_placement(store),
        )
        layers.append(_layer(list(store.levels), kwargs, "labels"))
    return layers


def source_classes(sources) -> dict[str, tuple[list, list]]:
    """(class names, colours) of the sources that have classes."""
    return {
        s.name: (list(s.class_names), list(s.class_colors))
        for s in sources
        if hasattr(s, "class_names")
    }


def add_result_layers(viewer, stores, classes, prefix: str) -> dict[str, object]:
    """Add the result layers to ``viewer``; returns them by result name."""
    added = {}
    names = [n for n in RESULT_SOURCE if n in stores]
    for name, (data, kwargs, kind) in zip(
        names, result_layer_data(stores, classes, prefix), strict=True
    ):
        added[name] = getattr(viewer, f"add_{kind}")(data, **kwargs)
    if "region_mask" in added:
        added["region_mask"].contour = 2  # an outline over the probability, not a fill
    return added


class LiveAnalysis:
    """Keeps a predictor busy with what ``image_layer`` shows and the result layers up to date.

    ``on_status(text)`` receives short messages (zoom hints, tiles/s, cache use).
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
        self.active: set[str] = set(predictor.sources)  # sources whose layers are toggled on
        self.layers = add_result_layers(
            viewer, predictor.stores, source_classes(predictor.sources.values()), image_layer.name
        )
        self.message = ""
        self.submitted = 0  # plans handed to the worker (tests check toggling stops them)
        self.last_plan = None
        self.last_refresh: float | None = None  # perf_counter() of the last layer refresh
        self._done_times: collections.deque[float] = collections.deque()
        self._enabled = False
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(debounce_ms)
        self._debounce.timeout.connect(self.update_view)
        self._refresh = QTimer()
        self._refresh.setInterval(refresh_ms)
        self._refresh.timeout.connect(self.poll)
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
            self._cancel_pending()
            self.poll()  # show what finished; the timer stops with live mode
            self._refresh.stop()

    def set_active(self, source: str, active: bool) -> None:
        """A layer toggle: show or hide the source's layers and compute it only while shown."""
        (self.active.add if active else self.active.discard)(source)
        for name, layer in self.layers.items():
            if RESULT_SOURCE[name] == source:
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
        plan.requests = [r for r in plan.requests if r.model in self.active]
        self.predictor.submit(plan)
        self.submitted += 1
        self.last_plan = plan
        hints = [text for name, text in plan.skipped.items() if name in self.active]
        self.message = "; ".join(hints)
        self._report()
        return plan

    # -- results ------------------------------------------------------------------------------

    def poll(self) -> int:
        """Drain finished tiles and refresh the layers of their sources (UI thread)."""
        changed: set[str] = set()
        now = time.monotonic()
        while True:
            try:
                event = self.predictor.events.get_nowait()
            except queue.Empty:
                break
            changed.add(event.source)
            self._done_times.append(now)
        for name, layer in self.layers.items():
            if RESULT_SOURCE[name] in changed:
                layer.refresh()
        while self._done_times and now - self._done_times[0] > RATE_WINDOW_S:
            self._done_times.popleft()
        if changed:
            self.last_refresh = time.perf_counter()
            self._report()
        return len(changed)

    @property
    def tiles_per_second(self) -> float:
        return len(self._done_times) / RATE_WINDOW_S

    def status(self) -> str:
        cache = self.predictor.cache
        parts = [
            f"{self.tiles_per_second:.1f} tiles/s",
            f"cache {cache.nbytes / 2**20:.0f}/{cache.max_bytes / 2**20:.0f} MB",
        ]
        return " · ".join(parts + ([self.message] if self.message else []))

    def _report(self) -> None:
        if self.on_status is not None:
            self.on_status(self.status())

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
