"""Viewer shortcuts a dock widget binds, released when it closes (napari ignores npe2's
keybindings, so widgets bind their own on the viewer)."""

from __future__ import annotations

from collections.abc import Callable


class ViewerKeys:
    """Binds keys on a viewer and, on `release`, unbinds those still bound to this owner: a
    key another widget has rebound since keeps that widget's function."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.bound: dict[str, Callable] = {}

    def bind(self, key: str, function: Callable) -> None:
        self.viewer.bind_key(key, function, overwrite=True)
        self.bound[key] = function

    def release(self) -> None:
        for key, function in self.bound.items():
            current = self.viewer.bind_key(key, None)  # None unbinds, returning what was bound
            if current is not None and current is not function:
                self.viewer.bind_key(key, current)
        self.bound.clear()
