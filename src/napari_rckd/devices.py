"""Which device computes: one resolver for inference, training and the widgets.

``auto`` picks CUDA, then MPS, then the CPU; an explicit device must exist on this machine.
Cheap to import: torch is imported only when a device is resolved.
"""

from __future__ import annotations

from napari_rckd.errors import RckdError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(spec: str | None = "auto") -> str:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    import torch

    spec = (spec or "auto").lower()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    kind = spec.split(":")[0]
    if kind not in DEVICES:
        raise RckdError(f"device {spec!r} is unknown; use one of {', '.join(DEVICES)} (or cuda:N).")
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not has_mps):
        raise RckdError(f"device {spec!r} is not available on this machine; use --device auto.")
    return spec
