"""The "Train student" dock widget: RCKD stage 1 and stage 2 from the viewer, in a child process.

The widget only lays out controls and wires them: `train_job.prepare_job` turns its settings
and the annotation layers into a `TrainingJob`, `TrainingProcess` runs it, and
`train_job.TRAINED` announces the finished model.
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
from napari_rckd._widgets.annotate import DEFAULT_CLASSES
from napari_rckd._widgets.form import scrolling_layout
from napari_rckd._widgets.loss_plot import LossPlot
from napari_rckd._widgets.train_job import (
    TRAINED,
    TrainSettings,
    comparison_text,
    format_eta,
    prepare_job,
    scores_text,
)
from napari_rckd._widgets.train_nuclei import NucleiBox
from napari_rckd.errors import RckdError
from napari_rckd.training.subprocess_runner import TrainingProcess

PRIMARY_METRICS = ("dice", "balanced_accuracy", "miou", "mIoU")


class TrainWidget(QWidget):
    """Stage 1 (distil a teacher on unlabeled slides) and stage 2 (fine-tune on annotations)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.process: TrainingProcess | None = None
        self.checkpoint: str | None = None
        self.kind = "nuclei"
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(200)
        self.timer.timeout.connect(self._poll)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self.viewer.bind_key("Alt-T", lambda v: self._on_start_clicked(), overwrite=True)
        self.viewer.bind_key("Alt-X", lambda v: self._on_stop_clicked(), overwrite=True)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        d = TrainSettings(out_dir="")  # the form starts at the recipes' defaults
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

        self.start_button, self.stop_button = QPushButton("Start"), QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.stop_button.setEnabled(False)
        buttons = QHBoxLayout()
        for w in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(w)
        self.progress = QProgressBar()
        self.eta = QLabel("")
        self.plot = LossPlot()
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.comparison = QLabel("")
        self.comparison.setWordWrap(True)
        self.notes: list[str] = []  # what the run said: start weights, split, pixel size, model
        self.notes_label = QLabel("")
        self.notes_label.setWordWrap(True)
        self.notes_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.checkpoint_label = QLabel("")
        self.checkpoint_label.setWordWrap(True)
        self.checkpoint_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.use_button = QPushButton("Use for live analysis")
        self.use_button.setEnabled(False)

        # nuclei from my corrections: instead of the two stages
        self.nuclei_box = NucleiBox(self.viewer)
        self.nuclei_box.toggled.connect(self._on_nuclei_toggled)
        for box in (self.stage1_box, self.stage2_box):
            box.toggled.connect(lambda on: on and self.nuclei_box.setChecked(False))
        layout = scrolling_layout(self)  # taller than a laptop screen: it scrolls
        for w in (self.stage1_box, self.stage2_box, self.nuclei_box):
            layout.addWidget(w)
        layout.addLayout(shared)
        layout.addLayout(buttons)
        for w in (self.progress, self.eta, self.plot, self.status, self.comparison,
                  self.notes_label, self.checkpoint_label, self.use_button):  # fmt: skip
            layout.addWidget(w)
        layout.addStretch()

        self.add_files_button.clicked.connect(self._on_add_files_clicked)
        self.add_class_button.clicked.connect(self._on_add_class_clicked)
        self.remove_class_button.clicked.connect(self._on_remove_class_clicked)
        self.start_button.clicked.connect(self._on_start_clicked)
        self.stop_button.clicked.connect(self._on_stop_clicked)
        self.resume_button.clicked.connect(self._on_resume_clicked)
        self.use_button.clicked.connect(self._on_use_clicked)

    def _on_nuclei_toggled(self, on: bool) -> None:
        if on:  # one kind of training per run
            self.stage1_box.setChecked(False)
            self.stage2_box.setChecked(False)

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
            **self.nuclei_box.settings(),
        )

    def _layer(self, box: QComboBox):
        name = box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def _on_start_clicked(self, resume: bool = False) -> None:
        if self.running:
            self._report("Training is already running; press Stop first.")
            return
        settings = self.settings()
        out = Path(settings.out_dir)
        if not resume and any(out.glob("*/last.state.pt")):
            self._report(f"{out} already holds a run: press Resume to continue it, or choose "
                         "another run folder.")  # fmt: skip
            return
        try:
            job = prepare_job(settings, self._layer(self.shapes_box), self._layer(self.labels_box))
        except (RckdError, OSError) as error:
            self._report(str(error))
            return
        job.resume = resume
        self.plot.clear()
        self.comparison.setText("")
        self.notes.clear()
        self.notes_label.setText("")
        self.progress.setValue(0)
        self.use_button.setEnabled(False)
        self.process = TrainingProcess(job)
        self.process.start()
        self._set_running(True)
        self._report("Starting the training process…")
        self.timer.start()

    def _on_resume_clicked(self) -> None:
        self._on_start_clicked(resume=True)

    def _on_stop_clicked(self) -> None:
        if self.running:
            self.process.stop()
            self._report("Stopping after this step…")

    def _on_use_clicked(self) -> None:
        if self.checkpoint:
            TRAINED.model_ready.emit(self.checkpoint, self.kind)
            self._report(f"Sent {Path(self.checkpoint).name} to live analysis ({self.kind}).")

    @property
    def running(self) -> bool:
        return self.process is not None and self.timer.isActive()

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _report(self, text: str) -> None:
        self.status.setText(text)

    def _poll(self) -> None:
        for event in self.process.poll():
            self._handle(event)

    def _handle(self, event: dict) -> None:
        kind = event["event"]
        stage = event.get("stage", "").replace("stage", "stage ")
        if kind == "status":
            self._report(event["message"])
        elif kind == "fit_start":
            if event["start_step"] == 0:
                self.plot.clear()
            self.progress.setMaximum(event["total_steps"])
            self.progress.setValue(event["start_step"])
            self._report(f"{stage}: training")
        elif kind == "step":
            self.progress.setValue(event["step"])
            self.eta.setText(f"{stage} · step {event['step']}/{event['total_steps']} · loss "
                             f"{event['loss']:.4f} · ETA {format_eta(event['eta_s'])}")  # fmt: skip
            self.plot.loss.append((event["step"], event["loss"]))
            self.plot.update()
        elif kind == "validation":
            metric = next((k for k in PRIMARY_METRICS if k in event["metrics"]), None)
            if metric is not None:
                self.plot.metric.append((event["step"], event["metrics"][metric]))
                self.plot.update()
        elif kind == "note":
            self.notes.append(f"{stage}: {event['message']}")
            self.notes_label.setText("\n".join(self.notes))
        elif kind == "comparison":
            self.comparison.setText(comparison_text(event))
        elif kind == "scores":
            self.comparison.setText(scores_text(event))
        elif kind == "end":
            self._finished(event)
        elif kind == "error":
            self._report(f"Training failed: {event['message']}")
        elif kind == "exit":
            self.timer.stop()
            self._set_running(False)

    def _finished(self, event: dict) -> None:
        self.checkpoint, self.kind = event.get("checkpoint"), event.get("kind", "nuclei")
        status = event["status"]
        if self.checkpoint:
            self.checkpoint_label.setText(f"Checkpoint: {self.checkpoint}")
            self.use_button.setEnabled(True)
        if status == "cancelled":
            self._report("Stopped; the last checkpoint is kept. Press Resume to continue.")
        else:
            if self.checkpoint:
                TRAINED.model_ready.emit(self.checkpoint, self.kind)
            sent = f" {Path(self.checkpoint).name} is in live analysis." if self.checkpoint else ""
            self._report(f"Training {status.replace('_', ' ')}.{sent}")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self.running:
            self.process.stop()
        super().closeEvent(event)
