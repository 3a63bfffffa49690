"""The µm-per-pixel row of Analyze slide: a value, suggestions and Set.

For a slide that does not record its pixel size the row offers the file's objective (when it
says one), the usual 40x/20x/10x values and, once measured in the background, the value
estimated from the size of the slide's nuclei (`choices.nuclei_mpp_suggestion`, the estimate
stage 2 uses); Set hands the value to ``on_set``, which gives it to the slide and re-scales
its layer in place.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QPushButton, QWidget

from napari_rckd._widgets.choices import mpp_suggestions, nuclei_mpp_suggestion


class MppField(QWidget):
    def __init__(self, on_set: Callable[[float], None], estimate_in_thread: bool = True):
        super().__init__()
        self.value = QDoubleSpinBox(decimals=4, minimum=0.01, maximum=100.0, singleStep=0.05)
        self.value.setValue(0.5)
        self.guess = QComboBox()
        self.guess.activated.connect(self._on_guess_chosen)
        self.button = QPushButton("Set")
        self.button.clicked.connect(lambda: on_set(float(self.value.value())))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.value)
        row.addWidget(self.guess, 1)
        row.addWidget(self.button)
        self._slide, self.estimate_in_thread = None, estimate_in_thread
        self._worker = None  # the background nuclei estimate, while it runs

    def show_slide(self, slide) -> None:
        """Follow a slide: its own value, else the best guess; suggestions from its objective,
        then (for a slide without a pixel size) from its nuclei."""
        guesses = mpp_suggestions(getattr(slide, "magnification", None))
        self.guess.clear()
        self.guess.addItem("suggestions…", None)
        for label, mpp in guesses:
            self.guess.addItem(label, mpp)
        known = getattr(slide, "mpp", None)
        self.value.setValue(known if known is not None else guesses[0][1])
        self.button.setText("Change" if known is not None else "Set")
        self._slide = slide
        if slide is not None and known is None and hasattr(slide, "read_region"):
            if self.estimate_in_thread:
                from napari.qt.threading import thread_worker

                self.stop_estimate()
                worker = thread_worker(nuclei_mpp_suggestion, start_thread=False)(slide)
                worker.returned.connect(lambda found, s=slide: self.add_nuclei_suggestion(s, found))
                worker.finished.connect(lambda w=worker: self._forget(w))
                self._worker = worker
                worker.start()
            else:
                self.add_nuclei_suggestion(slide, nuclei_mpp_suggestion(slide))

    def stop_estimate(self) -> None:
        """Drop a running estimate's answer (the widget closes or follows another slide); the
        thread finishes its read on its own and its result goes nowhere."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.returned.disconnect()

    def _forget(self, worker) -> None:
        if self._worker is worker:
            self._worker = None

    def add_nuclei_suggestion(self, slide, found: tuple[str, float] | None) -> None:
        """Put the nuclei estimate first among the suggestions, if the row still shows ``slide``."""
        if found is None or slide is not self._slide:
            return
        self.guess.insertItem(1, *found)

    def _on_guess_chosen(self, index: int) -> None:
        if self.guess.itemData(index) is not None:
            self.value.setValue(self.guess.itemData(index))
