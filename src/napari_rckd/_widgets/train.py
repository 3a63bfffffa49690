"""The "Train student" dock widget: RCKD stage 1 and stage 2 from the viewer, in a child process.

The widget only lays out controls, reads them into `TrainSettings` and shows a `TrainSession`
(train_session.py): its buttons are one call each of the session's `start`, `stop` and
`use_model`, a timer calls its `poll`, and whatever the session says is drawn by `_render`.
"""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_rckd import zoo
from napari_rckd._widgets.annotation_session import DEFAULT_CLASSES
from napari_rckd._widgets.form import scrolling_layout
from napari_rckd._widgets.keys import ViewerKeys
from napari_rckd._widgets.loss_plot import LossPlot
from napari_rckd._widgets.train_job import TrainSettings
from napari_rckd._widgets.train_nuclei import NucleiBox
from napari_rckd._widgets.train_session import TrainSession


class TrainWidget(QWidget):
    """Stage 1 (distil a teacher on unlabeled slides) and stage 2 (fine-tune on annotations)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = TrainSession()
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.session.poll)
        self.session.started.connect(self._start_polling)
        self.session.changed.connect(self._render)
        self._layer_events = (self.viewer.layers.events.inserted, self.viewer.layers.events.removed)
        for event in self._layer_events:
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self.keys = ViewerKeys(self.viewer)
        self.keys.bind("Alt-T", lambda v: self._on_start_clicked())
        self.keys.bind("Alt-X", lambda v: self.session.stop())

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        d = TrainSettings(out_dir="")  # the form starts at the recipes' defaults
        self._build_stage1(d)
        self._build_stage2(d)
        shared = self._build_shared()
        self._build_progress()
        # nuclei from my corrections: instead of the two stages
        self.nuclei_box = NucleiBox(self.viewer)
        self.nuclei_box.toggled.connect(self._on_nuclei_toggled)
        for box in (self.stage1_box, self.stage2_box):
            box.toggled.connect(lambda on: on and self.nuclei_box.setChecked(False))
        layout = scrolling_layout(self)  # taller than a laptop screen: it scrolls
        for w in (self.stage1_box, self.stage2_box, self.nuclei_box):
            layout.addWidget(w)
        layout.addLayout(shared)
        buttons = QHBoxLayout()
        for w in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(w)
        layout.addLayout(buttons)
        for w in (self.progress, self.eta, self.plot, self.status, self.comparison,
                  self.notes_label, self.checkpoint_label, self.use_button):  # fmt: skip
            layout.addWidget(w)
        layout.addStretch()

        self.add_files_button.clicked.connect(self._on_add_files_clicked)
        self.add_class_button.clicked.connect(self._on_add_class_clicked)
        self.remove_class_button.clicked.connect(self._on_remove_class_clicked)
        self.start_button.clicked.connect(self._on_start_clicked)
        self.stop_button.clicked.connect(self.session.stop)
        self.resume_button.clicked.connect(self._on_resume_clicked)
        self.use_button.clicked.connect(self.session.use_model)

    def _on_nuclei_toggled(self, on: bool) -> None:
        if on:  # one kind of training per run
            self.stage1_box.setChecked(False)
            self.stage2_box.setChecked(False)

    def _build_stage1(self, d: TrainSettings) -> None:
        self.stage1_box = QGroupBox("Stage 1: distil the teacher on unlabeled slides")
        self.stage1_box.setCheckable(True)
        self.slide_list = QListWidget()
        self.slide_list.setMaximumHeight(90)
        self.add_files_button = QPushButton("Add slides…")
        self.teacher = QComboBox(editable=True)
        self.teacher.addItems(list(zoo.names()))
        self.backbone = QComboBox(editable=True)
        self.backbone.addItems([d.backbone, "resnet18"])
        self.tile_size = QSpinBox(minimum=32, maximum=1024, singleStep=32, value=d.tile_size)
        self.mpp = QDoubleSpinBox(minimum=0.1, maximum=8.0, singleStep=0.25, value=d.mpp)
        self.budget = QSpinBox(minimum=1, maximum=10_000_000, value=d.budget)
        self.unit = QComboBox()
        self.unit.addItems(["steps", "epochs"])
        self.tiles = QSpinBox(minimum=1, maximum=10_000_000, value=d.tiles)
        self.batch_size = QSpinBox(minimum=1, maximum=4096, value=d.batch_size)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        form = QFormLayout(self.stage1_box)
        form.addRow("Slides", self.slide_list)
        form.addRow("", self.add_files_button)
        form.addRow("Teacher", self.teacher)
        form.addRow("Backbone", self.backbone)
        form.addRow("Tiles", self.tiles)

    def _build_stage2(self, d: TrainSettings) -> None:
        self.stage2_box = QGroupBox("Stage 2: fine-tune on annotations")
        self.stage2_box.setCheckable(True)
        self.stage2_box.setChecked(False)
        self.task = QComboBox()
        self.task.addItems(["classify", "segment"])
        self.shapes_box, self.labels_box = QComboBox(), QComboBox()
        self.class_list = QListWidget()
        self.class_list.setMaximumHeight(80)
        for name in DEFAULT_CLASSES:
            self._add_class_item(name)
        self.new_class = QLineEdit(placeholderText="class name")
        self.add_class_button, self.remove_class_button = QPushButton("+"), QPushButton("−")
        self.stage2_budget = QSpinBox(minimum=1, maximum=10_000_000, value=d.stage2_budget)
        self.compare_random = QCheckBox("Also train from random weights, to compare")
        self.compare_random.setToolTip(
            "Trains stage 2 twice (double the time) and shows both validation scores: "
            "what the RCKD start is worth on your annotations."
        )
        form2 = QFormLayout(self.stage2_box)
        form2.addRow("Task", self.task)
        form2.addRow("Regions", self.shapes_box)
        form2.addRow("Cancer region", self.labels_box)
        form2.addRow("Classes", self.class_list)
        row = QHBoxLayout()
        for w in (self.new_class, self.add_class_button, self.remove_class_button):
            row.addWidget(w)
        form2.addRow("", row)
        form2.addRow("Budget", self.stage2_budget)
        form2.addRow("", self.compare_random)

    def _build_shared(self) -> QFormLayout:
        shared = QFormLayout()
        shared.addRow("Tile size (px)", self.tile_size)
        shared.addRow("µm per pixel", self.mpp)
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget)
        budget_row.addWidget(self.unit)
        shared.addRow("Stage 1 budget", budget_row)
        shared.addRow("Batch size", self.batch_size)
        shared.addRow("Device", self.device)
        self.out_dir = QLineEdit(
            str(Path.home() / "napari-rckd" / "runs" / time.strftime("%Y%m%d-%H%M%S"))
        )
        shared.addRow("Run folder", self.out_dir)
        return shared

    def _build_progress(self) -> None:
        self.start_button, self.stop_button = QPushButton("Start"), QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.eta = QLabel("")
        self.plot = LossPlot()
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.comparison = QLabel("")
        self.comparison.setWordWrap(True)
        self.notes_label = QLabel("")
        self.notes_label.setWordWrap(True)
        self.notes_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.checkpoint_label = QLabel("")
        self.checkpoint_label.setWordWrap(True)
        self.checkpoint_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.use_button = QPushButton("Use for live analysis")
        self.use_button.setEnabled(False)

    def _add_class_item(self, name: str) -> None:
        item = QListWidgetItem(name)
        item.setFlags(item.flags() | Qt.ItemIsEditable)
        self.class_list.addItem(item)

    def _refresh_layers(self, event=None) -> None:
        """Open slides join the slide list (checked); annotation layers fill the pickers."""
        from napari.layers import Image, Labels, Shapes

        known = {self.slide_list.item(i).data(Qt.UserRole) for i in range(self.slide_list.count())}
        for layer in self.viewer.layers:
            path = layer.metadata.get("path") if isinstance(layer, Image) else None
            if path and path not in known:
                self._add_slide_item(path, checked=True)
        self.nuclei_box.refresh()
        for box, kind in ((self.shapes_box, Shapes), (self.labels_box, Labels)):
            current = box.currentText()
            box.clear()
            box.addItems([x.name for x in self.viewer.layers if isinstance(x, kind)])
            if current:
                box.setCurrentText(current)

    def _add_slide_item(self, path: str, checked: bool) -> None:
        item = QListWidgetItem(Path(path).name)
        item.setData(Qt.UserRole, path)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked if checked else Qt.Unchecked)
        self.slide_list.addItem(item)

    # ------------------------------------------------------------------ callbacks
    def add_slide_paths(self, paths) -> None:
        """Files or folders of unlabeled slides for stage 1 (folders are searched)."""
        for path in paths:
            self._add_slide_item(str(path), checked=True)

    def _on_add_files_clicked(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Unlabeled slides")
        self.add_slide_paths(paths)

    def _on_add_class_clicked(self) -> None:
        name = self.new_class.text().strip()
        if name and not self.class_list.findItems(name, Qt.MatchExactly):
            self._add_class_item(name)
        self.new_class.clear()

    def _on_remove_class_clicked(self) -> None:
        for item in self.class_list.selectedItems():
            self.class_list.takeItem(self.class_list.row(item))

    def settings(self) -> TrainSettings:
        slides = [
            self.slide_list.item(i).data(Qt.UserRole)
            for i in range(self.slide_list.count())
            if self.slide_list.item(i).checkState() == Qt.Checked
        ]
        return TrainSettings(
            out_dir=self.out_dir.text().strip(),
            slides=slides,
            stage1=self.stage1_box.isChecked(),
            stage2=self.stage2_box.isChecked(),
            teacher=self.teacher.currentText(),
            backbone=self.backbone.currentText(),
            tile_size=self.tile_size.value(),
            mpp=self.mpp.value(),
            budget=self.budget.value(),
            unit=self.unit.currentText(),
            tiles=self.tiles.value(),
            batch_size=self.batch_size.value(),
            device=self.device.currentText(),
            task=self.task.currentText(),
            classes=[self.class_list.item(i).text() for i in range(self.class_list.count())],
            stage2_budget=self.stage2_budget.value(),
            compare_random=self.compare_random.isChecked(),
            slide_mpps=self._slide_mpps(),
            **self.nuclei_box.settings(),
        )

    def _slide_mpps(self) -> dict[str, float]:
        """The µm/px of each open slide as the viewer shows it (set in Analyze slide when the
        file records none; stage 2 uses it only for such files)."""
        return {
            layer.metadata["path"]: float(layer.metadata["mpp"])
            for layer in self.viewer.layers
            if layer.metadata.get("slide") is not None and layer.metadata.get("mpp")
        }

    def _layer(self, box: QComboBox):
        name = box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def _on_start_clicked(self, resume: bool = False) -> None:
        layers = self._layer(self.shapes_box), self._layer(self.labels_box)
        self.session.start(self.settings(), *layers, resume=resume)

    def _on_resume_clicked(self) -> None:
        self._on_start_clicked(resume=True)

    def _start_polling(self) -> None:
        self.timer.start()

    @property
    def running(self) -> bool:
        return self.session.running

    def _render(self) -> None:
        """Show the session's state: buttons, progress, plot, status, notes, checkpoint."""
        session = self.session
        self.start_button.setEnabled(not session.running)
        self.resume_button.setEnabled(not session.running)
        self.stop_button.setEnabled(session.running)
        self.progress.setMaximum(max(session.total_steps, 1))
        self.progress.setValue(session.step)
        self.eta.setText(session.eta)
        self.plot.loss, self.plot.metric = session.loss, session.metric
        self.plot.update()
        self.status.setText(session.status)
        self.comparison.setText(session.comparison)
        self.notes_label.setText("\n".join(session.notes))
        checkpoint = session.checkpoint
        self.checkpoint_label.setText(f"Checkpoint: {checkpoint}" if checkpoint else "")
        self.use_button.setEnabled(bool(checkpoint) and not session.running)
        if not session.running:
            self.timer.stop()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """Undo what the widget bound (keys, viewer events, the timer); a run checkpoints."""
        self.session.close()
        self.timer.stop()
        self.keys.release()
        for layer_event in self._layer_events:
            layer_event.disconnect(self._refresh_layers)
        self.session.changed.disconnect(self._render)
        self.session.started.disconnect(self._start_polling)
        super().closeEvent(event)
