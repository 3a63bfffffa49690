"""Continue a `bench transfer` run from its --json file instead of starting over.

Its runs are long (minutes each on a CPU), so an interrupted or extended experiment (more
seeds, another budget) keeps every finished run whose settings match, and trains only the
jobs it lacks. Results are never overwritten unasked: an existing --json needs --resume.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_rckd.errors import RckdError

# Settings that change what a run computes; inits, budgets and seeds only choose the jobs.
SAME_RESULT = (
    "task", "train", "test", "folds", "backbone", "steps", "tile_size", "batch_size", "mpp",
    "data_mpp", "read_mpp", "lr", "head", "pretrained_backbone_lr", "grid", "benign",
)  # fmt: skip
# What a file written before --task existed ran (grid and benign are absent in classify runs).
BEFORE = {"task": "classify"}


def finished_rows(json_path: str | None, resume: bool, settings: dict) -> list[dict]:
    """The rows already in ``json_path`` that this run may keep; [] for a new file."""
    if resume and not json_path:
        raise RckdError("--resume continues the runs in a --json file; give that file with --json")
    if not json_path or not Path(json_path).exists():
        return []
    if not resume:
        raise RckdError(
            f"{json_path} already holds bench transfer results; pass --resume to continue "
            "them or choose another --json file"
        )
    try:
        saved = json.loads(Path(json_path).read_text())
        old, rows = saved["settings"], saved["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RckdError(
            f"cannot resume from {json_path}: it is not a bench transfer result ({exc}); "
            "choose another --json file"
        ) from None
    if "read_mpp" not in old:  # written before the scale rule: --data-mpp, else squashed
        old["read_mpp"] = [old["data_mpp"]] if old.get("data_mpp") else "squashed"
    old = {k: old.get(k, BEFORE.get(k, settings.get(k))) for k in SAME_RESULT}
    differ = [k for k in SAME_RESULT if old[k] != settings.get(k)]
    if differ:
        raise RckdError(
            f"cannot resume from {json_path}: its runs used other settings "
            f"({', '.join(f'{k}={old[k]!r}' for k in differ)}); use the same flags or "
            "another --json file"
        )
    return rows


def job_key(row_or_job) -> tuple:
    """What identifies a run across invocations: init name, budget, seed and fold."""
    if isinstance(row_or_job, dict):
        row = row_or_job
        return row["init"], float(row["budget"]), row["seed"], row["fold"]
    return row_or_job.init, float(row_or_job.budget), row_or_job.seed, row_or_job.fold
