"""How long napari's UI thread went without running its event loop, from a 10 ms Qt timer.

A timer that should fire every 10 ms fires late whenever the UI thread is busy (slicing a
layer, uploading a texture, running our callbacks): the gaps between its firings are what a
user feels as stutter. ``p99`` and ``max`` of the gaps over a stretch of interaction are the
figures `bench viewport` prints per row.
"""

from __future__ import annotations

import time

import numpy as np

INTERVAL_MS = 10


class EventGaps:
    """Records the gaps between firings of a ``INTERVAL_MS`` QTimer while ``recording``."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self._times: list[float] = []
        self.recording = False
        self._timer = QTimer()
        self._timer.setTimerType(Qt.PreciseTimer)
        self._timer.setInterval(INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _tick(self) -> None:
        if self.recording:
            self._times.append(time.perf_counter())

    def start(self) -> None:
        self._times, self.recording = [time.perf_counter()], True

    def stop(self) -> dict[str, float]:
        """p50, p99 and max gap (ms) since ``start()``, and how many exceeded 100 ms."""
        self.recording = False
        self._times.append(time.perf_counter())
        gaps = np.diff(self._times) * 1000
        return {
            "event_gap_p50_ms": float(np.median(gaps)),
            "event_gap_p99_ms": float(np.percentile(gaps, 99)),
            "event_gap_max_ms": float(gaps.max()),
            "gaps_over_100ms": int((gaps > 100).sum()),
        }

    def close(self) -> None:
        self._timer.stop()
