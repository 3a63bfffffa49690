"""A small live plot of training loss and the validation metric, drawn with QPainter."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget


class LossPlot(QWidget):
    """Training loss (blue) and the validation metric (orange) against step, drawn with QPainter."""

    def __init__(self) -> None:
        super().__init__()
        self.loss: list[tuple[float, float]] = []
        self.metric: list[tuple[float, float]] = []
        self.setMinimumHeight(120)

    def clear(self) -> None:
        self.loss, self.metric = [], []
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(30, 30, 30))
        for series, color in ((self.loss, "#4c9be8"), (self.metric, "#f0a030")):
            if len(series) < 2:
                continue
            steps, values = np.array(series, float).T
            x = (steps - steps.min()) / max(np.ptp(steps), 1e-9) * (self.width() - 8) + 4
            y = (1 - (values - values.min()) / max(np.ptp(values), 1e-9)) * (self.height() - 8) + 4
            painter.setPen(QPen(QColor(color), 2))
            painter.drawPolyline(*[QPointF(a, b) for a, b in zip(x, y, strict=True)])
        painter.end()
