"""Tables for commands and benchmarks: an aligned Markdown table printed, and optional JSON."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_rckd.atomic import write_json_atomic


def machine_summary() -> dict[str, Any]:
    """What the figures were measured on, so a table is never quoted without it."""
    summary: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        summary["torch"] = torch.__version__
        summary["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            summary["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return summary


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render rows as a Markdown table (readable in a terminal, pasteable into docs)."""
    if not rows:
        return "(no rows)"
    # The union of the rows' keys, in first-seen order: rows of one table may differ.
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, list | tuple):  # per-round values: short, space-separated
            return " ".join(cell(v) for v in value)
        return "" if value is None else str(value)

    body = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += [
        "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in body
    ]
    return "\n".join(lines)


def report(
    title: str,
    rows: Sequence[dict[str, Any]],
    json_path: str | None,
    json_extra: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Print the table under a title; write title, rows, machine and extras to JSON if asked.

    ``json_extra`` goes to the JSON only (detail too long for a terminal, e.g. per-image rows).
    """
    print(f"\n{title}\n")
    print(format_table(rows))
    for key, value in extra.items():
        print(f"{key}: {value}")
    if json_path:
        payload = {"title": title, "rows": list(rows), "machine": machine_summary(), **extra}
        payload.update(json_extra or {})
        write_json_atomic(Path(json_path), payload)
