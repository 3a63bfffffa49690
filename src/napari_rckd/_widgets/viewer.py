"""The viewer the plugin opens (`napari-rckd view`, the demo): slide fitted, widgets docked.

``show_slide`` lays the window out the way a user starts work: filling the screen (with or
without a window manager), the plugin's widgets docked as tabs with Analyze slide in front at
a width that leaves the canvas the larger part, the slide fitted to the canvas once the window
has its final size, and a scale bar in µm.
"""

from __future__ import annotations

# The plugin's widgets by display name, docked as tabs on start, and the one shown in front.
DOCKED_WIDGETS: tuple[str, ...] = ("Analyze slide", "Annotate slide", "Train student")
FRONT_WIDGET = "Analyze slide"
# The plugin's dock takes at most this share of the screen's width; the canvas keeps the rest
# with the layer list (napari's left docks need about 340 px).
DOCK_SHARE = 0.38


def add_slide(viewer, layer_data: tuple):
    """Add the slide layer and fit the whole slide in view."""
    data, kwargs, _ = layer_data
    layer = viewer.add_image(data, **kwargs)
    viewer.reset_view()
    return layer


def dock_widgets(viewer) -> dict:
    """Dock the plugin's widgets as tabs of one dock, FRONT_WIDGET in front; return them by name."""
    window = viewer.window
    docks = {
        name: window.add_plugin_dock_widget("napari-rckd", name, tabify=True)
        for name in DOCKED_WIDGETS
    }
    docks[FRONT_WIDGET][0].raise_()
    return {name: widget for name, (_, widget) in docks.items()}


def scale_bar(viewer):
    """The viewer's scale bar model (napari 0.9 moved it under ``canvas.overlays``)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    return overlays.scale_bar if overlays is not None else viewer.scale_bar


def show_scale_bar(viewer) -> None:
    """Show the scale bar; it reads its unit (µm) from the slide layer's ``units``."""
    scale_bar(viewer).visible = True


def fill_screen(window) -> None:
    """Give the window the screen's free area, and maximise it.

    A window manager maximises on ``showMaximized``; without one (Xvfb, some remote desktops)
    the window keeps its old size, so the geometry is set first.
    """
    window.setGeometry(window.screen().availableGeometry())
    window.showMaximized()


def size_plugin_dock(viewer) -> None:
    """Give the plugin's dock its natural width, but at most DOCK_SHARE of the screen: the
    canvas keeps the larger part (the forms scroll sideways when narrower than they like)."""
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    dock = plugin_dock(viewer, FRONT_WIDGET)
    limit = int(DOCK_SHARE * window.screen().availableGeometry().width())
    window.resizeDocks([dock], [min(dock.sizeHint().width(), limit)], Qt.Horizontal)


def plugin_dock(viewer, name: str):
    """The dock (QDockWidget) of the plugin's widget ``name``."""
    from qtpy.QtWidgets import QDockWidget

    docks = viewer.window._qt_window.findChildren(QDockWidget)
    return next(dock for dock in docks if dock.windowTitle().startswith(name))


def show_slide(viewer, layer_data: tuple, maximise: bool = True):
    """The opening layout: the slide layer, the widgets, a window filling the screen, the
    plugin's dock at a sensible width with FRONT_WIDGET in front, a fitted view."""
    from qtpy.QtWidgets import QApplication

    layer = add_slide(viewer, layer_data)
    widgets = dock_widgets(viewer)
    show_scale_bar(viewer)
    if maximise:
        fill_screen(viewer.window._qt_window)
    QApplication.processEvents()  # the window is shown: docks take their sizes, tabs reorder
    size_plugin_dock(viewer)
    plugin_dock(viewer, FRONT_WIDGET).raise_()  # showing the window put the last tab in front
    QApplication.processEvents()
    viewer.reset_view()  # fit to the canvas as it is now, not as it was before the docks
    return layer, widgets
