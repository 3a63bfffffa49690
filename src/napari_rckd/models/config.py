"""ModelConfig: everything needed to rebuild a model and feed it correctly, as plain JSON data."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from napari_rckd.defaults import DECODERS, HEADS
from napari_rckd.errors import RckdError

TASKS = ("dense", "classify")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Distinct colours for classes whose colour the user did not choose (napari accepts hex strings).
DEFAULT_COLORS = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
    "#008080",
)
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class ModelConfig:
    """What a model is (task, backbone, outputs) and what it expects (resolution, normalisation).

    ``num_outputs`` is the number of classes for ``classify`` and of output channels for
    ``dense`` (channel 0 = the teacher's nuclear probability in RCKD stage 1). Missing class
    names and colours are filled in, so a saved config is always complete.
    """

    task: str = "dense"
    backbone: str = "rckd_csat"
    num_outputs: int = 1
    class_names: list[str] = field(default_factory=list)
    class_colors: list[str] = field(default_factory=list)
    input_mpp: float = 0.5
    tile_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # classify: pool the deepest features ("last") or every stage's ("pyramid"). "last" is the
    # default because checkpoints written before the choice existed are "last" models.
    head: str = "last"
    # dense: the decoder's widths (`models.assembly.decoder_widths`); "standard" is the default
    # for the same reason.
    decoder: str = "standard"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise RckdError(f"ModelConfig task {self.task!r} is unknown; use one of {TASKS}.")
        if self.head not in HEADS:
            raise RckdError(f"ModelConfig head {self.head!r} is unknown; use one of {HEADS}.")
        if self.decoder not in DECODERS:
            raise RckdError(
                f"ModelConfig decoder {self.decoder!r} is unknown; use one of {DECODERS}."
            )
        if not isinstance(self.num_outputs, int) or self.num_outputs < 1:
            raise RckdError(
                f"ModelConfig num_outputs={self.num_outputs!r} must be an integer >= 1."
            )
        self.class_names = list(self.class_names) or [f"class_{i}" for i in range(self.num_outputs)]
        self.class_colors = list(self.class_colors) or [
            DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(self.num_outputs)
        ]
        for name, values in (
            ("class_names", self.class_names),
            ("class_colors", self.class_colors),
        ):
            if len(values) != self.num_outputs:
                raise RckdError(
                    f"ModelConfig {name} has {len(values)} entries but num_outputs is "
                    f"{self.num_outputs}; give one per output."
                )
        bad = [c for c in self.class_colors if not _HEX_COLOR.match(str(c))]
        if bad:
            raise RckdError(f"ModelConfig class_colors {bad} are not '#rrggbb' hex colours.")
        if not self.input_mpp > 0 or not self.tile_size > 0:
            raise RckdError(
                f"ModelConfig input_mpp={self.input_mpp} and tile_size={self.tile_size} must be > 0."
            )
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise RckdError(
                f"ModelConfig mean={self.mean} and std={self.std} need 3 values each (RGB), std > 0."
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RckdError(
                f"model config has unknown fields {unknown}; it was written by a newer or "
                "different program; upgrade napari-rckd or remove them."
            )
        return cls(**data)
