"""Weights that ship inside the package: where each one lives, and one sentence when it is gone.

``learned`` is the learned nuclei teacher and ``csat`` the RCKD stage-1 CSAT distilled from it
(docs/teachers.md says how both were trained, on what data and under which licence). They load
from the installed package, never from the network.
"""

from __future__ import annotations

from pathlib import Path

from napari_rckd.errors import RckdError

SHIPPED_DIR = Path(__file__).with_name("shipped")
SHIPPED = {
    "learned": "nuclei-teacher.safetensors",
    "csat": "rckd-csat-stage1.safetensors",
}


def shipped_weights(name: str) -> Path:
    """The packaged weight file of ``name`` (``learned`` or ``csat``)."""
    if name not in SHIPPED:
        raise RckdError(f"no shipped weights are called {name!r}; use one of {', '.join(SHIPPED)}")
    path = SHIPPED_DIR / SHIPPED[name]
    if not path.is_file():
        raise RckdError(
            f"the shipped {name!r} weights {path} are missing from this installation; "
            "reinstall napari-rckd (pip install --force-reinstall napari-rckd)"
        )
    return path
