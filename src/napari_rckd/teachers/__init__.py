"""Nuclei teachers: an RGB tile at some µm/px in, a nuclear probability and instance labels out.

``get_teacher(spec)`` turns what a user types (``builtin``, the default, which is ``hybrid``:
the network teacher shipped in the package, ``learned``, with its nuclear probability averaged
with the classical detector's; ``learned`` alone; ``csat``, the RCKD-CSAT student, also
shipped; ``classical``; ``otsu``; ``cellpose``; ``instanseg``; a TorchScript ``.pt`` file or a
student ``.safetensors`` checkpoint, either with ``+classical`` appended for the same average)
into a teacher. Every teacher has ``predict(tile, mpp) -> TeacherOutput(prob, labels)``, ``name``,
``mpp`` and ``identity`` (see docs/teachers.md).
"""

from __future__ import annotations

from pathlib import Path

from napari_rckd import zoo
from napari_rckd.defaults import PRIOR_SUFFIX
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
    name = str(spec).strip() or "builtin"
    model = zoo.find(name)
    if model is not None:
        return _named(model, name.lower(), mpp, device)
    if name.lower().endswith(PRIOR_SUFFIX):
        return _with_prior(name[: -len(PRIOR_SUFFIX)], mpp, device)
    path = Path(name).expanduser()
    if not path.is_file():
        raise RckdError(
            f"unknown teacher {name!r}: use one of {', '.join(zoo.names())}, a TorchScript file "
            "or a student .safetensors checkpoint that exists"
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


def _named(model: zoo.NucleiModel, name: str, mpp: float | None, device: str | None) -> Teacher:
    """The zoo's ``model``, called ``name`` (an alias keeps its own name in the identity)."""
    mpp = model.mpp if mpp is None else float(mpp)
    if model.kind == zoo.NETWORK:
        from napari_rckd.models.shipped import shipped_weights
        from napari_rckd.teachers import network

        path = shipped_weights(model.name)
        teacher = network.load_student_teacher(path, mpp, device, name=name)
        return network.with_classical_prior(teacher, name) if model.classical_prior else teacher
    if model.kind == zoo.CLASSICAL:
        return ClassicalTeacher(mpp=mpp)
    if model.kind == zoo.OTSU:
        return OtsuTeacher(mpp=mpp)
    from napari_rckd.teachers.external import CellposeTeacher, InstansegTeacher

    adapter = {"cellpose": CellposeTeacher, "instanseg": InstansegTeacher}[model.name]
    return adapter(device=device, mpp=mpp)


def _with_prior(spec: str, mpp: float | None, device: str | None):
    """The network teacher ``spec`` with the classical detector's probability averaged in."""
    from napari_rckd.teachers import network

    teacher = get_teacher(spec, mpp, device)
    if not isinstance(teacher, network.NetworkTeacher):
        named = ", ".join(m.name for m in zoo.models() if m.kind == zoo.NETWORK)
        raise RckdError(
            f"{spec + PRIOR_SUFFIX!r}: only a network teacher ({named}, a TorchScript file "
            f"or a student checkpoint) can be averaged with the classical detector; "
            f"use {spec!r} or classical on its own"
        )
    return network.with_classical_prior(teacher, teacher.name + PRIOR_SUFFIX)
