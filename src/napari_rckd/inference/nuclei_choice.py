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


def preview_for(nuclei_mpp: float | None) -> str | None:
    """The fast model the live view shows first, for a nuclei model working at ``nuclei_mpp``:
    ``zoo.PREVIEW`` when that model works at a coarser scale (fewer pixels per µm²), else None.
    """
    preview = zoo.get(zoo.PREVIEW)
    if nuclei_mpp is None or preview.mpp is None or nuclei_mpp >= preview.mpp:
        return None
    return preview.name
