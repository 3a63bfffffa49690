"""Checks of command-line input that run before torch is imported, so a typo answers at once.

Each raises one ``RckdError`` sentence naming the flag or path and what to do. Impossible
numbers are refused earlier still, by the argparse types of ``commands.arguments``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from napari_rckd import zoo
from napari_rckd.defaults import PRIOR_SUFFIX
from napari_rckd.errors import RckdError

# Specs that name something built in rather than a file.
NAMED_MODELS = {*zoo.names(), "none", "imagenet"}


def existing(paths: Iterable[str | None], what: str, folder: bool | None = None) -> None:
    """Every given path exists (and is a folder / a file when ``folder`` says so)."""
    for text in paths:
        if text is None:
            continue
        path = Path(text).expanduser()
        if not path.exists():
            raise RckdError(f"{what} {text} does not exist; check the path.")
        if folder is True and not path.is_dir():
            raise RckdError(
                f"{what} {text} is a file, not a folder; give the folder that holds it."
            )
        if folder is False and not path.is_file():
            raise RckdError(f"{what} {text} is a folder, not a file; give the file itself.")


def model_file(spec: str | None, what: str) -> None:
    """A model spec that is not a built-in name must be a file that exists."""
    if spec is not None and str(spec).strip().lower() not in NAMED_MODELS:
        existing([spec], what, folder=False)


def teacher_spec(spec: str | None, what: str) -> None:
    """A nuclei teacher: a model spec, possibly with the classical detector's ``+classical``."""
    model_file(None if spec is None else str(spec).strip().removesuffix(PRIOR_SUFFIX), what)


def pretrain(args) -> None:
    existing(args.slides, "slide or folder")
    teacher_spec(args.teacher, "--teacher")


def finetune(args) -> None:
    existing(args.data, "tile folder", folder=True)
    existing([args.annotations, args.masks], "file", folder=False)
    existing([args.slide], "--slide", folder=False)
    model_file(args.init, "--init")
    if not 0 < args.pretrained_backbone_lr <= 1:
        raise RckdError(
            f"--pretrained-backbone-lr {args.pretrained_backbone_lr} must lie in (0, 1]: it "
            "scales --lr for a pretrained backbone (1 trains it like the head)."
        )


def evaluate(args) -> None:
    existing(args.data if isinstance(args.data, list) else [args.data], "--data", folder=True)
    if getattr(args, "checkpoint", None) is not None:
        existing([args.checkpoint], "checkpoint", folder=False)
    for spec in getattr(args, "teacher", None) or []:
        teacher_spec(spec, "--teacher")
