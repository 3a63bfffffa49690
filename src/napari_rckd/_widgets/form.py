"""Small pieces every dock widget's form needs: callbacks that report instead of crashing,
a folder field with a browse button, asking before files are replaced, a form that scrolls."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)


def reporting(callback):
    """Run a callback; bad input shows as one sentence in the widget (its ``show_error``),
    never as a crash."""

    @functools.wraps(callback)
    def wrapper(self, *args, **kwargs):
        try:
            return callback(self, *args, **kwargs)
        except RckdError as error:
            self.show_error(str(error))
        except Exception as error:  # napari must survive a plugin bug; the log has the trace
            log.exception("%s: %s failed", type(self).__name__, callback.__name__)
            self.show_error(f"{callback.__name__} failed unexpectedly: {error}")
        return None

    return wrapper


def folder_row(parent, edit: QLineEdit, title: str) -> QHBoxLayout:
    """``edit`` with a "…" button that picks a folder into it."""
    browse = QPushButton("…")
    browse.setMaximumWidth(30)

    def choose():
        folder = QFileDialog.getExistingDirectory(parent, title, edit.text())
        if folder:
            edit.setText(folder)

    browse.clicked.connect(choose)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return row


def confirm_replace(parent, folder: Path, names: list[str]) -> bool:
    """Ask before writing replaces files the user already has."""
    answer = QMessageBox.question(
        parent,
        "Replace exports?",
        f"{folder} already holds {', '.join(names)}. Replace them?",
        QMessageBox.Yes | QMessageBox.No,
        QMessageBox.No,
    )
    return answer == QMessageBox.Yes


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """The layout of ``widget``'s form, inside a scroll area that fills the widget.

    A dock's minimum size is its form's, and without a window manager nothing shrinks a
    window below it: a form that scrolls lets the window fit a small screen.
    """
    content = QWidget()
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.NoFrame)
    scroll.setWidget(content)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(content)
