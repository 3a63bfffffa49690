"""Which device computes, and where torchrun put this process: one place for both.

``resolve_device`` serves inference, training and the widgets alike: ``auto`` picks CUDA, then
MPS, then the CPU; an explicit device must exist on this machine. ``launch`` is the one reader
of torchrun's RANK, WORLD_SIZE and LOCAL_RANK. Cheap to import: torch is imported only when a
device is resolved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from napari_rckd.errors import RckdError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(spec: str | None = "auto", local_rank: int | None = None) -> str:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist. With
    ``local_rank`` (a torchrun process, or training's one process as rank 0), ``auto`` and a
    bare ``cuda`` name that process's GPU, ``cuda:<local_rank>``."""
    import torch

    spec = (spec or "auto").lower()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    cuda = "cuda" if local_rank is None else f"cuda:{local_rank}"
    if spec == "auto":
        return cuda if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    kind = spec.split(":")[0]
    if kind not in DEVICES:
        raise RckdError(f"device {spec!r} is unknown; use one of {', '.join(DEVICES)} (or cuda:N).")
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not has_mps):
        raise RckdError(f"device {spec!r} is not available on this machine; use --device auto.")
    return cuda if spec == "cuda" else spec


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch() -> Launch:
    """Where torchrun put this process, read from RANK, WORLD_SIZE and LOCAL_RANK."""
    env = os.environ
    return Launch(
        rank=int(env.get("RANK", "0")),
        world_size=int(env.get("WORLD_SIZE", "1")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
    )
