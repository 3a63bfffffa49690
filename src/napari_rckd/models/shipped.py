"""Weights that ship inside the package: where they live, and one sentence when one is gone.

Which name has which file is the zoo's to say (`napari_rckd.zoo`); ``learned`` is the learned
nuclei teacher and ``csat`` the RCKD stage-1 CSAT distilled from it, whose nuclei weights and
stage-2 start may be two files (docs/teachers.md says how each was trained, on what data and
under which licence). They load from the installed
package, never from the network.
"""

from __future__ import annotations

from pathlib import Path

from napari_rckd import zoo
from napari_rckd.errors import RckdError

SHIPPED_DIR = Path(__file__).with_name("shipped")


def weights_path(name: str, stage2: bool = False) -> Path:
    """Where the zoo's ``name`` keeps its packaged nuclei weights, or with ``stage2`` the
    student that starts stage 2 under that name (whether or not the file is there)."""
    model = zoo.get(name)
    file = model.stage2_weights if stage2 else model.weights
    if file is None:
        role = "stage-2 start" if stage2 else "nuclei model"
        have = [m.name for m in zoo.models() if (m.stage2_weights if stage2 else m.weights)]
        raise RckdError(f"no shipped {role} is called {name!r}; use one of {', '.join(have)}")
    return SHIPPED_DIR / file


def shipped_weights(name: str, stage2: bool = False) -> Path:
    """The packaged weight file of the zoo's ``name`` (``learned``, ``csat``, ``builtin``), or
    with ``stage2`` of its stage-2 start (``csat``)."""
    path = weights_path(name, stage2)
    if not path.is_file():
        raise RckdError(
            f"the shipped {name!r} weights {path} are missing from this installation; "
            "reinstall napari-rckd (pip install --force-reinstall napari-rckd)"
        )
    return path
