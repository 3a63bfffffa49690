"""Annotating a slide without Qt: its annotation layers and `AnnotationSession`, which the
"Annotate slide" widget, the scripted demo and the tests drive.

Two layers sit on the slide in µm: class-labelled regions (Shapes) and a cancer-region mask
(Labels). Shapes data are level-0 pixels (the layer's scale is the slide's µm/px), so they go
to QuPath-style GeoJSON unchanged. The mask is painted on a coarse grid
(``metadata["mask_downsample"]`` level-0 pixels per mask pixel). Both are kept beside the
slide in the sidecar format of `napari_rckd.io.slide_annotations`, loaded when the layers are
made and saved atomically (the widget saves a second after every edit).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from psygnal import Signal

from napari_rckd._writer import class_names, regions_from_shape_data, rgb_tuple
from napari_rckd.errors import RckdError
from napari_rckd.io.annotations import Region, read_annotations, write_annotations
from napari_rckd.io.slide_annotations import (
    annotation_paths,
    mask_downsample,
    read_region_mask,
    write_region_mask,
)

DEFAULT_CLASSES = {"tumour": "#d62728", "stroma": "#e377c2", "normal": "#2ca02c"}
REGION_CLASSES = {"normal": "#2ca02c", "tumour": "#d62728"}  # mask value k = class k-1


class AnnotationSession:
    """The annotation layers of one slide of a viewer and the class being drawn.

    `create_layers` adds (or finds) a slide's layers, `choose_class` sets what new shapes are
    (and relabels the selected ones), `add_class` names a new one, `save` writes both layers
    beside the slide. Each returns the sentence to show, or raises `RckdError` with it.
    ``edited`` fires on every edit of the layers (the widget autosaves on it).
    """

    edited = Signal()

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.shapes = self.labels = None
        self.classes: dict[str, str | None] = dict(DEFAULT_CLASSES)  # name -> colour (None: grey)
        self.current = next(iter(self.classes))

    def slide_names(self) -> list[str]:
        """The viewer's layers opened from a slide file: the ones that can be annotated."""
        return [layer.name for layer in slide_layers(self.viewer)]

    def create_layers(self, slide_name: str) -> str:
        if not slide_name:
            raise RckdError("Open a slide first (File > Open), then annotate it.")
        self.release_layers()
        self.shapes, self.labels = add_annotation_layers(
            self.viewer, self.viewer.layers[slide_name]
        )
        for name in self.shapes.metadata["class_colors"]:
            self.classes.setdefault(name, None)
        for event in (self.shapes.events.data, self.shapes.events.features,
                      self.labels.events.paint, self.labels.events.data):  # fmt: skip
            event.connect(self.edited.emit)
        self.viewer.layers.selection.active = self.shapes
        self.choose_class(self.current)
        count = len(self.shapes.data)
        return f"{count} saved region(s) loaded; draw rectangles or polygons per class."

    def choose_class(self, name: str) -> None:
        """Draw new shapes as ``name`` and relabel the selected ones."""
        if not name:
            return
        self.classes.setdefault(name, None)
        self.current = name
        if self.shapes is not None:
            set_class(self.shapes, name, DEFAULT_CLASSES.get(name))

    def add_class(self, name: str) -> None:
        """A new class, chosen at once."""
        name = name.strip()
        if not name:
            raise RckdError("Type a class name first.")
        self.choose_class(name)

    def save(self) -> str:
        if self.shapes is None:
            raise RckdError("Nothing to save yet: press 'Annotate this slide' first.")
        try:
            written = save_annotations(self.shapes, self.labels)
        except (RckdError, OSError) as error:
            raise RckdError(f"Annotations not saved: {error}") from None
        return "Saved " + ", ".join(p.name for p in written)

    def release_layers(self) -> None:
        """Stop hearing the layers' edits (another slide, or the widget closes)."""
        for layer, names in ((self.shapes, ("data", "features")), (self.labels, ("paint", "data"))):
            for name in names if layer is not None else ():
                getattr(layer.events, name).disconnect(self.edited.emit)


def shapes_to_regions(layer) -> list[Region]:
    """The areas of a class-labelled Shapes layer as regions in level-0 pixels."""
    colors = {k: rgb_tuple(v) for k, v in layer.metadata.get("class_colors", {}).items()}
    names = class_names(layer.features, len(layer.data))
    return regions_from_shape_data(
        layer.data, layer.shape_type, names, colors, f"layer {layer.name!r}"
    )


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def shapes_layer(image_layer, classes: dict[str, str] | None = None):
    """A Shapes layer on ``image_layer`` holding its slide's saved regions (if any)."""
    import pandas as pd
    from napari.layers import Shapes

    slide_path = _slide_path(image_layer)
    classes = dict(classes or DEFAULT_CLASSES)
    data, kinds, names = [], [], []
    geojson, _ = annotation_paths(slide_path)
    if geojson.exists():
        for region in read_annotations(geojson):
            if region.name and region.name not in classes and region.color:
                classes[region.name] = _hex(region.color)
            for rings in region.polygons:
                closed = len(rings[0]) > 3 and np.array_equal(rings[0][0], rings[0][-1])
                data.append(rings[0][:-1] if closed else rings[0])
                kinds.append("polygon")
                names.append(region.name or next(iter(classes)))
    for name in names:
        classes.setdefault(name, "#7f7f7f")
    first = next(iter(classes))
    colors = [classes[n] for n in names] or classes[first]
    layer = Shapes(
        data,
        shape_type=kinds or "polygon",
        features=pd.DataFrame({"class": pd.Series(names, dtype=object)}),
        feature_defaults={"class": first},
        face_color=colors,
        edge_color=colors,
        edge_width=4,
        opacity=0.5,
        name=f"{image_layer.name} regions",
        scale=tuple(image_layer.scale[-2:]),
        translate=tuple(image_layer.translate[-2:]),
        units=tuple(image_layer.units[-2:]),
        metadata={"slide_path": str(slide_path), "class_colors": classes, "rckd": "regions"},
    )
    layer.current_face_color = layer.current_edge_color = classes[first]
    return layer


def set_class(layer, name: str, color: str | None = None) -> None:
    """Draw new shapes as ``name`` and relabel the selected ones."""
    colors = layer.metadata.setdefault("class_colors", {})
    colors.setdefault(name, color or "#7f7f7f")
    layer.feature_defaults = {"class": name}
    selected = sorted(layer.selected_data)
    if selected:
        features = layer.features.copy()
        features.loc[selected, "class"] = name
        layer.features = features
    # napari also paints the selected shapes with the current colours
    layer.current_face_color = layer.current_edge_color = colors[name]
    recolor(layer)


def recolor(layer) -> None:
    """Each shape in its class's colour (after a relabel or a load)."""
    colors = layer.metadata.get("class_colors", {})
    names = class_names(layer.features, len(layer.data))
    if names:
        per_shape = [colors.get(n, "#7f7f7f") for n in names]
        layer.face_color = per_shape
        layer.edge_color = per_shape


def labels_layer(image_layer):
    """A coarse cancer-region Labels layer aligned with ``image_layer`` (loads a saved mask)."""
    from napari.layers import Labels
    from napari.utils.colormaps import DirectLabelColormap

    slide_path = _slide_path(image_layer)
    shape = tuple(int(s) for s in image_layer.level_shapes[0][:2])
    down = mask_downsample(shape)
    mask_shape = tuple(math.ceil(s / down) for s in shape)
    _, mask_path = annotation_paths(slide_path)
    mask = read_region_mask(mask_path, mask_shape) if mask_path.exists() else None
    if mask is None:
        mask = np.zeros(mask_shape, np.uint8)
    colors = {None: "transparent", 0: "transparent"}
    colors.update({k + 1: c for k, c in enumerate(REGION_CLASSES.values())})
    scale = np.asarray(image_layer.scale[-2:], float)
    return Labels(
        mask,
        name=f"{image_layer.name} cancer region",
        scale=tuple(scale * down),
        # mask pixel j covers level-0 pixels [j*d, (j+1)*d): its centre sits (d-1)/2 further on
        translate=tuple(np.asarray(image_layer.translate[-2:]) + scale * (down - 1) / 2),
        units=tuple(image_layer.units[-2:]),
        colormap=DirectLabelColormap(color_dict=colors),
        opacity=0.4,
        metadata={
            "slide_path": str(slide_path),
            "mask_downsample": down,
            "classes": list(REGION_CLASSES),
            "rckd": "cancer-region",
        },
    )


def _slide_path(image_layer) -> Path:
    path = image_layer.metadata.get("path")
    if not path:
        raise RckdError(
            f"layer {image_layer.name!r} was not opened from a slide file by napari-rckd; "
            "open the slide with File > Open (napari-rckd) to annotate it"
        )
    return Path(path)


def save_annotations(shapes=None, labels=None) -> list[Path]:
    """Save the given layers next to their slide; returns the files written."""
    written = []
    if shapes is not None:
        geojson, _ = annotation_paths(shapes.metadata["slide_path"])
        write_annotations(geojson, shapes_to_regions(shapes))
        written.append(geojson)
    if labels is not None:
        _, mask_path = annotation_paths(labels.metadata["slide_path"])
        meta = labels.metadata
        write_region_mask(mask_path, labels.data, meta["mask_downsample"], meta["classes"])
        written.append(mask_path)
    return written


def add_annotation_layers(viewer, image_layer):
    """Add (or find) the regions and cancer-region layers of a slide layer."""
    slide = str(_slide_path(image_layer))
    found = {
        layer.metadata.get("rckd"): layer
        for layer in viewer.layers
        if layer.metadata.get("slide_path") == slide and layer.metadata.get("rckd")
    }
    labels = found.get("cancer-region") or viewer.add_layer(labels_layer(image_layer))
    shapes = found.get("regions") or viewer.add_layer(shapes_layer(image_layer))
    return shapes, labels


def slide_layers(viewer) -> list:
    """Image layers opened from a slide file (the ones that can be annotated)."""
    from napari.layers import Image

    return [x for x in viewer.layers if isinstance(x, Image) and x.metadata.get("path")]
