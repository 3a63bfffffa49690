"""The "correct nuclei" part of Analyze slide: a region of the slide as an editable Labels layer
holding the live nuclei model's answer, saved into the slide's corrections sidecar.

The work is `napari_rckd.inference.corrections.CorrectionSession`'s (cut a region at the
model's µm/px, answer it, save, reopen; new id, merge, split); this panel only turns the view or
a drawn rectangle into a box, shows drafts as layers and lists saved regions. Keys on the
corrections layer: ``n`` a new nucleus (next free id, paint mode), ``m`` merge the last two
picked nuclei, ``s`` split the picked one in two.
"""

from __future__ import annotations

import logging

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from napari_rckd._widgets.form import reporting
from napari_rckd.errors import RckdError
from napari_rckd.inference.corrections import (
    CorrectionSession,
    Draft,
    merge_labels,
    next_label,
    split_label,
)

log = logging.getLogger(__name__)

LAYER_SUFFIX = " corrections"


class CorrectPanel(QGroupBox):
    """Buttons and the list of saved regions; ``host`` is the Analyze widget (slide, model)."""

    def __init__(self, host):
        super().__init__("correct nuclei (teach the model your tissue)")
        self.host = host
        self.session: CorrectionSession | None = None
        self.draft: Draft | None = None
        self.layer = None  # the Labels layer of the draft
        self.picked: list[int] = []  # the last nuclei picked on it (merge takes two)
        self.worker = None
        self.here = QPushButton("Correct nuclei here")
        self.here.setToolTip(
            "the region on screen (or the last rectangle of the selected Shapes layer), at the "
            "nuclei model's resolution, as an editable layer of its nuclei"
        )
        self.new = QPushButton("New nucleus (n)")
        self.merge = QPushButton("Merge last two picked (m)")
        self.split = QPushButton("Split picked (s)")
        self.save = QPushButton("Save corrections")
        self.reopen = QPushButton("Reopen selected")
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.suggest_button = QPushButton("Suggest regions")
        self.suggest_button.setToolTip(
            "rank tiles by how unsure the nuclei model is (share of pixels with a nuclear "
            "probability between 0.2 and 0.8) and show the top ones; click one to go there"
        )
        self.suggest_area = QComboBox()
        self.suggest_area.addItems(["in the view", "in the whole slide"])
        self.second = QCheckBox("with a second opinion (csat vs builtin)")
        self.second.setChecked(True)
        self.second.setToolTip(
            "also rank by how much a second nuclei model disagrees (builtin, or csat when the "
            "live model is builtin): better at finding errors (docs/correct.md), twice the work"
        )
        self.suggestions = QListWidget()
        self.suggestions.setMaximumHeight(110)
        self.status = QLabel(
            "turn live nuclei on, go to tissue the model gets wrong, press Correct"
        )
        self.status.setWordWrap(True)
        grid = QGridLayout()
        for i, button in enumerate((self.here, self.new, self.merge, self.split, self.save)):
            grid.addWidget(button, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(QLabel("saved regions (double-click to reopen)"))
        layout.addWidget(self.list)
        layout.addWidget(self.reopen)
        row = QGridLayout()
        row.addWidget(self.suggest_button, 0, 0)
        row.addWidget(self.suggest_area, 0, 1)
        layout.addLayout(row)
        layout.addWidget(self.second)
        layout.addWidget(self.suggestions)
        layout.addWidget(self.status)
        self.here.clicked.connect(lambda: self.correct_here())
        self.new.clicked.connect(lambda: self.new_nucleus())
        self.merge.clicked.connect(lambda: self.merge_picked())
        self.split.clicked.connect(lambda: self.split_picked())
        self.save.clicked.connect(lambda: self.save_corrections())
        self.reopen.clicked.connect(lambda: self.reopen_selected())
        self.list.itemDoubleClicked.connect(lambda item: self.reopen_region(item.data(Qt.UserRole)))
        self.suggest_button.clicked.connect(lambda: self.suggest_regions())
        self.suggestions.currentRowChanged.connect(lambda row: self.go_to_suggestion(row))
        self.found: list = []  # the latest suggestions, best first

    def show_error(self, message: str) -> None:
        self.status.setText(message)
        self.host.show_error(message)

    # -- the session ------------------------------------------------------------------------------

    def current_session(self) -> CorrectionSession:
        """The session of the chosen slide and live nuclei model (remade when either changes)."""
        _, slide = self.host._slide()
        nuclei = [s for s in self.host._analysis().sources if s.name == "nuclei"]
        if not nuclei:
            raise RckdError(
                "choose a nuclei model in Analyze slide first: corrections start from its nuclei"
            )
        teacher = nuclei[0].teacher
        if (
            self.session is None
            or self.session.slide is not slide
            or self.session.teacher is not teacher
        ):
            self.session = CorrectionSession(slide, teacher)
            self.refresh_list()
        return self.session

    def box(self) -> tuple[float, float, float, float]:
        """The level-0 box to correct: the selected Shapes layer's last shape, else the view."""
        from napari.layers import Shapes

        layer, slide = self.host._slide()
        active = self.host.viewer.layers.selection.active
        if isinstance(active, Shapes) and len(active.data):
            corners = np.asarray(active.data[-1], float)[:, -2:]
            scale, shift = np.asarray(active.scale)[-2:], np.asarray(active.translate)[-2:]
            world = (corners * scale + shift) / slide.mpp  # µm -> level-0 px
            return (*world.min(0), *world.max(0))
        if self.host.live is not None:
            view, _ = self.host.live.current_view()
            return view.y0, view.x0, view.y1, view.x1
        from napari_rckd.inference.scheduler import view_from_corner_pixels

        level = layer.data_level if layer.multiscale else 0
        factors = layer.downsample_factors if layer.multiscale else [[1.0, 1.0]]
        view = view_from_corner_pixels(layer.corner_pixels, level, factors, slide.shape)
        return view.y0, view.x0, view.y1, view.x1

    # -- actions (one-liners into the session, plus layers) ---------------------------------------

    @reporting
    def correct_here(self, sync: bool = False):
        """Cut the region and ask the model (a thread worker, or at once with ``sync``)."""
        session = self.current_session()
        bounds = session.bounds_from_box(*self.box())
        self.status.setText(f"asking {session.teacher.name} for its nuclei there…")
        if sync:
            self.show_draft(session.open(bounds))
            return None
        return self._in_worker(session.open, bounds)

    def _in_worker(self, function, *args):
        if self.worker is not None:
            raise RckdError("a region is still being opened; wait a moment")
        live = self.host.live
        if live is not None:
            live.set_enabled(False)  # one model call at a time on the device
        worker = thread_worker(function, start_thread=False)(*args)
        worker.returned.connect(self.show_draft)
        worker.errored.connect(lambda error: self.show_error(str(error)))
        worker.finished.connect(self._worker_done)
        self.worker = worker
        worker.start()
        return worker

    def _worker_done(self) -> None:
        self.worker = None
        if self.host.live is not None and self.host.live_box.isChecked():
            self.host.live.set_enabled(True)

    def show_draft(self, draft: Draft) -> None:
        """The draft as the corrections layer (replacing the previous one), ready to paint."""
        layer, slide = self.host._slide()
        name = f"{layer.name}{LAYER_SUFFIX}"
        if name in self.host.viewer.layers:
            self.host.viewer.layers.remove(name)
        self.draft = draft
        self.layer = self.host.viewer.add_labels(
            draft.labels, name=name, opacity=0.7, units=("um", "um"), **draft.placement(slide.mpp)
        )
        self.layer.metadata["correction_region"] = draft.region
        self.layer.events.selected_label.connect(self._on_picked)
        self.layer.bind_key("n", lambda _: self.new_nucleus(), overwrite=True)
        self.layer.bind_key("m", lambda _: self.merge_picked(), overwrite=True)
        self.layer.bind_key("s", lambda _: self.split_picked(), overwrite=True)
        self.host.viewer.layers.selection.active = self.layer
        self.new_nucleus()
        which = f"region-{draft.region:04d} reopened" if draft.region else "a new region"
        self.status.setText(
            f"{which}: {int(len(np.unique(draft.answer)) - 1)} nuclei from the model at "
            f"{draft.mpp:g} µm/px; paint missed ones (n), erase false ones, then Save"
        )

    def _on_picked(self, event=None) -> None:
        label = int(self.layer.selected_label)
        if label and (not self.picked or self.picked[-1] != label):
            self.picked = [*self.picked[-1:], label]

    def _draft_layer(self):
        if self.layer is None or self.layer not in self.host.viewer.layers:
            raise RckdError("press Correct nuclei here (or reopen a region) first")
        return self.layer

    @reporting
    def new_nucleus(self) -> None:
        layer = self._draft_layer()
        layer.selected_label = next_label(layer.data)
        layer.mode = "paint"

    @reporting
    def merge_picked(self) -> None:
        layer = self._draft_layer()
        layer.data = merge_labels(layer.data, self.picked[-2:])
        self.status.setText(f"merged nuclei {self.picked[-2:]}")

    @reporting
    def split_picked(self) -> None:
        layer = self._draft_layer()
        layer.data = split_label(layer.data, layer.selected_label)
        self.status.setText(f"split nucleus {layer.selected_label} in two")

    @reporting
    def save_corrections(self):
        """Write the layer's labels; the region's record says what changed."""
        layer = self._draft_layer()
        region = self.current_session().save(self.draft, np.asarray(layer.data))
        layer.metadata["correction_region"] = region.id
        self.refresh_list()
        self.status.setText(f"saved {region.summary()} in {self.session.folder.folder.name}")
        return region

    @reporting
    def reopen_selected(self):
        item = self.list.currentItem()
        if item is None:
            raise RckdError("pick a saved region in the list first")
        return self.reopen_region(item.data(Qt.UserRole))

    @reporting
    def reopen_region(self, region_id: int):
        self.show_draft(self.current_session().reopen(region_id))

    # -- where to correct next ---------------------------------------------------------------

    @reporting
    def suggest_regions(self, sync: bool = False, top: int = 10):
        """Rank the tiles of the view (or slide) by the model's unsure share; the top ones go
        to a Shapes layer and the list (a thread worker yielding progress, or at once)."""
        from napari_rckd.inference.suggest import suggest

        session = self.current_session()
        other = self.second_opinion(session.teacher) if self.second.isChecked() else None
        steps = suggest(session.slide, session.teacher, _suggest_box(self), top=top, other=other)
        if sync:
            updates = list(steps)  # (done, total, best so far) after each tile
            self.show_suggestions(updates[-1][2] if updates else [])
            return None
        if self.worker is not None:
            raise RckdError("the model is busy with a region; wait a moment")
        if self.host.live is not None:
            self.host.live.set_enabled(False)
        worker = thread_worker(lambda: (yield from steps), start_thread=False)()
        latest = {"found": []}

        def progress(update):
            done, total, latest["found"] = update
            self.status.setText(f"suggest regions: {done}/{total} tiles scored")

        worker.yielded.connect(progress)
        worker.finished.connect(lambda: self.show_suggestions(latest["found"]))
        worker.errored.connect(lambda error: self.show_error(str(error)))
        worker.finished.connect(self._worker_done)
        self.worker = worker
        worker.start()
        return worker

    def second_opinion(self, teacher):
        """builtin beside the live model, or csat when the live model is builtin (made once)."""
        from napari_rckd.teachers import get_teacher

        name = "csat" if teacher.name in ("builtin", "hybrid") else "builtin"
        if getattr(self, "_second", None) is None or self._second.name != name:
            self._second = get_teacher(name, device=getattr(teacher, "device", None))
        return self._second

    def show_suggestions(self, found) -> None:
        """The suggestions as rectangles (µm) over the slide and as a list, best first."""
        layer, slide = self.host._slide()
        self.found = list(found)
        name = f"{layer.name} suggested regions"
        if name in self.host.viewer.layers:
            self.host.viewer.layers.remove(name)
        m = slide.mpp
        boxes = [np.array([[s.y * m, s.x * m], [(s.y + s.height) * m, (s.x + s.width) * m]])
                 for s in self.found]  # fmt: skip
        if boxes:
            shapes = self.host.viewer.add_shapes(
                boxes, shape_type="rectangle", name=name, edge_color="yellow",
                face_color="transparent", edge_width=0.04 * self.found[0].height * m, units=("um", "um"),
                text={"string": [str(i + 1) for i in range(len(boxes))], "color": "yellow"},
            )  # fmt: skip
            shapes.editable = False
            self.host.viewer.layers.selection.active = layer  # drawing stays a user's choice
        self.suggestions.blockSignals(True)
        self.suggestions.clear()
        for i, s in enumerate(self.found, 1):
            also = "" if s.disagree is None else f", disagree {s.disagree:.0%}"
            self.suggestions.addItem(f"{i}. unsure {s.unsure:.1%}{also} at ({s.x}, {s.y})")
        self.suggestions.blockSignals(False)
        self.status.setText(
            f"{len(self.found)} regions where the model is least sure; click one to go there, "
            "then Correct nuclei here"
            if self.found
            else "no tissue tiles to suggest here"
        )

    @reporting
    def go_to_suggestion(self, row: int) -> None:
        """Centre the camera on suggestion ``row`` (zoomed to show it whole)."""
        if not 0 <= row < len(self.found):
            return
        _, slide = self.host._slide()
        suggestion = self.found[row]
        cy, cx = suggestion.centre
        camera = self.host.viewer.scene.camera
        camera.center = (cy * slide.mpp, cx * slide.mpp)
        canvas = min(self.host.viewer.canvas.size)
        camera.zoom = 0.9 * canvas / (suggestion.height * slide.mpp)

    def refresh_list(self) -> None:
        self.list.clear()
        if self.session is None:
            return
        for region in self.session.regions():
            item = QListWidgetItem(region.summary())
            item.setData(Qt.UserRole, region.id)
            self.list.addItem(item)


def _suggest_box(panel) -> tuple:
    _, slide = panel.host._slide()
    if panel.suggest_area.currentIndex() == 1:
        return (0, 0, *slide.shape)
    return panel.box()
