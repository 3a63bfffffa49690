"""Dependencies point one way: widgets -> inference/training -> teachers/models -> io. Checked on
the source with ``ast`` (imports anywhere in a module, lazy ones inside functions included), so
a sideways or upward import, or a circle of imports, fails here."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_rckd"
GUI = ("qtpy", "napari", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6")
# The engine: what runs headless on a GPU node, below the widgets and the command line.
ENGINE = ("io", "models", "teachers", "training", "inference", "metrics")
# Modules at the package root that every layer may use (they import only each other).
BASE = ("atomic", "defaults", "devices", "errors", "files", "limits", "report", "zoo")
# Circles not yet broken, each named with where it is being worked on; an entry that no longer
# holds fails the test, so it is removed once its circle is gone.
KNOWN_CIRCLES: set[frozenset[str]] = set()


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


def module_name(path: Path) -> str:
    """``teachers/network.py`` -> ``teachers.network``; a package's ``__init__`` is the package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Every module of the package -> the package's modules it imports (``from pkg import sub``
    is an import of ``pkg.sub``; of a name, one of ``pkg``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}

    def own(name: str) -> str | None:
        inside = name.removeprefix("napari_rckd").lstrip(".")
        return inside if name.startswith("napari_rckd") and inside in modules else None

    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {own(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [own(f"{node.module}.{alias.name}") for alias in node.names]
                edges |= set(subs) if all(subs) else {*subs, own(node.module)}
        graph[name] = frozenset(edges - {name, None})
    return graph


def circles(graph: dict[str, frozenset[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    order, low, on_stack, stack, found = {}, {}, set(), [], set()
    for root in graph:
        if root in order:
            continue
        work = [(root, iter(sorted(graph[root])))]
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in order:
                    order[child] = low[child] = len(order)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], order[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == order[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def arrows(source: str, forbidden: tuple[str, ...]) -> list[str]:
    """``a -> b`` for each import from a module under ``source`` into one under ``forbidden``."""

    def under(module: str, layer: str) -> bool:
        return module == layer or module.startswith(layer + ".")

    return [
        f"{module} -> {target}"
        for module, targets in sorted(import_graph().items())
        if under(module, source)
        for target in sorted(targets)
        if any(under(target, layer) for layer in forbidden)
    ]


def test_the_graph_sees_lazy_imports_and_submodules():
    graph = import_graph()
    assert "teachers.network" in graph["teachers"]  # imported inside get_teacher's helpers
    assert "zoo" in graph["teachers"] and "devices" in graph["models.runner"]


def test_circles_finds_a_circle_and_nothing_else():
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert circles(graph) == {frozenset({"a", "b", "c"})}


def test_no_module_imports_itself_back_through_others():
    assert circles(import_graph()) == KNOWN_CIRCLES


@pytest.mark.parametrize("folder", ENGINE)
def test_the_core_imports_no_gui_and_no_front_end(folder):
    front_ends = ("napari_rckd.commands", "napari_rckd._widgets", "napari_rckd.bench")
    assert offenders(folder, GUI + front_ends) == {}


@pytest.mark.parametrize("module", BASE)
def test_the_base_modules_import_no_gui_and_no_layer(module):
    assert not [m for m in imports(PACKAGE / f"{module}.py") if m.split(".")[0] in GUI]
    assert set(import_graph()[module]) <= set(BASE)


@pytest.mark.parametrize("layer", ["teachers", "models"])
def test_teachers_and_models_import_neither_inference_nor_training(layer):
    assert arrows(layer, ("inference", "training")) == []


def test_models_do_not_import_teachers():
    assert arrows("models", ("teachers",)) == []


def test_io_does_not_import_the_engine_above_it():
    assert arrows("io", ("inference", "training", "teachers", "models")) == []


def test_widgets_call_the_engine_not_the_command_line():
    assert arrows("_widgets", ("commands",)) == []
    assert offenders("_widgets", ("napari_rckd.commands",)) == {}


def test_commands_print_tables_without_the_benchmarks():
    assert offenders("commands", ("napari_rckd.bench",)) == {}
