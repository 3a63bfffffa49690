"""Which nuclei model runs when the user leaves the choice to us (``auto``, the default).

Measured in docs/teachers.md: on a CPU the classical detector (`builtin`) is the fastest nuclei
model (about twice the tiles/s of the RCKD-CSAT student), and on nuclei sources the learned
teacher never saw it beat that teacher on two of three; on a GPU the student runs on the
accelerator while the classical detector would still run on the CPU, so the student is chosen
there.
"""

from __future__ import annotations

AUTO = "auto"


def choose_nuclei(spec, device: str) -> tuple[object, str | None]:
    """``spec`` unchanged with no note, or for ``auto`` the model for ``device`` and why."""
    if str(spec).lower() != AUTO:
        return spec, None
    from napari_rckd.inference.runner import resolve_device

    kind = resolve_device(device).split(":")[0]
    if kind in ("cuda", "mps"):
        return "csat", (
            f"nuclei: the RCKD-CSAT student (csat), chosen for the {kind} GPU: it runs there, "
            "while the classical detector would run on the CPU"
        )
    return "builtin", (
        "nuclei: the built-in classical detector, chosen for the CPU: the fastest nuclei model "
        "here, and the better one on two of three sources the learned teacher never saw "
        "(docs/teachers.md)"
    )
