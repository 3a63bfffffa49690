"""Nuclei teachers: an RGB tile at some µm/px in, a nuclear probability and instance labels out.

``get_teacher(spec)`` turns what a user types (``builtin``, the default, today the classical
detector; ``learned``, the network teacher shipped in the package; ``csat``, the RCKD-CSAT
student distilled from it, also shipped; ``classical``; ``otsu``;
``cellpose``; ``instanseg``; a TorchScript ``.pt`` file or a student ``.safetensors``
checkpoint) into a teacher. Every teacher has ``predict(tile, mpp) -> TeacherOutput(prob, labels)``, ``name``,
``mpp`` and ``identity`` (see docs/teachers.md).
"""

from __future__ import annotations

from pathlib import Path

from napari_rckd.defaults import NAMED_NUCLEI
from napari_rckd.errors import RckdError
from napari_rckd.teachers.base import Teacher, TeacherOutput
from napari_rckd.teachers.classical import ClassicalTeacher, OtsuTeacher

__all__ = ["ClassicalTeacher", "OtsuTeacher", "Teacher", "TeacherOutput", "get_teacher"]

CHECKPOINT_SUFFIXES = (".safetensors",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


def get_teacher(
    spec: str | Path = "builtin", mpp: float | None = None, device: str | None = None
) -> Teacher:
    """The teacher named by ``spec``; ``mpp`` overrides the resolution it works at."""
    name = str(spec).strip()
    options = {} if mpp is None else {"mpp": float(mpp)}
    if name.lower() in ("learned", "csat"):
        from napari_rckd.models.shipped import shipped_weights
        from napari_rckd.teachers import network

        shipped = name.lower()
        return network.load_student_teacher(shipped_weights(shipped), mpp, device, name=shipped)
    # The default stays the classical detector until a learned one beats it on sources it did
    # not train on (docs/teachers.md: the shipped learned teacher does not yet).
    if name.lower() in ("builtin", ""):
        return ClassicalTeacher(name="builtin", **options)
    if name.lower() == "classical":
        return ClassicalTeacher(**options)
    if name.lower() == "otsu":
        return OtsuTeacher(**options)
    if name.lower() in ("cellpose", "instanseg"):
        from napari_rckd.teachers.external import CellposeTeacher, InstansegTeacher

        adapter = CellposeTeacher if name.lower() == "cellpose" else InstansegTeacher
        return adapter(device=device, **options)
    path = Path(name).expanduser()
    if not path.is_file():
        raise RckdError(
            f"unknown teacher {name!r}: use one of {', '.join(NAMED_NUCLEI)}, a TorchScript file or a "
            "student .safetensors checkpoint that exists"
        )
    from napari_rckd.teachers import network

    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return network.load_student_teacher(path, mpp, device)
    if path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
        return network.load_torchscript_teacher(path, mpp, device)
    raise RckdError(
        f"teacher file {path} has an unknown type {path.suffix!r}: give a TorchScript model "
        f"({', '.join(TORCHSCRIPT_SUFFIXES)}) or a student checkpoint (.safetensors)"
    )
