"""Annotation layers for a slide: class-labelled regions (Shapes) and a cancer-region mask (Labels).

Both layers sit on the slide in µm. Shapes data are level-0 pixels (the layer's scale is the
slide's µm/px), so they go to QuPath-style GeoJSON unchanged. The mask is painted on a coarse
grid (at most `MASK_MAX_SIDE` pixels a side, ``metadata["mask_downsample"]`` level-0 pixels per
mask pixel): a slide-sized array would not fit in memory. Annotations live next to the slide
(``<slide>.annotations.geojson`` and ``<slide>.cancer-region.tif``), are loaded when the layers
are made and saved atomically a second after every edit, so nothing is lost between sessions.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from napari_rckd._writer import class_names, regions_from_shape_data, rgb_tuple
from napari_rckd.errors import RckdError
from napari_rckd.io.annotations import Region, read_annotations, write_annotations

log = logging.getLogger(__name__)

DEFAULT_CLASSES = {"tumour": "#d62728", "stroma": "#e377c2", "normal": "#2ca02c"}
REGION_CLASSES = {"normal": "#2ca02c", "tumour": "#d62728"}  # mask value k = class k-1
MASK_MAX_SIDE = 4096
SHAPES_SUFFIX = ".annotations.geojson"
MASK_SUFFIX = ".cancer-region.tif"


def annotation_paths(slide_path: str | Path) -> tuple[Path, Path]:
    """Where a slide's regions (GeoJSON) and cancer-region mask (TIFF) are kept."""
    path = Path(slide_path)
    return path.with_name(path.name + SHAPES_SUFFIX), path.with_name(path.name + MASK_SUFFIX)


def mask_downsample(shape: tuple[int, int], max_side: int = MASK_MAX_SIDE) -> int:
    """Level-0 pixels per mask pixel so the mask's longer side is at most ``max_side``."""
    return max(1, math.ceil(max(shape) / max_side))


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
    mask = _read_saved_mask(mask_path, mask_shape) if mask_path.exists() else None
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


def _read_saved_mask(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    import tifffile

    try:
        mask = tifffile.imread(path)
    except Exception as error:
        raise RckdError(f"cannot read the saved mask {path} ({error}); move it away") from None
    if mask.shape != shape:
        log.warning(
            "ignoring %s: its shape %s is not this slide's mask %s", path, mask.shape, shape
        )
        return None
    return mask.astype(np.uint8)


def _slide_path(image_layer) -> Path:
    path = image_layer.metadata.get("path")
    if not path:
        raise RckdError(
            f"layer {image_layer.name!r} was not opened from a slide file by napari-rckd; "
            "open the slide with File > Open (napari-rckd) to annotate it"
        )
    return Path(path)


def write_mask(path: str | Path, mask: np.ndarray, downsample: int, classes) -> None:
    """Write a label mask as a TIFF, atomically, recording its downsample and classes."""
    import tifffile

    from napari_rckd.atomic import atomic_path

    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            np.asarray(mask, np.uint8),
            compression="zlib",
            metadata={"downsample": int(downsample), "classes": list(classes)},
            photometric="minisblack",
        )


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
        write_mask(mask_path, labels.data, meta["mask_downsample"], meta["classes"])
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


# ----------------------------------------------------------------------------- the dock widget

from qtpy.QtWidgets import (  # noqa: E402  (Qt below the Qt-free helpers above)
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced  # noqa: E402

AUTOSAVE_MS = 1000


class AnnotateWidget(QWidget):
    """Make annotation layers for a slide, pick the class being drawn, save (and autosave)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.shapes = self.labels = None
        self.slide_box = QComboBox()
        self.create_button = QPushButton("Annotate this slide")
        self.class_box = QComboBox()
        self.class_box.addItems(list(DEFAULT_CLASSES))
        self.new_class = QLineEdit(placeholderText="new class name")
        self.add_class_button = QPushButton("Add")
        self.save_button = QPushButton("Save annotations")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Slide", self.slide_box)
        form.addRow("", self.create_button)
        form.addRow("Class", self.class_box)
        row = QHBoxLayout()
        row.addWidget(self.new_class)
        row.addWidget(self.add_class_button)
        form.addRow("", row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.save_button)
        layout.addWidget(self.status)
        layout.addStretch()

        self.create_button.clicked.connect(self._on_create_clicked)
        self.class_box.currentTextChanged.connect(self._on_class_chosen)
        self.add_class_button.clicked.connect(self._on_add_class_clicked)
        self.save_button.clicked.connect(self._on_save_clicked)
        self._autosave = qdebounced(self._on_save_clicked, timeout=AUTOSAVE_MS)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_slides)
        self._refresh_slides()
        bind_keys(self.viewer, self)

    def _refresh_slides(self, event=None) -> None:
        current = self.slide_box.currentText()
        self.slide_box.clear()
        self.slide_box.addItems([layer.name for layer in slide_layers(self.viewer)])
        if current:
            self.slide_box.setCurrentText(current)

    def _report(self, text: str) -> None:
        self.status.setText(text)

    def _on_create_clicked(self) -> None:
        name = self.slide_box.currentText()
        if not name:
            self._report("Open a slide first (File > Open), then annotate it.")
            return
        try:
            self.shapes, self.labels = add_annotation_layers(self.viewer, self.viewer.layers[name])
        except RckdError as error:
            self._report(str(error))
            return
        known = [self.class_box.itemText(i) for i in range(self.class_box.count())]
        for cls in self.shapes.metadata["class_colors"]:
            if cls not in known:
                self.class_box.addItem(cls)
        self.shapes.events.data.connect(self._autosave)
        self.shapes.events.features.connect(self._autosave)
        self.labels.events.paint.connect(self._autosave)
        self.labels.events.data.connect(self._autosave)
        self.viewer.layers.selection.active = self.shapes
        self._on_class_chosen(self.class_box.currentText())
        count = len(self.shapes.data)
        self._report(f"{count} saved region(s) loaded; draw rectangles or polygons per class.")

    def _on_class_chosen(self, name: str) -> None:
        if self.shapes is not None and name:
            set_class(self.shapes, name, DEFAULT_CLASSES.get(name))

    def _on_add_class_clicked(self) -> None:
        name = self.new_class.text().strip()
        if not name:
            self._report("Type a class name first.")
            return
        if self.class_box.findText(name) < 0:
            self.class_box.addItem(name)
        self.class_box.setCurrentText(name)
        self.new_class.clear()

    def _on_save_clicked(self) -> None:
        if self.shapes is None:
            self._report("Nothing to save yet: press 'Annotate this slide' first.")
            return
        try:
            written = save_annotations(self.shapes, self.labels)
        except (RckdError, OSError) as error:
            self._report(f"Annotations not saved: {error}")
            return
        self._report("Saved " + ", ".join(p.name for p in written))


KEYS = {
    "Alt-A": "annotate the selected slide",
    "Alt-S": "save annotations",
    **{f"Alt-{i}": f"draw class {i}" for i in range(1, 10)},
}


def bind_keys(viewer, widget: AnnotateWidget) -> None:
    """Viewer shortcuts (napari ignores npe2 keybindings): Alt-A, Alt-S, Alt-1..9."""

    def pick(index: int):
        def choose(viewer):
            if index < widget.class_box.count():
                widget.class_box.setCurrentIndex(index)

        return choose

    viewer.bind_key("Alt-A", lambda v: widget._on_create_clicked(), overwrite=True)
    viewer.bind_key("Alt-S", lambda v: widget._on_save_clicked(), overwrite=True)
    for i in range(1, 10):
        viewer.bind_key(f"Alt-{i}", pick(i - 1), overwrite=True)
