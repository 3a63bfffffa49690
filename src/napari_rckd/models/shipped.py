"""Weights that ship inside the package: where they live, and one sentence when one is gone.

Which name has which file is the zoo's to say (`napari_rckd.zoo`); ``learned`` is the learned
nuclei teacher and ``csat`` the RCKD stage-1 CSAT distilled from it (docs/teachers.md says how
both were trained, on what data and under which licence). They load from the installed
package, never from the network.
"""

from __future__ import annotations

from pathlib import Path

from napari_rckd import zoo
from napari_rckd.errors import RckdError

SHIPPED_DIR = Path(__file__).with_name("shipped")


def weights_path(name: str) -> Path:
    """Where the zoo's ``name`` keeps its packaged weights (whether or not the file is there)."""
    model = zoo.get(name)
    if model.weights is None:
        shipped = ", ".join(m.name for m in zoo.models() if m.weights)
        raise RckdError(f"no shipped weights are called {name!r}; use one of {shipped}")
    return SHIPPED_DIR / model.weights


def shipped_weights(name: str) -> Path:
    """The packaged weight file of the zoo's ``name`` (``learned``, ``csat``, ``builtin``)."""
    path = weights_path(name)
    if not path.is_file():
        raise RckdError(
            f"the shipped {name!r} weights {path} are missing from this installation; "
            "reinstall napari-rckd (pip install --force-reinstall napari-rckd)"
        )
    return path
