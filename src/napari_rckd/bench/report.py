"""Kept for old imports: table printing moved to ``napari_rckd.report`` (commands use it too)."""

from napari_rckd.report import format_table, machine_summary, report

__all__ = ["format_table", "machine_summary", "report"]
