"""The viewer the plugin opens (`napari-rckd view`, the demo): slide fitted, widgets docked.

``show_slide`` lays the window out the way a user starts work: maximised, the plugin's widgets
docked as tabs with Analyze slide in front, the slide fitted to the canvas once the window has
its final size, and a scale bar in µm.
"""

from __future__ import annotations

# The plugin's widgets by display name, docked as tabs on start, and the one shown in front.
DOCKED_WIDGETS: tuple[str, ...] = ("Analyze slide", "Annotate slide", "Train student")
FRONT_WIDGET = "Analyze slide"


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


def show_slide(viewer, layer_data: tuple, maximise: bool = True):
    """The opening layout: the slide layer, the widgets, a maximised window, a fitted view."""
    from qtpy.QtWidgets import QApplication

    layer = add_slide(viewer, layer_data)
    widgets = dock_widgets(viewer)
    show_scale_bar(viewer)
    if maximise:
        viewer.window._qt_window.showMaximized()
    QApplication.processEvents()  # let the window and the docks take their final sizes
    viewer.reset_view()  # fit to the canvas as it is now, not as it was before the docks
    return layer, widgets
