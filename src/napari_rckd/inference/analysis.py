"""One analysis of one slide: the engine API that `predict`, the demo and the Analyze widget share.

``Analysis(slide, models=..., device=...)`` loads the chosen models once and then serves every
front end: ``live()`` gives an in-memory ``Predictor`` a viewer drives from the camera,
``run_whole_slide(out)`` computes every tissue tile into an OME-Zarr folder (a generator of
``Progress``, so the CLI wraps it in tqdm and a GUI in a thread worker), and ``export(stem)``
writes GeoJSON, CSV or OME-TIFF of the latest results. The command line parses arguments and
the widget wires controls; neither holds engine logic. No Qt, no napari.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from napari_rckd.defaults import DEFAULT_EXPORTS, DEFAULT_NUCLEI, EXPORTS, KINDS
from napari_rckd.errors import RckdError
from napari_rckd.inference.cache import LIVE_RESULTS_BYTES, ResultCache
from napari_rckd.inference.export import (
    NucleiFiles,
    export_results,
    export_targets,
    write_targets,
)
from napari_rckd.inference.nuclei_choice import choose_nuclei
from napari_rckd.inference.nuclei_stream import NucleiStream
from napari_rckd.inference.outputs import recover, staged_outputs
from napari_rckd.inference.predictor import DEFAULT_BATCH, Predictor
from napari_rckd.inference.sources import REGION_THRESHOLD, Source
from napari_rckd.inference.store import open_root
from napari_rckd.inference.wholeslide import Progress, create_output, run_whole_slide

log = logging.getLogger(__name__)


class _Cancelled(Exception):
    """A whole-slide run stopped by the user: its streamed exports are dropped."""


__all__ = ["DEFAULT_EXPORTS", "DEFAULT_NUCLEI", "EXPORTS", "KINDS", "Analysis", "build_sources"]


def build_sources(
    nuclei: str | Path | None = None,
    subtype: str | Path | None = None,
    region: str | Path | None = None,
    device: str = "cpu",
    region_threshold: float = REGION_THRESHOLD,
) -> list[Source]:
    """The model sources for the chosen models (``None`` = not computed).

    A missing, foreign or truncated checkpoint raises one ``RckdError`` sentence.
    """
    from napari_rckd.inference.sources import NucleiSource, RegionSource, SubtypeSource

    if not (nuclei or subtype or region):
        raise RckdError(
            "nothing to predict: choose a nuclei model (e.g. builtin), a subtype or a region "
            "checkpoint."
        )
    try:
        sources: list[Source] = []
        if nuclei:
            sources.append(NucleiSource(nuclei, device))
        if subtype:
            sources.append(SubtypeSource(subtype, device))
        if region:
            sources.append(RegionSource(region, device, region_threshold))
    except RckdError:
        raise
    except Exception as error:  # e.g. a truncated or foreign .safetensors file
        chosen = ", ".join(str(p) for p in (nuclei, subtype, region) if p)
        raise RckdError(
            f"could not load the chosen models ({chosen}): {error}; pick a checkpoint written "
            "by napari-rckd training."
        ) from error
    return sources


class Analysis:
    """A slide with its models on one device: live prediction, whole-slide runs and exports.

    ``models`` maps a kind (nuclei, subtype, region) to a spec or checkpoint path; kinds left
    out or ``None`` are not computed. ``sources`` (already built) may replace ``models``.
    """

    def __init__(
        self,
        slide,
        models: dict[str, str | Path | None] | None = None,
        device: str = "cpu",
        *,
        sources: Sequence[Source] | None = None,
        batch_size: int = DEFAULT_BATCH,
        region_threshold: float = REGION_THRESHOLD,
        cache: ResultCache | None = None,
    ):
        if slide.mpp is None:
            raise RckdError(
                f"{slide.path.name} does not record its pixel size; give it (--slide-mpp on the "
                "command line, the mpp field in Analyze slide), e.g. 0.5 for 20x, 0.25 for 40x."
            )
        self.nuclei_note = None  # why this nuclei model, when ``auto`` chose it
        if sources is None:
            models = dict({"nuclei": DEFAULT_NUCLEI} if models is None else models)
            unknown = sorted(set(models) - set(KINDS))
            if unknown:
                raise RckdError(
                    f"model kind {', '.join(unknown)} is unknown; use {', '.join(KINDS)}."
                )
            if models.get("nuclei"):
                models["nuclei"], self.nuclei_note = choose_nuclei(models["nuclei"], device)
            sources = build_sources(**models, device=device, region_threshold=region_threshold)
        self.slide = slide
        self.sources = list(sources)
        self.device = device
        self.batch_size = batch_size
        self.cache = cache if cache is not None else ResultCache()
        self.results: Predictor | None = None  # what export() writes: the latest run's predictor
        self.last_run: dict | None = None  # where the latest whole-slide run's time went
        self.preview_note: str | None = None  # what the live preview is, when there is one
        self._tissue = None
        self._preview: Source | None = None

    @property
    def tissue(self):
        """The slide's tissue mask, detected once."""
        if self._tissue is None:
            from napari_rckd.io.tissue import detect_tissue

            self._tissue = detect_tissue(self.slide, self.slide.path.name)
        return self._tissue

    def live(self, on_tile_done=None, preview: bool = True) -> Predictor:
        """An in-memory predictor for a viewer to drive (``start()``, ``submit(plan)``); with
        ``preview``, a slow nuclei model is shown first by a fast one (``preview_for``)."""
        previews = [self.preview_source()] if preview else []
        self.results = Predictor(
            self.slide,
            self.sources + [p for p in previews if p is not None],
            cache=self.cache,
            tissue=self.tissue,
            batch_size=self.batch_size,
            on_tile_done=on_tile_done,
            memory_budget=LIVE_RESULTS_BYTES,
        )
        return self.results

    def live_notes(self) -> str:
        """What the status line says of the latest live predictor's models: why this nuclei
        model, and what its preview trades ('' when neither applies)."""
        sources = self.results.sources.values() if self.results is not None else ()
        preview = self.preview_note if any(s.preview_of for s in sources) else None
        return "; ".join(note for note in (self.nuclei_note, preview) if note)

    def preview_source(self) -> Source | None:
        """The live preview of the nuclei model (loaded once), or None when it needs none."""
        from napari_rckd.inference.nuclei_choice import preview_for
        from napari_rckd.inference.sources import PreviewNucleiSource

        nuclei = next((s for s in self.sources if s.name == "nuclei"), None)
        name = preview_for(nuclei.mpp) if nuclei is not None else None
        if name is None:
            return None
        if self._preview is None:
            self._preview = PreviewNucleiSource(name, self.device)
            self.preview_note = (
                f"quick preview: {name} shows first, faint, until the chosen nuclei model (at "
                f"{nuclei.mpp:g} µm/px) replaces it tile by tile; the whole view shows about 3x "
                "sooner, the exact one about 1.3x later (docs/analyze.md)"
            )
        return self._preview

    def run_whole_slide(
        self,
        out: str | Path,
        stop: threading.Event | None = None,
        exports_stem: str | Path | None = None,
        exports: Sequence[str] = (),
    ) -> Iterator[Progress]:
        """Every tissue tile into the OME-Zarr folder ``out``, yielding progress after each batch.

        With ``exports_stem``, ``exports`` are written as ``<stem>.<result>.<ext>`` too: the
        nuclei GeoJSON and CSV while the tiles are predicted (`NucleiStream`), the others once
        they are done; a cancelled or failed run leaves none of them. The generator's return
        value is the finished predictor (its stores stay readable).
        """
        out = Path(out)
        sources = [source.for_whole_slide() for source in self.sources]  # larger dense windows
        create_output(out, self.slide, sources)
        predictor = Predictor(
            self.slide, sources, open_root(out), self.cache, self.tissue, self.batch_size
        )
        targets = export_targets(predictor.sources, exports_stem, exports) if exports_stem else {}
        streamed = [targets.pop(("nuclei", s), None) for s in ("geojson", "csv")]
        clock = {"start": time.perf_counter()}
        try:
            with ExitStack() as files:
                stream = None
                if any(streamed):
                    nuclei = files.enter_context(NucleiFiles(*streamed))
                    stream = NucleiStream(nuclei, *self._nuclei_export_stores(predictor))
                    files.callback(stream.close)  # before the files close, on any exit
                for progress in run_whole_slide(predictor, self.tissue, stop, listener=stream):
                    clock["predicted"] = time.perf_counter()
                    yield progress
                    if progress.cancelled:  # the files above are dropped, not published
                        raise _Cancelled
                if stream is not None:
                    stream.finish()
        except _Cancelled:
            return predictor
        finally:
            predictor.close()
        clock["streamed"] = time.perf_counter()
        self.results = predictor
        if targets:
            write_targets(predictor.stores, predictor.sources, self.slide, targets)
        self.last_run = self._run_figures(progress, stream, clock)
        log.info("whole-slide run: %s", self.last_run)
        return predictor

    @staticmethod
    def _run_figures(progress: Progress, stream: NucleiStream | None, clock: dict) -> dict:
        """Where a whole-slide run's time went, for the log and ``bench scale``."""
        end = time.perf_counter()
        return dict(
            tiles=progress.total,
            predict_s=clock["predicted"] - clock["start"],  # tissue, models, stitching
            nuclei=stream.files.count if stream else None,
            nuclei_export_thread_s=stream.busy_s if stream else None,  # beside the models
            nuclei_export_tail_s=clock["streamed"] - clock["predicted"],  # after the last tile
            other_exports_s=end - clock["streamed"],
            whole_s=end - clock["start"],
        )

    def _nuclei_export_stores(self, predictor: Predictor) -> tuple:
        """(labels, slide, classes, class names) of a nuclei export from ``predictor``."""
        subtype = predictor.sources.get("subtype")
        return (
            predictor.stores["nuclei_labels"],
            self.slide,
            predictor.stores.get("subtype_class"),
            subtype.class_names if subtype is not None else None,
        )

    def export(
        self, stem: str | Path, exports: Sequence[str] = DEFAULT_EXPORTS, overwrite: bool = False
    ) -> list[Path]:
        """Write ``exports`` (geojson, csv, ome-tiff) of the latest results as ``stem.*``.

        They are staged and appear together (`staged_outputs`); files already there are
        replaced only with ``overwrite``, and the slide's other exports are left alone.
        """
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        recover(stem.parent)
        names = [p.name for p in self.export_targets(stem, exports)]
        with staged_outputs(stem.parent, stem.name, overwrite, only=names) as staging:
            self.write_exports(staging / stem.name, exports)
        return [stem.parent / name for name in names]

    def write_exports(self, stem: str | Path, exports: Sequence[str]) -> list[Path]:
        """`export` without staging, for a caller that stages the whole slide (`predict`)."""
        if self.results is None:
            raise RckdError("nothing to export yet: run live or whole-slide analysis first.")
        unknown = sorted(set(exports) - set(EXPORTS))
        if unknown:
            raise RckdError(f"export {', '.join(unknown)} is unknown; use {', '.join(EXPORTS)}.")
        return export_results(
            self.results.stores, self.results.sources.values(), self.slide, stem, exports
        )

    def export_targets(self, stem: str | Path, exports: Sequence[str]) -> list[Path]:
        """The files `export` would write (to ask before replacing any)."""
        sources = self.results.sources.values() if self.results is not None else ()
        return list(export_targets(sources, stem, exports).values())
