"""Which nuclei model runs when the user leaves the choice to us (``auto``, the default).

Measured in docs/teachers.md: `builtin` (the learned teacher averaged with the classical
detector) is the best nuclei model on sources it never saw. On a GPU the RCKD-CSAT student
runs on the accelerator, while `builtin`'s classical half would run on the CPU, so the student
is chosen there. On a CPU the student is about 4x faster but not of equal quality (held out on
CPM-15, 94 % of `builtin`'s Dice and 0.06 lower AJI), so `builtin` is chosen.
"""

from __future__ import annotations

from napari_rckd import zoo

AUTO = "auto"


def choose_nuclei(spec, device: str) -> tuple[object, str | None]:
    """``spec`` unchanged with no note, or for ``auto`` the zoo's model for ``device`` and why."""
    if str(spec).lower() != AUTO:
        return spec, None
    from napari_rckd.devices import resolve_device

    kind = resolve_device(device).split(":")[0]
    model = zoo.for_device(kind)
    return model.name, "nuclei: " + model.auto_note.format(kind=kind)
