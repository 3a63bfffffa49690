"""The "Nuclei from my corrections" box of Train student: which corrections, which start model,
how much replay, how long. The corrections of every open slide (its ``.corrections`` sidecar,
written by Analyze slide's Save corrections) are listed and ticked; other nuclei folders can
be added. `train_job.nuclei_job` turns the box's values into the child's job."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
)

from napari_rckd.io.corrections import find_sidecars
from napari_rckd.training.nuclei_finetune import (
    DEFAULT_START,
    NUCLEI_FINETUNE_BATCH,
    NUCLEI_FINETUNE_STEPS,
    NUCLEI_FINETUNE_TILE,
    REPLAY_SHARE,
)

START_MODELS = (DEFAULT_START, "csat", "learned")


class NucleiBox(QGroupBox):
    """Checkable: when ticked, Start fine-tunes a nuclei model instead of stages 1 and 2."""

    def __init__(self, viewer):
        super().__init__("Nuclei from my corrections (teach the nuclei model your tissue)")
        self.viewer = viewer
        self.setCheckable(True)
        self.setChecked(False)
        self.folders = QListWidget()
        self.folders.setMaximumHeight(80)
        self.add_button = QPushButton("Add nuclei folder…")
        self.init = QComboBox(editable=True)
        self.init.addItems(list(START_MODELS))
        self.init.setToolTip(
            "the model to fine-tune: builtin (the most exact after corrections, but its "
            "classical half keeps what it draws), learned or csat (fast; these two also unlearn "
            "ink and fibres you erased), or a .safetensors"
        )
        self.replay = QDoubleSpinBox(minimum=0.0, maximum=0.9, singleStep=0.05, value=REPLAY_SHARE)
        self.replay.setToolTip(
            "share of training crops that replay what the model knew (its answers on the tissue "
            "around your regions and on your slides), so it does not forget"
        )
        self.steps = QSpinBox(minimum=1, maximum=100_000, value=NUCLEI_FINETUNE_STEPS)
        self.crop = QSpinBox(minimum=64, maximum=1024, singleStep=32, value=NUCLEI_FINETUNE_TILE)
        self.crop.setToolTip("training crop side, in the model's pixels (a multiple of 32)")
        self.batch = QSpinBox(minimum=1, maximum=256, value=NUCLEI_FINETUNE_BATCH)
        form = QFormLayout(self)
        form.addRow("Corrections", self.folders)
        form.addRow("", self.add_button)
        form.addRow("Start from", self.init)
        form.addRow("Replay share", self.replay)
        form.addRow("Steps", self.steps)
        form.addRow("Crop (px) / batch", _row(self.crop, self.batch))
        self.add_button.clicked.connect(self._on_add_clicked)

    def refresh(self) -> None:
        """Tick the corrections sidecar of every open slide that has one."""
        paths = [layer.metadata.get("path") for layer in self.viewer.layers]
        for folder in find_sidecars([p for p in paths if p]):
            self.add_folder(str(folder))

    def add_folder(self, path: str, checked: bool = True) -> None:
        known = {self.folders.item(i).data(Qt.UserRole) for i in range(self.folders.count())}
        if path in known:
            return
        item = QListWidgetItem(Path(path).name)
        item.setData(Qt.UserRole, path)
        item.setToolTip(path)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked if checked else Qt.Unchecked)
        self.folders.addItem(item)

    def _on_add_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Nuclei folder (X.tif beside X_label.tif)")
        if folder:
            self.add_folder(folder)

    def settings(self) -> dict:
        """The box's part of `TrainSettings`."""
        self.refresh()  # regions saved since the widget opened
        chosen = [
            self.folders.item(i).data(Qt.UserRole)
            for i in range(self.folders.count())
            if self.folders.item(i).checkState() == Qt.Checked
        ]
        return dict(
            nuclei=self.isChecked(),
            corrections=chosen,
            nuclei_init=self.init.currentText().strip() or DEFAULT_START,
            replay=self.replay.value(),
            nuclei_steps=self.steps.value(),
            nuclei_tile=self.crop.value(),
            nuclei_batch=self.batch.value(),
        )


def _row(*widgets):
    from qtpy.QtWidgets import QHBoxLayout

    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row
