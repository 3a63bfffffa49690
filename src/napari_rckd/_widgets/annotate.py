"""The "Annotate slide" dock widget: it lays out controls and wires each to one call of an
`AnnotationSession` (annotation_session.py), which holds the layers and does the work."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from napari_rckd._widgets.annotation_session import AnnotationSession
from napari_rckd._widgets.keys import ViewerKeys
from napari_rckd.errors import RckdError

AUTOSAVE_MS = 1000
KEYS = {
    "Alt-A": "annotate the selected slide",
    "Alt-S": "save annotations",
    **{f"Alt-{i}": f"draw class {i}" for i in range(1, 10)},
}


class AnnotateWidget(QWidget):
    """Make annotation layers for a slide, pick the class being drawn, save (and autosave)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = AnnotationSession(napari_viewer)
        self.slide_box = QComboBox()
        self.create_button = QPushButton("Annotate this slide")
        self.class_box = QComboBox()
        self.class_box.addItems(list(self.session.classes))
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
        self.class_box.currentTextChanged.connect(self.session.choose_class)
        self.add_class_button.clicked.connect(self._on_add_class_clicked)
        self.save_button.clicked.connect(self._on_save_clicked)
        self._autosave = qdebounced(self._on_save_clicked, timeout=AUTOSAVE_MS)
        self.session.edited.connect(self._autosave)
        self._layer_events = (self.viewer.layers.events.inserted, self.viewer.layers.events.removed)
        for event in self._layer_events:
            event.connect(self._refresh_slides)
        self._refresh_slides()
        self.keys = ViewerKeys(self.viewer)
        self.keys.bind("Alt-A", lambda v: self._on_create_clicked())
        self.keys.bind("Alt-S", lambda v: self._on_save_clicked())
        for i in range(1, 10):
            self.keys.bind(f"Alt-{i}", self._pick(i - 1))

    @property
    def shapes(self):
        return self.session.shapes

    @property
    def labels(self):
        return self.session.labels

    def _pick(self, index: int):
        def choose(viewer):
            if index < self.class_box.count():
                self.class_box.setCurrentIndex(index)

        return choose

    def _refresh_slides(self, event=None) -> None:
        current = self.slide_box.currentText()
        self.slide_box.clear()
        self.slide_box.addItems(self.session.slide_names())
        if current:
            self.slide_box.setCurrentText(current)

    def _refresh_classes(self) -> None:
        known = {self.class_box.itemText(i) for i in range(self.class_box.count())}
        self.class_box.addItems([name for name in self.session.classes if name not in known])
        self.class_box.setCurrentText(self.session.current)

    def _report(self, text: str) -> None:
        self.status.setText(text)

    def _run(self, call) -> None:
        """One session call: its sentence (or its error's) in the status line."""
        try:
            self._report(call() or "")
        except RckdError as error:
            self._report(str(error))
        self._refresh_classes()

    def _on_create_clicked(self) -> None:
        self._run(lambda: self.session.create_layers(self.slide_box.currentText()))

    def _on_add_class_clicked(self) -> None:
        self._run(lambda: self.session.add_class(self.new_class.text()))
        self.new_class.clear()

    def _on_save_clicked(self) -> None:
        self._run(self.session.save)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """Undo what the widget bound: keys, viewer events, the layers' edit events."""
        self.keys.release()
        for layer_event in self._layer_events:
            layer_event.disconnect(self._refresh_slides)
        self.session.edited.disconnect(self._autosave)
        self.session.release_layers()
        super().closeEvent(event)
