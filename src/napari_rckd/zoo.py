"""The named nuclei models: one registry, read by everything that offers or loads one by name.

In the spirit of timm's ``register_model`` / ``generate_default_cfgs``: each entry is plain
data (name, label, weights file, working mpp, whether the classical detector's probability is
averaged in, licence), registered once here. The command line's choices and help, the widgets'
lists, ``teachers.get_teacher``, ``auto`` (``inference.nuclei_choice``), stage 2's ``--init``
(``training.initial``) and timm's ``rckd_csat`` pretrained tag all ask it; nothing else maps a
name to a file. Cheap to import (the command line reads it while building ``--help``).
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_rckd.errors import RckdError

# Kinds of entry: how ``get_teacher`` builds one.
NETWORK = "network"  # weights shipped in the package (napari_rckd/models/shipped)
CLASSICAL = "classical"  # the classical detector (colour deconvolution, watershed)
OTSU = "otsu"  # the Otsu baseline
EXTERNAL = "external"  # an adapter to another package (its own weights, its own licence)
# The shipped networks' training data is CC BY-NC-SA 4.0 (docs/teachers.md).
NON_COMMERCIAL = "cc-by-nc-sa-4.0"


@dataclass(frozen=True)
class NucleiModel:
    """One named nuclei model."""

    name: str
    label: str  # what a widget's list shows
    kind: str  # NETWORK, CLASSICAL, OTSU or EXTERNAL
    mpp: float | None  # µm per pixel it works at (None: an external package's default)
    weights: str | None = None  # its nuclei weights: a file name under napari_rckd/models/shipped
    classical_prior: bool = False  # the classical detector's probability averaged with its own
    licence: str | None = None  # of the weights (None: no weights ship with napari-rckd)
    aliases: tuple[str, ...] = ()
    menu: bool = True  # offered in the widgets' lists
    # the stage-1 student that starts stage 2 under this name (``--init NAME``, ``timm_tag``):
    # the best nuclei copy and the best start for other tasks need not be the same weights
    stage2_weights: str | None = None
    timm_tag: str | None = None  # a timm pretrained tag whose ``file`` is ``stage2_weights``
    # device kinds on which ``auto`` picks this model (inference.nuclei_choice), and why
    auto_on: tuple[str, ...] = ()
    auto_note: str = ""


_ZOO: dict[str, NucleiModel] = {}


def register(model: NucleiModel) -> NucleiModel:
    """Add ``model`` under its name and aliases; a name is registered once."""
    for name in (model.name, *model.aliases):
        if name in _ZOO:
            raise ValueError(f"nuclei model {name!r} is registered twice")
        _ZOO[name] = model
    return model


def get(name: str) -> NucleiModel:
    """The entry called ``name`` (or one of its aliases, any case), or one RckdError sentence."""
    model = find(name)
    if model is None:
        raise RckdError(f"no nuclei model is called {name!r}; use one of {', '.join(names())}.")
    return model


def find(name: str) -> NucleiModel | None:
    """The entry called ``name`` (any case), or None."""
    return _ZOO.get(str(name).strip().lower())


def names(aliases: bool = True) -> tuple[str, ...]:
    """Every registered name in registration order, aliases beside their model."""
    return tuple(n for n, m in _ZOO.items() if aliases or n == m.name)


def models() -> tuple[NucleiModel, ...]:
    """Every entry once, in registration order."""
    return tuple(m for n, m in _ZOO.items() if n == m.name)


def for_device(kind: str) -> NucleiModel:
    """The model ``auto`` picks on a device of ``kind`` (cpu, cuda, mps)."""
    return next(m for m in models() if kind in m.auto_on)


# The default on a CPU: on every nuclei source left out of its training, the learned teacher
# averaged with the classical detector beat both of them alone (docs/teachers.md).
register(
    NucleiModel(
        "builtin",
        "built-in (learned teacher + classical detector)",
        NETWORK,
        mpp=0.25,
        weights="nuclei-teacher.safetensors",
        classical_prior=True,
        licence=NON_COMMERCIAL,
        aliases=("hybrid",),
        auto_on=("cpu",),
        auto_note="the built-in teacher (learned + classical), chosen for the CPU: the best on "
        "tissue it never saw; csat is about 4x faster but, held out, keeps 94 % of its Dice "
        "with 0.06 lower AJI (csat+classical: 97 %, 0.04, 3x); classical is the fastest "
        "(docs/teachers.md)",
    )
)
register(
    NucleiModel(
        "learned",
        "learned teacher alone",
        NETWORK,
        mpp=0.25,
        weights="nuclei-teacher.safetensors",
        licence=NON_COMMERCIAL,
    )
)
# On a GPU the student runs on the accelerator, while builtin's classical half would run on
# the CPU (docs/teachers.md). Its nuclei weights copy builtin (held out, the better teacher);
# stage 2 starts from the copy of the network alone, which fine-tuned better (docs/rckd.md).
register(
    NucleiModel(
        "csat",
        "RCKD-CSAT student",
        NETWORK,
        mpp=0.5,
        weights="rckd-csat-nuclei.safetensors",
        licence=NON_COMMERCIAL,
        stage2_weights="rckd-csat-stage1.safetensors",
        timm_tag="rckd_csat.rckd_stage1",
        auto_on=("cuda", "mps"),
        auto_note="the RCKD-CSAT student (csat), chosen for the {kind} GPU: it runs there, while "
        "the built-in teacher's classical half would run on the CPU",
    )
)
# The live view shows this model first where the chosen one works at a finer scale (builtin,
# learned: 4x the pixels per µm²) and so fills a view about 3x later (docs/analyze.md).
PREVIEW = "csat"
register(NucleiModel("classical", "classical detector (fastest)", CLASSICAL, mpp=0.5))
register(NucleiModel("otsu", "Otsu threshold (baseline)", OTSU, mpp=0.5, menu=False))
register(NucleiModel("cellpose", "Cellpose (its package)", EXTERNAL, mpp=0.5, menu=False))
register(NucleiModel("instanseg", "InstanSeg (its package)", EXTERNAL, mpp=0.5, menu=False))
