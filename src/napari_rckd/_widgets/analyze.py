"""The "Analyze slide" dock widget: pick a slide layer, models and a device, then analyse what is
on screen (live) or the whole slide, and export the results.

The widget only lays out and wires controls; the engine's ``Analysis`` (the same object
`napari-rckd predict` uses) loads the models, predicts and exports, and ``LiveAnalysis`` follows
the camera. Long work (whole-slide runs, exports) runs in napari thread workers
(``analyze_jobs.SlideJobs``). Every callback reports bad input in the status line and as a
napari notification instead of raising into Qt.
"""

import functools
import threading
from pathlib import Path

import napari
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_rckd._widgets.analyze_jobs import SlideJobs
from napari_rckd._widgets.choices import (
    KINDS,
    NUCLEI_MODELS,
    RecentModels,
    detect_devices,
)
from napari_rckd._widgets.correct import CorrectPanel
from napari_rckd._widgets.form import folder_row, reporting, scrolling_layout
from napari_rckd._widgets.live import LiveAnalysis
from napari_rckd._widgets.mpp_field import MppField
from napari_rckd._widgets.train_job import TRAINED
from napari_rckd.errors import RckdError

CHOOSE = "<choose>"  # combo data of the "Choose checkpoint…" entry
NONE = "<none>"  # combo data of "none": the kind is not computed
EXPORTS = ("geojson", "csv", "ome-tiff")


class AnalyzeWidget(SlideJobs, QWidget):
    """Dock widget: live and whole-slide analysis of a slide layer, with exports."""

    def __init__(self, viewer: napari.viewer.Viewer, recent: RecentModels | None = None):
        super().__init__()
        from napari_rckd.inference.cache import ResultCache

        self.viewer = viewer
        self.recent = recent or RecentModels()
        self.cache = ResultCache()  # shared by every analysis this widget makes
        self.live: LiveAnalysis | None = None
        self.analysis = None  # the engine's Analysis of the chosen slide, models and device
        self.worker = None
        self._stop = threading.Event()
        self._build()
        viewer.layers.events.inserted.connect(self._refresh_image_choices)
        viewer.layers.events.removed.connect(self._refresh_image_choices)
        self._refresh_image_choices()
        # A model the Train student widget just finished goes to work here at once.
        TRAINED.model_ready.connect(self._on_model_trained)

    # -- layout -------------------------------------------------------------------------------

    def _build(self) -> None:
        self.image = QComboBox()
        self.image.currentIndexChanged.connect(self._on_image_changed)
        self.models = {kind: QComboBox() for kind in KINDS}
        for kind, box in self.models.items():
            self._fill_models(kind)
            box.activated.connect(functools.partial(self._on_model_changed, kind))
        self.toggles = {kind: QCheckBox("show") for kind in KINDS}
        for kind, box in self.toggles.items():
            box.setChecked(True)
            box.toggled.connect(functools.partial(self._on_layer_toggled, kind))
        self.device = QComboBox()
        for choice in detect_devices():
            self.device.addItem(choice.label, choice.spec)
        self.device.activated.connect(self._on_device_changed)
        self.batch = QSpinBox(minimum=1, maximum=64, value=4)
        # µm per pixel of the slide: shown for every slide, needed for those that do not say
        self.mpp = MppField(self._on_mpp_set)
        self.live_box = QCheckBox("live: analyse what is on screen")
        self.live_box.toggled.connect(self._on_live_toggled)
        # a slow nuclei model (builtin on a CPU) is shown first by the fast csat, faint
        self.preview_box = QCheckBox("quick preview until the nuclei arrive")
        self.preview_box.setChecked(True)
        self.preview_box.setToolTip(
            "Live only, and only for a nuclei model that works at a finer scale than csat "
            "(builtin, learned): csat's nuclei show faintly until the chosen model's replace them."
        )
        self.preview_box.toggled.connect(self._on_preview_toggled)

        form = QFormLayout()
        form.addRow("slide layer", self.image)
        form.addRow("µm / pixel", self.mpp)
        for kind in KINDS:
            row = QHBoxLayout()
            row.addWidget(self.models[kind], 1)
            row.addWidget(self.toggles[kind])
            form.addRow(kind, row)
        form.addRow("device", self.device)
        form.addRow("batch size", self.batch)

        self.out = QLineEdit()
        self.out.setPlaceholderText("results folder (.zarr)")
        self.run_button = QPushButton("Analyze whole slide")
        self.run_button.clicked.connect(self._on_run_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.progress = QProgressBar()
        whole = QGroupBox("whole slide")
        whole_layout = QVBoxLayout(whole)
        whole_layout.addLayout(folder_row(self, self.out, "Results folder"))
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        whole_layout.addLayout(buttons)
        whole_layout.addWidget(self.progress)

        self.export_dir = QLineEdit()
        self.export_dir.setPlaceholderText("export folder")
        export = QGroupBox("export")
        export_layout = QVBoxLayout(export)
        export_layout.addLayout(folder_row(self, self.export_dir, "Export folder"))
        export_buttons = QHBoxLayout()
        for kind in EXPORTS:
            button = QPushButton(kind.replace("geojson", "GeoJSON").replace("ome-tiff", "OME-TIFF"))
            button.clicked.connect(functools.partial(self._on_export_clicked, kind))
            export_buttons.addWidget(button)
        export_layout.addLayout(export_buttons)

        self.status = QLabel("pick a slide layer and turn live on")
        self.status.setWordWrap(True)
        layout = scrolling_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.live_box)
        layout.addWidget(self.preview_box)
        self.correct = CorrectPanel(self)  # correct the live nuclei, saved beside the slide
        layout.addWidget(self.correct)
        layout.addWidget(whole)
        layout.addWidget(export)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _fill_models(self, kind: str, select: str | None = None) -> None:
        box = self.models[kind]
        box.blockSignals(True)
        box.clear()
        if kind == "nuclei":
            for label, spec in NUCLEI_MODELS:
                box.addItem(label, spec)
        box.addItem("none", NONE)
        for path in self.recent.get(kind):
            box.addItem(Path(path).name, path)
            box.setItemData(box.count() - 1, path, 3)  # tooltip: the full path
        box.addItem("Choose checkpoint…", CHOOSE)
        index = box.findData(select) if select is not None else 0
        box.setCurrentIndex(max(index, 0))
        box.blockSignals(False)

    def _refresh_image_choices(self, event=None) -> None:
        current = self.image.currentText()
        names = [layer.name for layer in self.viewer.layers if "slide" in layer.metadata]
        self.image.blockSignals(True)
        self.image.clear()
        self.image.addItems(names)
        if current in names:
            self.image.setCurrentText(current)
        self.image.blockSignals(False)
        if not names:  # the last slide closed: nothing to follow any more
            self._stop_live()
            self.status.setText("open a slide with napari-rckd to analyse it")
        elif self.image.currentText() != current:
            self._on_image_changed()

    # -- state helpers ------------------------------------------------------------------------

    def image_layer(self):
        name = self.image.currentText()
        if not name or name not in self.viewer.layers:
            raise RckdError(
                "no slide layer to analyse: open a slide with napari-rckd (File > Open) first."
            )
        return self.viewer.layers[name]

    def chosen_models(self) -> dict[str, str | None]:
        chosen = {kind: self.models[kind].currentData() for kind in KINDS}
        return {kind: None if data == NONE else data for kind, data in chosen.items()}

    def show_error(self, message: str) -> None:
        self.status.setText(message)
        show_error(message)

    def _analysis(self):
        """The engine's Analysis for the chosen slide, models and device (made once)."""
        if self.analysis is None:
            from napari_rckd.inference.analysis import Analysis

            _, slide = self._slide()
            self.analysis = Analysis(
                slide,
                self.chosen_models(),
                self.device.currentData(),
                batch_size=self.batch.value(),
                cache=self.cache,
            )
        self.analysis.batch_size = self.batch.value()
        return self.analysis

    def _slide(self):
        layer = self.image_layer()
        slide = layer.metadata.get("slide")
        if slide is None:
            raise RckdError(
                f"layer {layer.name!r} was not opened by napari-rckd; open the slide file with it."
            )
        if slide.mpp is None:
            raise RckdError(
                f"{slide.path.name} does not record its pixel size; choose its µm / pixel above "
                "(0.5 for 20x, 0.25 for 40x) and press Set."
            )
        return layer, slide

    def _start_live(self) -> None:
        layer, _ = self._slide()
        analysis = self._analysis()
        predictor = analysis.live(preview=self.preview_box.isChecked())
        self.live = LiveAnalysis(self.viewer, layer, predictor, on_status=self._show_status)
        notes = analysis.live_notes()
        self.status.setToolTip(notes)
        if notes:
            self._show_status(notes)
        for kind, box in self.toggles.items():
            if kind in predictor.sources and not box.isChecked():
                self.live.set_active(kind, False)

    def _stop_live(self) -> None:
        if self.live is not None:
            self.live.close(remove_layers=True, wait=False)
            self.live = None

    def _restart(self) -> None:
        """Models, device or slide changed: new sources, new layers, same live setting."""
        self.analysis = None
        self._relive()

    def _relive(self) -> None:
        """New live layers over the same models, live as it was (the preview toggled)."""
        self._stop_live()
        if self.live_box.isChecked():
            self._on_live_toggled(True)

    def _show_status(self, text: str) -> None:
        device = self.device.currentText().split(" (")[0]
        self.status.setText(f"{device} · {text}")

    # -- callbacks ----------------------------------------------------------------------------

    @reporting
    def _on_image_changed(self, index=None) -> None:
        name = self.image.currentText()
        if name:
            slide = self.viewer.layers[name].metadata.get("slide")
            self.mpp.show_slide(slide)
            if slide is not None and slide.mpp is None:
                self.status.setText(
                    f"{name} does not record its pixel size: pick or type its µm / pixel and "
                    "press Set"
                )
        self._restart()

    @reporting
    def _on_mpp_set(self, mpp: float) -> None:
        """Give the slide this µm / pixel and re-scale its layer in place (to µm)."""
        layer = self.image_layer()
        slide = layer.metadata.get("slide")
        if slide is None:
            raise RckdError(f"layer {layer.name!r} was not opened by napari-rckd; open it with it.")
        slide.mpp = mpp
        layer.metadata["mpp"] = mpp
        layer.units = ("um", "um")
        layer.scale = (mpp, mpp)
        self.viewer.reset_view()
        self.mpp.button.setText("Change")
        self._restart()
        self.status.setText(f"{layer.name}: {mpp:g} µm per pixel")

    @reporting
    def _on_model_changed(self, kind: str, index=None) -> None:
        if self.models[kind].currentData() == CHOOSE:
            path, _ = QFileDialog.getOpenFileName(
                self, f"{kind} checkpoint", "", "Checkpoints (*.safetensors)"
            )
            if not path:
                self._fill_models(kind)
                return
            self.set_model(kind, path)
            return
        self._restart()

    def _on_model_trained(self, path: str, kind: str) -> None:
        try:
            self.objectName()  # raises once Qt has deleted this widget with its viewer
        except RuntimeError:
            TRAINED.model_ready.disconnect(self._on_model_trained)
            return
        self.set_model(kind, path)

    @reporting
    def set_model(self, kind: str, path: str | None) -> None:
        """Choose a checkpoint (remembered as recent), a packaged nuclei model or ``None``."""
        path = NONE if path is None else str(path)
        if path != NONE and path not in dict(NUCLEI_MODELS).values():
            self.recent.add(kind, path)
            path = self.recent.get(kind)[0] if self.recent.get(kind) else path
        self._fill_models(kind, select=path)
        if self.models[kind].currentData() != path:
            self.models[kind].insertItem(1, Path(path).name, path)
            self.models[kind].setCurrentIndex(1)
        self._restart()

    @reporting
    def _on_device_changed(self, index=None) -> None:
        self._restart()

    @reporting
    def _on_preview_toggled(self, on: bool) -> None:
        self._relive()

    @reporting
    def _on_layer_toggled(self, kind: str, shown: bool) -> None:
        if self.live is not None and kind in self.live.predictor.sources:
            self.live.set_active(kind, shown)

    @reporting
    def _on_live_toggled(self, on: bool) -> None:
        try:
            if on and self.live is None:
                self._start_live()
            if self.live is not None:
                self.live.set_enabled(on)
        except Exception:
            self.live_box.blockSignals(True)
            self.live_box.setChecked(False)
            self.live_box.blockSignals(False)
            raise

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self._stop.set()
        self._stop_live()
        self.mpp.stop_estimate()
        super().closeEvent(event)
