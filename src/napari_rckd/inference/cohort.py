"""A cohort of slides through whole-slide prediction, in this process or on Dask distributed.

`find_slides` reads SLIDE, FOLDER or LIST.txt; `plan_cohort` skips the slides already complete
in ``DIR`` with the same models and files (a rerun resumes where the last one stopped) and
refuses the others' old results unless ``overwrite``, before any work; `run_cohort` predicts
the rest, one slide per task (`cohort_slide.run_task`) or, in a cohort of few slides, one task
per band of tiles and one to merge them (`bands`), and keeps ``DIR/cohort.csv``. Dask
schedules, balances and retries (``retries=1``); nothing here is a scheduler. No Qt, no print:
the caller hears ``on_slide(row)`` and ``on_tiles(n)``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from napari_rckd.errors import RckdError
from napari_rckd.inference.bands import band_task, count_bands, merge_task
from napari_rckd.inference.cohort_report import write_report
from napari_rckd.inference.cohort_slide import (
    TILES_TOPIC,
    CohortSettings,
    complete_figures,
    failed_row,
    pack_models,
    predict_slide,
    run_task,
)
from napari_rckd.inference.cohort_table import write_table

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt",)
TABLE_EVERY_S = 60.0  # cohort.csv is rewritten at most this often while slides finish
POLL_S = 0.5
TASKS_PER_WORKER = 3  # a cohort of few slides is cut into bands until there are this many


def find_slides(path: str | Path) -> list[Path]:
    """The slides of a slide file, a folder of slides, or a .txt list (one path a line,
    relative to the list; blank lines and ``#`` comments skipped)."""
    from napari_rckd.io import SLIDE_SUFFIXES

    path = Path(path).expanduser()
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        slides = [(path.parent / line).absolute() for line in lines if line and line[0] != "#"]
        if not slides:
            raise RckdError(f"slide list {path} names no slides; write one slide path a line.")
        return slides
    if path.is_file():
        return [path.absolute()]
    if not path.is_dir():
        raise RckdError(f"{path} is neither a slide file nor a folder; check the path.")
    slides = sorted(
        p.absolute()
        for p in path.iterdir()
        if p.is_file() and "".join(p.suffixes[-1:]).lower() in SLIDE_SUFFIXES
    )
    if not slides:
        raise RckdError(
            f"folder {path} holds no slide files ({', '.join(sorted(SLIDE_SUFFIXES))}); "
            "point at a slide or a folder of slides."
        )
    return slides


@dataclass
class Plan:
    slides: list[Path]  # all of them, in the order given
    todo: list[Path]
    skipped: list[dict]  # rows of slides complete from an earlier run
    settings: CohortSettings  # with what the models will record (``planned``)


def plan_cohort(slides: list[Path], settings: CohortSettings, described: dict) -> Plan:
    """Which slides to run, given what this run's models would record (`describe_models`)."""
    from napari_rckd.inference.outputs import recover, refuse_existing

    twins = [stem for stem, n in Counter(p.stem for p in slides).items() if n > 1]
    if twins:
        raise RckdError(
            f"several slides are named {twins[0]} (their results would share one name in "
            "--out); rename them or run them into different folders."
        )
    out = Path(settings.out)
    recover(out)  # what a killed run left: finish its publication or remove it
    todo, skipped = [], []
    for path in slides:
        figures = complete_figures(out, path.stem, described)
        if figures is None:
            todo.append(path)
        else:
            models = " | ".join(described["identities"].values())
            skipped.append(dict(file=str(path), status="skipped", **figures, models=models))
    if not settings.overwrite:  # before any work, not after the first slides
        refuse_existing(out, [path.stem for path in todo])
    return Plan(slides, todo, skipped, replace(settings, planned=described))


def open_table(plan: Plan) -> CohortTable:
    """``DIR/cohort.csv`` with every slide (pending, or skipped with its figures), written now:
    a folder that cannot be written into is told before any cluster starts or work is done."""
    rows = {str(path): dict(file=str(path), status="pending") for path in plan.todo}
    rows.update({row["file"]: row for row in plan.skipped})
    table = CohortTable(Path(plan.settings.out), rows, [str(path) for path in plan.slides])
    table.write()
    return table


def run_cohort(
    plan: Plan,
    client=None,
    table: CohortTable | None = None,
    on_slide=None,
    on_tiles=None,
    workers: int | None = None,
) -> list[dict]:
    """Predict ``plan.todo`` (in this process when ``client`` is None), one row per slide;
    ``DIR/cohort.csv`` holds every slide, skipped ones included, when this returns (and the
    slides finished so far if it is interrupted). On a cluster, when there are fewer slides
    than `TASKS_PER_WORKER` × workers (``workers``, or those the scheduler has now), slides
    are cut into bands of tiles (`bands`), merged into the same results."""
    table = table or open_table(plan)
    finished = (
        _in_process(plan, on_tiles)
        if client is None
        else _on_cluster(plan, client, on_tiles, workers)
    )
    try:
        for row in finished:
            table.rows[row["file"]] = row
            if on_slide is not None:
                on_slide(row)
            table.write(soon=True)
    finally:
        finished.close()  # interrupted: the cluster's tasks of this run are cancelled
        table.write()
    if client is not None:
        from napari_rckd.inference.outputs import recover

        recover(table.out)  # staging folders of workers that died mid-slide
    return [table.rows[key] for key in table.order]


def _in_process(plan: Plan, on_tiles=None):
    for path in plan.todo:
        try:
            yield predict_slide(path, plan.settings, on_tiles=_tiles_callback(on_tiles))
        except RckdError as error:
            yield failed_row(path, str(error))
        except Exception as error:  # noqa: BLE001  (one slide's bug must not end the cohort)
            log.debug("slide %s failed", path, exc_info=True)
            yield failed_row(path, f"{path.name} failed: {type(error).__name__}: {error}.")


def _tiles_callback(on_tiles):
    if on_tiles is None:
        return None
    return lambda new, done, total: on_tiles(new)


def bands_wanted(slides: int, workers: int) -> int:
    """Bands per slide so that a cohort of few slides still gives every worker work: about
    `TASKS_PER_WORKER` tasks a worker in all; one (the whole slide) once slides are enough,
    and on one worker (nothing to balance: bands would only cost their merge)."""
    if workers <= 1:
        return 1
    return max(1, -(-TASKS_PER_WORKER * workers // max(1, slides)))


def _on_cluster(plan: Plan, client, on_tiles=None, workers: int | None = None):
    from distributed import as_completed

    settings = replace(plan.settings, models=pack_models(plan.settings.models))
    run = uuid.uuid4().hex[:8]
    # A task, not scattered data: the scheduler keeps what makes it, so a worker that dies
    # holding the only copy costs a recomputation, not the slides that need it. Each worker
    # fetches it (checkpoints included) once.
    shared = client.submit(_settings, settings, key=f"settings-{run}")
    wanted = bands_wanted(
        len(plan.todo), max(workers or 0, len(client.scheduler_info()["workers"]))
    )
    futures, every = {}, []  # the future of each slide's row; every future of this run
    for path in plan.todo:
        count = count_bands(path, settings, wanted)
        if count == 1:
            task = (run_task, str(path), shared)
        else:  # bands, then their merge (which waits for them)
            parts = [
                client.submit(
                    band_task,
                    str(path),
                    shared,
                    band,
                    count,
                    pure=False,
                    retries=1,
                    key=f"band-{path.stem}-{band}-{run}",
                )  # fmt: skip
                for band in range(count)
            ]
            every += parts
            task = (merge_task, str(path), shared, parts)
        future = client.submit(*task, pure=False, retries=1, key=f"predict-{path.stem}-{run}")
        futures[future] = path
        every.append(future)
    heard = {"tiles": 0}
    client.subscribe_topic(TILES_TOPIC, lambda event: heard.update(tiles=heard["tiles"] + event[1]))
    try:
        pending = as_completed(futures)
        while not pending.is_empty():
            ready = pending.next_batch(block=False)
            if heard["tiles"] and on_tiles is not None:
                tiles, heard["tiles"] = heard["tiles"], 0
                on_tiles(tiles)
            for future in ready:
                yield _row(future, futures[future])
            if not ready:
                time.sleep(POLL_S)
    finally:
        client.unsubscribe_topic(TILES_TOPIC)
        unfinished = [future for future in every if not future.done()]
        if unfinished:  # interrupted: the cluster stops working for us
            client.cancel(unfinished)


def _settings(settings: CohortSettings) -> CohortSettings:
    return settings


def _row(future, path: Path) -> dict:
    if future.status == "finished":
        return future.result()
    error = future.exception() if future.status == "error" else None
    why = f"{type(error).__name__}: {error}" if error is not None else f"task {future.status}"
    return failed_row(path, f"{path.name} failed twice on the cluster: {why}.")


class CohortTable:
    """cohort.csv and cohort.html, rewritten atomically: at the start, now and then, and at
    the end."""

    def __init__(self, out: Path, rows: dict, order: list[str]):
        self.out, self.rows, self.order = out, rows, order
        self.thumbnails: dict = {}  # file -> its picture in cohort.html, read once
        self.written = 0.0

    def write(self, soon: bool = False) -> None:
        if soon and time.monotonic() - self.written < TABLE_EVERY_S:
            return
        from napari_rckd.inference.outputs import write_failure

        try:
            self.out.mkdir(parents=True, exist_ok=True)
            write_table(self.out, (self.rows[key] for key in self.order))
            write_report(self.out, self.thumbnails)
        except OSError as error:
            raise RckdError(write_failure(self.out, "the cohort", error)) from error
        self.written = time.monotonic()
