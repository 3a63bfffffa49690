"""The tables of `bench transfer`: scores per init and budget, and paired differences to `none`.

Runs of two inits with the same seed and fold trained on the same groups and were tested on
the same tiles, so their difference removes most of the luck of the draw; the 95 % interval
of the mean difference is Student's t over those pairs (none with a single pair). The metrics
are those the rows hold: a classification run's or a segmentation run's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

# Per task, in table order; rows of one file hold one task's (their settings must agree).
METRICS = {
    "classify": ("balanced_accuracy", "macro_f1"),
    "segment": ("miou", "iou_benign", "iou_tumour"),
}
BASELINE = "none"


def row_metrics(rows: Sequence[dict]) -> tuple[str, ...]:
    """The metrics of ``rows``: the first task whose primary metric they all hold."""
    for names in METRICS.values():
        if rows and all(names[0] in row for row in rows):
            return names
    return ()


def _mean_sd(values: Sequence[float]) -> str:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.3f} ± {sd:.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def summary_rows(rows: Sequence[dict]) -> list[dict]:
    """One row per init and budget: mean ± sd of each metric over seeds and folds."""
    cells: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for row in rows:
        cells[(row["init"], row["budget"])].append(row)
    table, metrics = [], row_metrics(rows)
    for (init, budget), runs in sorted(cells.items(), key=lambda item: (item[0][1], item[0][0])):
        line = {"init": init, "budget": budget, "runs": len(runs)}
        line["n_train"] = round(float(np.mean([r["n_train"] for r in runs])))
        for metric in metrics:
            line[metric] = _mean_sd([r[metric] for r in runs])
        table.append(line)
    return table


def t_interval(differences: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of paired differences (NaN bounds for one pair)."""
    from scipy import stats

    values = np.asarray(differences, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def paired_rows(rows: Sequence[dict]) -> list[dict]:
    """Per init other than `none` and budget: the mean paired difference to `none`, with
    its 95 % interval, for each metric."""
    runs = {(r["init"], r["budget"], r["seed"], r["fold"]): r for r in rows}
    table, metrics = [], row_metrics(rows)
    inits = sorted({r["init"] for r in rows} - {BASELINE})
    for budget in sorted({r["budget"] for r in rows}):
        for init in inits:
            pairs = [
                (run, runs[(BASELINE, budget, seed, fold)])
                for (name, b, seed, fold), run in runs.items()
                if name == init and b == budget and (BASELINE, budget, seed, fold) in runs
            ]
            if not pairs:
                continue
            line = {"init": f"{init} - {BASELINE}", "budget": budget, "pairs": len(pairs)}
            for metric in metrics:
                mean, low, high = t_interval([a[metric] - b[metric] for a, b in pairs])
                interval = "n/a" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"
                line[metric] = f"{mean:+.3f} {interval}"
            table.append(line)
    return table
