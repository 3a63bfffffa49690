"""The whole-slide run and the exports of "Analyze slide": long jobs in napari thread workers.

``SlideJobs`` is mixed into ``AnalyzeWidget``, whose controls it reads (``out``, ``progress``,
``run_button``, ``cancel_button``, ``export_dir``, ``status``) and whose engine it drives
(``_analysis()``, ``_slide()``). One job runs at a time (``worker``); live analysis pauses
while it runs, as both would share the device.
"""

import functools
import logging
from pathlib import Path

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info

from napari_rckd._widgets.form import confirm_replace, reporting
from napari_rckd._widgets.result_layers import add_result_layers, source_classes
from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)


class SlideJobs:
    """Whole-slide run, cancel, progress and exports of the Analyze slide widget."""

    @reporting
    def _on_run_clicked(self):
        """Start the whole-slide run in a thread worker; returns the worker (tests wait on it)."""
        if self.worker is not None:
            raise RckdError("a whole-slide run or export is already going; wait or cancel it.")
        layer, slide = self._slide()
        out = Path(self.out.text() or slide.path.with_name(f"{layer.name}.rckd.zarr"))
        self.out.setText(str(out))
        analysis = self._analysis()
        if self.live is not None:
            self.live.set_enabled(False)  # one job on the device at a time
        self._stop.clear()
        worker = thread_worker(analysis.run_whole_slide, start_thread=False)(out, self._stop)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(functools.partial(self._on_whole_slide_done, layer.name))
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_worker_finished)
        self.progress.setValue(0)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"analysing {slide.path.name} into {out.name}…")
        self.worker = worker
        worker.start()
        return worker

    def _on_cancel_clicked(self) -> None:
        self._stop.set()
        self.status.setText("cancelling after the batch in flight…")

    def _on_progress(self, progress) -> None:
        self.progress.setMaximum(max(1, progress.total))
        self.progress.setValue(progress.done)
        word = "cancelled at" if progress.cancelled else progress.source
        self.status.setText(f"whole slide: {word} {progress.done}/{progress.total} tiles")

    def _on_whole_slide_done(self, prefix: str, predictor) -> None:
        if not self._stop.is_set():
            add_result_layers(
                self.viewer,
                predictor.stores,
                source_classes(predictor.sources.values()),
                f"{prefix} whole slide",
            )
            self.status.setText(f"whole slide done: {self.out.text()}")

    def _on_worker_error(self, error) -> None:
        message = str(error) if isinstance(error, RckdError) else f"analysis failed: {error}"
        if not isinstance(error, RckdError):
            log.error("Analyze slide worker failed", exc_info=error)
        self.show_error(message)

    def _on_worker_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.live is not None and self.live_box.isChecked():
            self.live.set_enabled(True)

    @reporting
    def _on_export_clicked(self, kind: str):
        """Write ``kind`` exports of the current results into the export folder (a worker)."""
        if self.worker is not None:
            raise RckdError("a whole-slide run or export is already going; wait or cancel it.")
        if self.analysis is None or self.analysis.results is None:
            raise RckdError("nothing to export yet: turn live on or analyse the whole slide first.")
        layer, slide = self._slide()
        folder = Path(self.export_dir.text() or slide.path.parent)
        self.export_dir.setText(str(folder))
        stem = folder / layer.name
        there = [p.name for p in self.analysis.export_targets(stem, [kind]) if p.exists()]
        if there and not confirm_replace(self, folder, there):
            self.status.setText(f"kept the {kind} exports already in {folder}")
            return None
        worker = thread_worker(self.analysis.export, start_thread=False)(
            stem, [kind], overwrite=bool(there)
        )
        worker.returned.connect(lambda _: show_info(f"exported {kind} to {folder}"))
        worker.returned.connect(lambda _: self.status.setText(f"exported {kind} beside {stem}"))
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_worker_finished)
        self.worker = worker
        worker.start()
        return worker
