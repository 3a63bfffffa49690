"""Dependencies point one way: widgets -> inference/training -> models/io. Checked on the source
(imports anywhere in a module, lazy ones included), so a sideways import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_rckd"
GUI = ("qtpy", "napari", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        hits = [m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden)]
        if hits:
            bad[str(path.relative_to(PACKAGE))] = sorted(hits)
    return bad


@pytest.mark.parametrize("folder", ["io", "models", "teachers", "training", "inference", "metrics"])
def test_the_core_imports_no_gui_and_no_front_end(folder):
    front_ends = ("napari_rckd.commands", "napari_rckd._widgets", "napari_rckd.bench")
    assert offenders(folder, GUI + front_ends) == {}


def test_io_does_not_import_the_engine_above_it():
    assert offenders("io", ("napari_rckd.inference", "napari_rckd.training")) == {}


def test_widgets_call_the_engine_not_the_command_line():
    assert offenders("_widgets", ("napari_rckd.commands",)) == {}


def test_commands_print_tables_without_the_benchmarks():
    assert offenders("commands", ("napari_rckd.bench",)) == {}
