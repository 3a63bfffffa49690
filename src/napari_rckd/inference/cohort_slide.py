"""One slide of a cohort, as a worker (or this process) runs it: the whole-slide prediction
staged into ``DIR`` and its row of the cohort table.

Models are built once per process and kept (`load_sources`), so a worker that runs a hundred
slides loads them once. A user's checkpoint travels as its bytes (`ModelFile`), written once
into the worker's temporary folder under its own name, so its identity (name and digest) is
the same wherever it runs. No Qt; no print.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from napari_rckd.defaults import DEFAULT_EXPORTS, PRIOR_SUFFIX
from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)

COMPLETE_ATTRIBUTE = "napari_rckd_complete"
SLIDE_ATTRIBUTE = "napari_rckd_slide"
TILES_TOPIC = "napari-rckd-tiles"  # workers' tile counts, for the cohort's progress bar
# torch threads of a worker's slide: Dask starts workers with OMP_NUM_THREADS=1 and runs tasks
# in threads of their own, so the count is set by the task (`--cluster local` sets it; a
# jobqueue YAML exports it in job_script_prologue)
THREADS_VARIABLE = "NAPARI_RCKD_THREADS"


@dataclass(frozen=True)
class ModelFile:
    """A checkpoint by content: its file name, its bytes, and a spec suffix (``+classical``)."""

    name: str
    data: bytes = field(repr=False)
    suffix: str = ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]

    def local_spec(self) -> str:
        """The spec on this machine: the bytes written once under the same name."""
        folder = Path(tempfile.gettempdir()) / "napari-rckd-models" / self.digest
        path = folder / self.name
        if not path.is_file():
            from napari_rckd.atomic import atomic_open

            with atomic_open(path, "wb") as handle:
                handle.write(self.data)
        return f"{path}{self.suffix}"


@dataclass(frozen=True)
class CohortSettings:
    """What every slide of a cohort is given: models, device, outputs (plain, picklable data)."""

    models: dict  # kind -> spec (str), ModelFile or None
    out: str
    device: str = "auto"
    exports: tuple[str, ...] = DEFAULT_EXPORTS
    slide_mpp: float | None = None
    batch_size: int = 4
    region_threshold: float = 0.5
    overwrite: bool = False
    compile: bool = False
    planned: dict | None = None  # `describe_models` on the client: identities, export suffixes


def pack_models(models: dict) -> dict:
    """``models`` with every spec that is a file on this machine replaced by its content."""
    packed = {}
    for kind, spec in models.items():
        text = str(spec) if spec else ""
        suffix = PRIOR_SUFFIX if text.lower().endswith(PRIOR_SUFFIX) else ""
        path = Path(text[: len(text) - len(suffix)]).expanduser() if text else None
        if path is not None and path.is_file():
            packed[kind] = ModelFile(path.name, path.read_bytes(), suffix)
        else:
            packed[kind] = spec
    return packed


_LOADED: dict = {}  # cache key -> (sources, note): the models of this process
_LOCK = threading.Lock()


def load_sources(settings: CohortSettings) -> tuple[list, list[str]]:
    """The model sources for ``settings`` in this process, built on first use and kept, and
    notes on the choice (why ``auto`` chose its nuclei model, what compiles)."""
    from napari_rckd.devices import resolve_device

    device = resolve_device(settings.device)
    specs = {
        kind: (spec.local_spec() if isinstance(spec, ModelFile) else spec)
        for kind, spec in settings.models.items()
    }
    key = (tuple(sorted((k, str(v)) for k, v in specs.items())), device)
    key += (settings.region_threshold, settings.compile)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _build(specs, device, settings)
        return _LOADED[key]


def _build(specs: dict, device: str, settings: CohortSettings) -> tuple[list, list[str]]:
    from napari_rckd.inference.analysis import build_sources
    from napari_rckd.inference.nuclei_choice import choose_nuclei

    notes = []
    if specs.get("nuclei"):
        specs["nuclei"], note = choose_nuclei(specs["nuclei"], device)
        notes += [note] if note else []
    sources = build_sources(**specs, device=device, region_threshold=settings.region_threshold)
    if settings.compile:
        from napari_rckd.inference.sources import compile_models

        count = compile_models(sources)
        notes.append(
            f"torch.compile: {count} model(s) compile on their first batch (~30 s each on a CPU)"
        )
    return sources, notes


def describe_models(settings: CohortSettings) -> dict:
    """What this process would write: the identities a whole-slide output records, the export
    file suffixes of a slide, and notes on the models (`load_sources`)."""
    from napari_rckd.inference.export import export_targets

    sources, notes = load_sources(settings)
    wide = [source.for_whole_slide() for source in sources]
    names = export_targets(sources, "", settings.exports).values()
    return dict(
        identities={source.name: source.identity for source in wide},
        suffixes=sorted(str(name) for name in names),  # ".nuclei.csv", ...
        notes=notes,
    )


def predict_slide(path: str | Path, settings: CohortSettings, on_tiles=None) -> dict:
    """Predict one slide into ``settings.out`` (staged, published whole) and return its row.

    ``on_tiles(new_tiles, done, total)`` hears the progress; inside a Dask worker the tiles
    are published on ``TILES_TOPIC`` for the client's progress bar.
    """
    from napari_rckd.inference.outputs import staged_outputs
    from napari_rckd.io import open_slide

    start, path, out = time.perf_counter(), Path(path), Path(settings.out)
    on_tiles = on_tiles or _worker_reporter()
    _use_threads()
    sources, _ = load_sources(settings)
    mine = {source.name: source.for_whole_slide().identity for source in sources}
    planned = (settings.planned or {}).get("identities")
    if planned is not None and mine != planned:
        raise RckdError(
            f"worker {worker()} would run {', '.join(mine.values())}, not the models planned "
            f"({', '.join(planned.values())}); pass --nuclei and --device explicitly."
        )
    with open_slide(path, mpp=settings.slide_mpp) as slide:
        if slide.mpp is None:  # refused before anything is written into --out
            raise RckdError(
                f"{path.name} does not record its pixel size; pass --slide-mpp (e.g. 0.5 for 20x, "
                "0.25 for 40x)."
            )
        with staged_outputs(out, path.stem, settings.overwrite) as staging:
            return _predict_open(slide, path, sources, settings, staging, on_tiles, start)


def _predict_open(slide, path, sources, settings, staging, on_tiles, start) -> dict:
    """The whole-slide run of an open slide into ``staging``; its row of the cohort table."""
    from napari_rckd.inference.analysis import Analysis
    from napari_rckd.inference.cohort_table import FIGURES_ATTRIBUTE, slide_figures
    from napari_rckd.inference.store import open_root

    analysis = Analysis(
        slide,
        sources=sources,
        batch_size=settings.batch_size,
        region_threshold=settings.region_threshold,
    )
    zarr_path, done, damaged = staging / f"{path.stem}.zarr", 0, 0
    run = analysis.run_whole_slide(
        zarr_path, exports_stem=staging / path.stem, exports=settings.exports
    )
    for progress in run:  # nuclei exports stream while the tiles run; the rest follow
        if on_tiles is not None:
            on_tiles(progress.done - done, progress.done, progress.total)
        done, damaged = progress.done, progress.damaged
    figures = slide_figures(analysis, staging / f"{path.stem}.nuclei.csv")
    figures["damaged_tiles"] = damaged
    open_root(zarr_path).attrs[FIGURES_ATTRIBUTE] = figures  # kept for a resumed run's table
    models = " | ".join(source.for_whole_slide().identity for source in sources)
    seconds = round(time.perf_counter() - start, 2)
    return dict(
        file=str(path), status="done", **figures, models=models, seconds=seconds, worker=worker()
    )


def _use_threads() -> None:
    threads = os.environ.get(THREADS_VARIABLE, "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))


def worker() -> str:
    """The Dask worker's address, or host:pid outside a cluster."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _worker_reporter():
    try:
        from distributed import get_worker

        current = get_worker()
    except (ImportError, ValueError):
        return None
    state = {"sent": time.monotonic(), "tiles": 0}

    def report(tiles: int, done: int, total: int) -> None:  # a message a second at most
        state["tiles"] += tiles
        if time.monotonic() - state["sent"] >= 1 or done >= total:
            current.log_event(TILES_TOPIC, state["tiles"])
            state.update(sent=time.monotonic(), tiles=0)

    return report


def run_task(path: str, settings: CohortSettings) -> dict:
    """The Dask task for one slide: a bad slide (one sentence) becomes a failed row at once;
    anything else is raised, so Dask runs it again (``retries``) before it counts as failed.

    A task run again after its worker died may find the slide published by the first attempt
    (it died after the renames) or half published (during them): it finishes the publication
    and reports the slide done instead of refusing its own results."""
    try:
        if settings.planned is not None:
            finished = _published_before(Path(path), settings)
            if finished is not None:
                return finished
        return predict_slide(path, settings)
    except RckdError as error:
        return failed_row(path, str(error))


def _published_before(path: Path, settings: CohortSettings) -> dict | None:
    from napari_rckd.inference.outputs import finish_publications

    out = Path(settings.out)
    finish_publications(out, path.stem)
    figures = complete_figures(out, path.stem, settings.planned)
    if figures is None:
        return None
    models = " | ".join(settings.planned["identities"].values())
    return dict(file=str(path), status="done", **figures, models=models, worker=worker())


def complete_figures(out: Path, stem: str, described: dict) -> dict | None:
    """The stored figures of a slide complete in ``out`` with these models and exactly these
    files, else ``None`` (to be run, or refused, or replaced with ``--overwrite``)."""
    from napari_rckd.inference.cohort_table import FIGURES_ATTRIBUTE
    from napari_rckd.inference.outputs import slide_outputs
    from napari_rckd.inference.store import open_root

    zarr = out / f"{stem}.zarr"
    if not zarr.is_dir():
        return None
    try:
        attrs = open_root(zarr, mode="r").attrs.asdict()
    except Exception:  # noqa: BLE001  (a broken store is simply not complete)
        return None
    made_by = (attrs.get(SLIDE_ATTRIBUTE) or {}).get("sources")
    if not attrs.get(COMPLETE_ATTRIBUTE) or made_by != described["identities"]:
        return None
    files = {p.name for p in slide_outputs(out, stem)}
    if files != {f"{stem}.zarr", *(f"{stem}{suffix}" for suffix in described["suffixes"])}:
        return None
    return dict(attrs.get(FIGURES_ATTRIBUTE) or {})


def failed_row(path: str | Path, error: str) -> dict:
    return dict(file=str(path), status="failed", error=error, worker=worker())
