"""What the "Analyze slide" widget offers, without Qt: devices found, recent models, mpp guesses.

Kept apart from the widget so the choices are plain data a test (or a script) can check.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from napari_rckd import zoo
from napari_rckd.defaults import DEFAULT_NUCLEI, KINDS

log = logging.getLogger(__name__)

# The zoo's nuclei models for a list, as (label, spec): the default first (docs/teachers.md
# compares them).
NUCLEI_MODELS = (
    ("automatic (by device)", DEFAULT_NUCLEI),
    *((model.label, model.name) for model in zoo.models() if model.menu),
)
RECENT_LIMIT = 8
__all__ = ["KINDS", "NUCLEI_MODELS", "DeviceChoice", "RecentModels", "detect_devices"]


@dataclass(frozen=True)
class DeviceChoice:
    spec: str  # what ModelRunner accepts: auto, cpu, cuda:0, mps
    label: str  # what the user sees, e.g. "auto (cuda: NVIDIA H200)"


def detect_devices() -> list[DeviceChoice]:
    """``auto`` (naming what it resolves to), then every device torch can use here."""
    import torch

    found = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        found.append(
            DeviceChoice(f"cuda:{index}", f"cuda:{index} ({torch.cuda.get_device_name(index)})")
        )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(DeviceChoice("mps", "mps (Apple GPU)"))
    found.append(DeviceChoice("cpu", f"cpu ({os.cpu_count()} cores)"))
    return [DeviceChoice("auto", f"auto: {found[0].label}"), *found]


def config_dir() -> Path:
    """Where the widget remembers things between sessions (``NAPARI_RCKD_CONFIG`` overrides)."""
    default = Path.home() / ".config" / "napari-rckd"
    return Path(os.environ.get("NAPARI_RCKD_CONFIG", default))


class RecentModels:
    """The last few checkpoints used per kind (nuclei, subtype, region), kept in a JSON file."""

    def __init__(self, path: Path | None = None):
        self.path = path or config_dir() / "recent_models.json"
        self.models: dict[str, list[str]] = {kind: [] for kind in KINDS}
        try:
            stored = json.loads(self.path.read_text())
            for kind in KINDS:
                self.models[kind] = [str(p) for p in stored.get(kind, [])][:RECENT_LIMIT]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as error:  # a broken file is not fatal
            log.warning("ignoring unreadable recent-models file %s: %s", self.path, error)

    def get(self, kind: str) -> list[str]:
        """Recent checkpoints of ``kind`` that still exist, newest first."""
        return [p for p in self.models[kind] if Path(p).is_file()]

    def add(self, kind: str, path: str | Path) -> None:
        path = str(Path(path).expanduser().resolve())
        self.models[kind] = [path, *(p for p in self.models[kind] if p != path)][:RECENT_LIMIT]
        from napari_rckd.atomic import write_json_atomic

        try:
            write_json_atomic(self.path, self.models)
        except OSError as error:
            log.warning("could not remember recent models in %s: %s", self.path, error)


# Typical scanner resolutions by objective: 40x ~0.25 µm/px, 20x ~0.5, 10x ~1.0.
OBJECTIVES = (40, 20, 10)


def mpp_suggestions(magnification: float | None) -> list[tuple[str, float]]:
    """(label, µm/px) guesses for a slide without a recorded pixel size, best first.

    The slide's own objective (when the file records one) comes first as 10 / magnification.
    """
    found = [(f"{obj}x objective", 10 / obj) for obj in OBJECTIVES]
    if magnification:
        mine = (f"{magnification:g}x (from the file)", 10 / magnification)
        found = [mine, *(f for f in found if abs(f[1] - mine[1]) > 1e-9)]
    return [(f"{label}: {mpp:g} µm/px", mpp) for label, mpp in found]


def nuclei_mpp_suggestion(slide) -> tuple[str, float] | None:
    """(label, µm/px) estimated from the size of the nuclei in the slide's pixels (the
    estimate stage 2 uses for data without a pixel size); None when it finds no tissue."""
    from napari_rckd.io.nuclei_scale import estimate_mpp, slide_images

    estimate = estimate_mpp(slide_images(slide))
    if estimate.mpp is None:
        return None
    mpp = round(estimate.mpp, 3)
    how = "from its nuclei" if estimate.sure else "from its nuclei, unsure"
    return f"{how}: {mpp:g} µm/px", mpp
