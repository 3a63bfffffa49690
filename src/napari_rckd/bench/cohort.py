"""Cohorts on Dask distributed: slides per hour in this process and on LocalClusters of 1 and
2 workers, side by side on the same cohort in one run, and what 10,000 slides would take.

The cohort is ``--slides`` synthetic slides of ``--size`` px at 0.5 µm/px (generated once into
the sample cache), predicted with a fast model (``--nuclei classical``) into a fresh folder per
run, exactly as `predict --cluster` runs them (`inference.cohort`). Each mode runs ``--rounds``
times, in the order in-process, local:1, local:2, then back, and its fastest run is reported
(a machine shared with other jobs slows runs at random). Per run: seconds (after the
cluster is up and its workers have imported napari-rckd and built the models, as this process
has before the in-process run: ``start_s`` and ``warm_s`` say what that took), slides per
hour, tiles/s, Dask tasks per slide (a cohort of few slides on more workers is cut into bands
of tiles) and the peak RSS of each worker. Then:

* the Dask overhead, ``local:1`` ÷ in-process slides per hour (goal ≥ 0.95), and the scaling of
  ``local:2`` over ``local:1`` on this machine's cores (the in-process run gets the torch
  threads of ``local:1``'s one worker, so the two differ only by Dask);
* the scheduler's overhead per task: ``--empty-tasks`` tasks that do nothing through
  ``local:1``'s scheduler;
* the peak RSS of the ``local:1`` worker after the cohort, and again after one more slide
  of ``--large-size`` px on the same worker: the same figure when whole-slide memory is flat
  in slide size (a peak can only grow, so a larger slide that needed more would show);
* an estimate of 10,000 slides on 16 workers like this machine's one worker, from the measured
  seconds per slide and per tile.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from napari_rckd.errors import RckdError

MODES = ("none", "local:1", "local:2")
SEEDS = (1, 3, 4, 5, 7, 8, 9, 11)  # synthetic slides with tissue at 2048 px and above
ESTIMATE_SLIDES, ESTIMATE_WORKERS = 10_000, 16
TYPICAL_TILES = 5_000  # tissue tiles (256² at 0.5 µm/px) of a large resection slide, ~0.8 cm²


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slides", type=int, default=2, help="slides in the cohort (default 2)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="runs of each mode, in the order none, local:1, local:2 then back (default 2); the "
        "fastest counts, so a machine that other jobs load slows every mode alike",
    )
    parser.add_argument("--size", type=int, default=2048, help="their side in px (default 2048)")
    parser.add_argument(
        "--large-size",
        type=int,
        default=4096,
        help="side of one larger slide for the worker's peak RSS (default 4096)",
    )
    parser.add_argument("--nuclei", default="classical", help="nuclei model (default classical)")
    parser.add_argument("--slide-mpp", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--empty-tasks", type=int, default=500, help="tasks timing the scheduler (default 500)"
    )


def run(args: argparse.Namespace) -> int:
    from napari_rckd.report import report

    if args.slides < 1 or args.large_size < 1:
        raise RckdError("bench cohort needs --slides 1 or more and a --large-size in px.")
    slides = [slide_for(args.size, SEEDS[k % len(SEEDS)]) for k in range(args.slides)]
    from napari_rckd.inference.clusters import local_workers

    runs, extra = {mode: [] for mode in MODES}, {"threads per worker": local_workers("local:1")[1]}
    for turn in range(max(1, args.rounds)):
        for mode in MODES if turn % 2 == 0 else MODES[::-1]:
            row, client_extra = _cohort_run(mode, slides, args, first=not runs[mode])
            runs[mode].append(row)
            extra.update(client_extra)
    rows = []
    for mode in MODES:  # the fastest run of each mode, with the seconds of every run
        best = min(runs[mode], key=lambda row: row["run_s"])
        rows.append(dict(best, runs_s=" ".join(str(row["run_s"]) for row in runs[mode])))
    summary = summarize(rows, extra, [args.size, args.large_size])
    report("Cohorts on Dask: in-process, local:1, local:2", rows, args.json, **summary)
    return 0


def slide_for(size: int, seed: int) -> Path:
    """A cached synthetic slide (a test may put its own slides here)."""
    from napari_rckd.io.samples import synthetic_slide_path

    return synthetic_slide_path(size, seed)


def _cohort_run(mode: str, slides: list[Path], args, first: bool) -> tuple[dict, dict]:
    from napari_rckd.inference.clusters import local_workers, open_client
    from napari_rckd.inference.cohort import plan_cohort, run_cohort
    from napari_rckd.inference.cohort_slide import THREADS_VARIABLE, CohortSettings, describe_models

    extra = {}
    with tempfile.TemporaryDirectory(prefix="rckd-cohort-") as out:
        settings = CohortSettings(dict(nuclei=args.nuclei), out, slide_mpp=args.slide_mpp)
        plan = plan_cohort(slides, settings, describe_models(settings))
        threads = str(local_workers("local:1")[1])
        before = os.environ.get(THREADS_VARIABLE)
        started = time.perf_counter()
        try:
            if mode == "none":  # the threads of local:1's one worker, for a fair ratio
                os.environ[THREADS_VARIABLE] = threads
            with open_client(mode) as client:
                up = time.perf_counter()
                if client is not None:  # each worker imports and builds the models once, as
                    client.run(_warm, plan.settings)  # describe_models did here: timed apart
                warm = time.perf_counter()
                rows = run_cohort(plan, client)
                seconds = time.perf_counter() - warm
                rss = _peak_rss_mb(client)
                if mode == "local:1" and first:
                    extra.update(_worker_figures(client, slides, args, out, rss))
        finally:
            if before is None:
                os.environ.pop(THREADS_VARIABLE, None)
            else:
                os.environ[THREADS_VARIABLE] = before
    done = [row for row in rows if row["status"] == "done"]
    if len(done) != len(rows):
        why = next(row.get("error") for row in rows if row["status"] != "done")
        raise RckdError(f"bench cohort: a slide failed with --cluster {mode}: {why}")
    tiles = sum(row["tiles"] for row in done)
    tasks = [row["bands"] + 1 if row["bands"] > 1 else 1 for row in done]
    row = dict(
        cluster=mode,
        slides=len(done),
        tiles=tiles,
        start_s=round(up - started, 1),
        warm_s=round(warm - up, 1),
        run_s=round(seconds, 1),
        slides_per_h=round(3600 * len(done) / seconds, 1),
        tiles_per_s=round(tiles / seconds, 2),
        tasks_per_slide=round(sum(tasks) / len(tasks), 2),
        peak_rss_mb=rss,
    )
    return row, extra


def _worker_figures(client, slides, args, out: str, rss: int) -> dict:
    """The scheduler's overhead per task, and the worker's peak RSS after the cohort and after
    one larger slide."""
    from napari_rckd.inference.cohort import plan_cohort, run_cohort
    from napari_rckd.inference.cohort_slide import CohortSettings, describe_models

    figures = {"scheduler overhead per task (ms)": _task_overhead_ms(client, args.empty_tasks)}
    large = slide_for(args.large_size, SEEDS[len(slides) % len(SEEDS)])
    settings = CohortSettings(
        dict(nuclei=args.nuclei), str(Path(out) / "large"), slide_mpp=args.slide_mpp
    )
    [row] = run_cohort(plan_cohort([large], settings, describe_models(settings)), client)
    if row["status"] != "done":
        raise RckdError(f"bench cohort: the {args.large_size}² slide failed: {row.get('error')}")
    figures[f"worker peak RSS after {args.size}² slides (MB)"] = rss
    figures[f"worker peak RSS after a {args.large_size}² slide too (MB)"] = _peak_rss_mb(client)
    return figures


def _warm(settings) -> None:
    from napari_rckd.inference.cohort_slide import load_sources

    load_sources(settings)


def _peak_rss_mb(client) -> int:
    """The largest peak RSS of the workers (of this process in-process), MB."""

    def peak() -> int:
        # VmHWM: this process's own peak. ru_maxrss of a spawned worker would start at the RSS
        # its parent had when it forked (Linux keeps the high-water mark across exec).
        status = Path("/proc/self/status")
        if status.is_file():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

    if client is None:
        return peak()
    return max(client.run(peak).values())


def _task_overhead_ms(client, count: int) -> float:
    """Milliseconds a task costs the scheduler and a worker when it does nothing."""
    from distributed import wait

    wait(client.map(_nothing, range(20), pure=False))  # warm up
    started = time.perf_counter()
    wait(client.map(_nothing, range(count), pure=False))
    return round(1000 * (time.perf_counter() - started) / count, 2)


def _nothing(index: int) -> int:
    return index


def summarize(rows: list[dict], extra: dict, sizes: list[int]) -> dict:
    """The ratios and the estimate printed under the table."""
    by = {row["cluster"]: row for row in rows}
    one, alone, two = by["local:1"], by["none"], by["local:2"]
    summary = dict(extra)
    summary["Dask overhead: local:1 ÷ in-process slides/h (goal ≥ 0.95)"] = round(
        one["slides_per_h"] / alone["slides_per_h"], 3
    )
    summary["local:2 ÷ local:1 slides/h"] = round(two["slides_per_h"] / one["slides_per_h"], 2)
    small = extra.get(f"worker peak RSS after {sizes[0]}² slides (MB)")
    large = extra.get(f"worker peak RSS after a {sizes[1]}² slide too (MB)")
    if small and large:
        summary[f"worker peak RSS {sizes[1]}² ÷ {sizes[0]}²"] = round(large / small, 2)
    per_slide = one["run_s"] / one["slides"]  # one worker's seconds per slide, Dask included
    per_tile = one["run_s"] / one["tiles"]
    overhead = extra.get("scheduler overhead per task (ms)")
    threads = extra.get("threads per worker", "?")
    hours = ESTIMATE_SLIDES * per_slide / ESTIMATE_WORKERS / 3600
    typical = ESTIMATE_SLIDES * per_tile * TYPICAL_TILES / ESTIMATE_WORKERS / 3600
    text = (
        f"{ESTIMATE_SLIDES:,} slides on {ESTIMATE_WORKERS} workers like local:1's one "
        f"({threads} threads): "
        f"{hours:.1f} h for slides like these ({per_slide:.1f} s a slide a worker), "
        f"{typical:,.0f} h for slides of {TYPICAL_TILES:,} tissue tiles "
        f"({1000 * per_tile:.0f} ms a tile a worker)"
    )
    if overhead:
        share = overhead / 1000 * one["tasks_per_slide"] / per_slide
        text += f"; the scheduler's share {100 * share:.2f} % of a slide"
    summary["estimate"] = text
    return summary
