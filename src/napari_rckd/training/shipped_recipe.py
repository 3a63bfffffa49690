"""How the weights shipped in the package were made, as one command (docs/teachers.md).

    python -m napari_rckd.training.shipped_recipe DATA OUT [--package] [--teacher learned]
    python -m napari_rckd.training.shipped_recipe DATA OUT --student stage2 --teacher learned
    python -m napari_rckd.training.shipped_recipe DATA OUT --holdout cpm15

DATA is a data folder laid out like the project's shared data (``nuclei/`` ground truth,
``slides/``, ``tiles/`` and a ``manifest.csv`` with each file's mpp). It trains the nuclei
teacher on every labelled nuclei source (``OUT/teacher``), then distils it into ``rckd_csat``
on all the unlabeled H&E in DATA: slides and tiles whose pixel size is known from the
manifest, and LC25000 tiles at an assumed pixel size (one tile per source image: the others
are rotations and flips of it). Both stages resume when run again.

Two students ship under the name ``csat``, because the best copy of nuclei and the best start
for other tasks were not the same weights (docs/teachers.md). ``--student nuclei`` (the
default, ``OUT/csat``) copies the teacher averaged with the classical detector, what
``builtin`` is, which held out is the better teacher, under the stain jitter; ``--student stage2``
(``OUT/csat-stage2``) copies the network alone, whose soft answers made the better stage-2
start. ``--package`` then writes that student into the package as fp16 (`package`); ``--teacher
learned`` distils the already-shipped teacher instead of training one. ``--holdout SOURCE``
makes the leave-one-source-out pair of docs/teachers.md: the teacher never reads the source's
labels and the student never sees its images (never packaged).
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

from napari_rckd import zoo
from napari_rckd.defaults import PRIOR_SUFFIX
from napari_rckd.errors import RckdError
from napari_rckd.training.recipes.stage1 import AUGMENTS, TARGETS

log = logging.getLogger(__name__)

# LC25000 does not publish its pixel size. Its 224-px lung tiles show nuclei about 1.3x the
# size of MoNuSeg's at 0.5 µm/px; we assume 0.4 µm/px (docs/teachers.md says so too).
LC25000_ASSUMED_MPP = 0.4
# Manifest kinds that are H&E tissue a student may look at without labels.
UNLABELED_KINDS = ("slide", "nuclei-image", "region", "tile")
# Same pixels in other containers, and the one IHC slide: left out of stage 1.
SKIPPED = ("pyramid-deflate", "pyramid-jpeg", "ihc-", "dicom/")
STAGE1 = dict(tile_size=160, tiles=3000, steps=2000, batch_size=16, lr=2e-3, boundaries=True)
STAGE1_SIDE_UM = STAGE1["tile_size"] * 0.5  # pretrain's default 0.5 µm/px


def _side_um(shape: str, mpp: float) -> float:
    """The short side in µm of a manifest ``shape`` such as ``512x512x3``."""
    height, width = (int(n) for n in shape.split("x")[:2])
    return min(height, width) * mpp


def _held_out(path: str, holdout: tuple[str, ...]) -> bool:
    """Whether a manifest path lies in a nuclei source left out (a folder-name prefix)."""
    parts = Path(path).parts
    return len(parts) > 2 and parts[0] == "nuclei" and parts[1].startswith(holdout)


def stage1_sources(
    data: Path, holdout: tuple[str, ...] = ()
) -> tuple[list[Path], dict[str, float]]:
    """Unlabeled H&E files in ``data`` and the mpp of those whose file does not say it;
    ``holdout`` leaves the images of those nuclei sources out."""
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        raise RckdError(f"{manifest} is missing; the shipped recipe reads each file's mpp from it")
    paths, table = [], {}
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] not in UNLABELED_KINDS or any(s in row["path"] for s in SKIPPED):
                continue
            if holdout and _held_out(row["path"], holdout):
                continue
            path = data / row["path"]
            value = (row["mpp"] or "").strip().lstrip("~")
            if not value:  # an unknown pixel size would teach the student the wrong scale
                continue
            if _side_um(row["shape"], float(value)) < STAGE1_SIDE_UM:
                continue  # smaller than one stage-1 tile (PanNuke's 512 px at 0.125 µm/px)
            table[str(path.resolve())] = float(value)
            paths.append(path)
    groups = data / "tiles" / "lc25000-lung-dev" / "groups.csv"
    if groups.is_file():
        seen = set()
        with groups.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row["group"] not in seen:
                    seen.add(row["group"])
                    path = groups.parent / row["file"]
                    paths.append(path)
                    table[str(path.resolve())] = LC25000_ASSUMED_MPP
    return paths, table


TEACHER_DATA = (
    "MoNuSeg 2018 training images (instances and binary masks, CC BY-NC-SA 4.0), "
    "CPM-15 (licence unstated), CryoNuSeg (MIT)"
)
UNLABELED_DATA = (
    "unlabeled H&E with a known pixel size from the project's shared data: the CMU-1 region, "
    "MoNuSeg, CPM-15 and CryoNuSeg images, CRC-VAL-HE-7K, NCT-CRC-HE-100K and BRACS tiles, "
    f"one LC25000 lung tile per source image (assumed {LC25000_ASSUMED_MPP} µm/px)"
)
# What each student copies, in its run folder's name and its shipped header.
STUDENTS = {
    "nuclei": (
        "csat",
        "targets: the nuclei of the learned teacher averaged with the classical detector",
    ),
    "stage2": ("csat-stage2", "targets from the learned teacher"),
}
# Stage-1 jitter per student: the stain jitter made the better nuclei copy held out; the stage-2
# start was measured with the light one (docs/teachers.md, docs/rckd.md).
STUDENT_AUGMENT = {"nuclei": "stain", "stage2": "light"}
# What each student copies: the nuclei student the teacher's decisions (held out it kept the
# AJI and drew fewer broken images, docs/teachers.md); the stage-2 start the soft responses RCKD
# transfers.
STUDENT_TARGETS = {"nuclei": "decision", "stage2": "probability"}
LICENCE = "non-commercial research only (trained on CC BY-NC-SA 4.0 data)"


def with_classical_half(spec: str) -> str:
    """The nuclei student's teacher: ``spec`` averaged with the classical detector, as
    ``builtin`` is (which, like a spec ending in +classical, already is)."""
    named = zoo.find(spec)
    if spec.lower().endswith(PRIOR_SUFFIX) or (named is not None and named.classical_prior):
        return spec
    return spec + PRIOR_SUFFIX


def package(checkpoint: Path, name: str, training_data: str, stage2: bool = False) -> Path:
    """Write ``checkpoint`` as the shipped ``name`` weights (with ``stage2``: its stage-2
    start): fp16 (half the size, the same answers to display precision) with its training data
    and licence in the header."""

    from napari_rckd.models.shipped import weights_path
    from napari_rckd.models.weights import read_weights, write_checkpoint_file

    tensors, metadata = read_weights(checkpoint)
    tensors = {
        key: value.half() if value.is_floating_point() else value for key, value in tensors.items()
    }
    metadata["provenance"].update(
        dtype="float16",
        recipe="python -m napari_rckd.training.shipped_recipe DATA OUT --package"
        + (" --student stage2" if stage2 else ""),
        checkpoint=checkpoint.stem,
        training_data=training_data,
        licence=LICENCE,
    )
    target = weights_path(name, stage2)
    write_checkpoint_file(target, {k: v.contiguous() for k, v in tensors.items()}, metadata)
    log.info("packaged %s as %s (%.1f MB)", checkpoint, target, target.stat().st_size / 1e6)
    return target


def _parser() -> argparse.ArgumentParser:
    """The recipe's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data", type=Path, help="data folder (nuclei/, slides/, tiles/, manifest.csv)"
    )
    parser.add_argument("out", type=Path, help="run folder: OUT/teacher and OUT/csat")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--package",
        action="store_true",
        help="then write the best checkpoints into the package's shipped weights (fp16)",
    )
    parser.add_argument(
        "--student",
        choices=tuple(STUDENTS),
        default="nuclei",
        help="nuclei: copy the teacher averaged with the classical detector into OUT/csat, "
        "csat's nuclei weights (default); stage2: copy the network alone into OUT/csat-stage2, "
        "csat's stage-2 start",
    )
    parser.add_argument(
        "--backbone",
        default="rckd_csat",
        help="stage-1 student (default rckd_csat; another goes into OUT/<backbone>, for the "
        "across-architectures check of docs/rckd.md)",
    )
    parser.add_argument(
        "--teacher",
        default=None,
        help="distil this nuclei teacher (e.g. 'learned', the shipped one) instead of training one",
    )
    parser.add_argument(
        "--holdout",
        action="append",
        default=[],
        metavar="SOURCE",
        help="leave this nuclei source out of both stages (repeatable; not with --package)",
    )
    parser.add_argument("--stage1-steps", type=int, default=STAGE1["steps"])
    parser.add_argument("--stage1-tiles", type=int, default=STAGE1["tiles"])
    parser.add_argument(
        "--stage1-augment",
        choices=AUGMENTS,
        help="stage-1 jitter (default: stain for --student nuclei, light for stage2)",
    )
    parser.add_argument(
        "--stage1-targets",
        choices=TARGETS,
        help="what the student copies (default: decision for --student nuclei, probability "
        "for stage2)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from napari_rckd.training import TqdmProgress
    from napari_rckd.training.recipes.stage1 import Stage1Recipe, pretrain
    from napari_rckd.training.recipes.teacher import TeacherRecipe, train_teacher

    parser = _parser()
    args = parser.parse_args(argv)
    if args.holdout and args.package:
        parser.error("--holdout makes an evaluation pair; it is never packaged (drop --package)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    common = dict(device=args.device, workers=args.workers)
    progress = [TqdmProgress()]
    teacher = args.teacher
    if teacher is None:
        teacher_dir = args.out / "teacher"
        recipe = TeacherRecipe(holdout=list(args.holdout), **common)
        train_teacher(args.data / "nuclei", teacher_dir, recipe, resume=True, callbacks=progress)
        teacher = str(teacher_dir / "best.safetensors")
        if args.package:
            package(Path(teacher), "learned", TEACHER_DATA)
    paths, table = stage1_sources(args.data, tuple(args.holdout))
    folder, targets = STUDENTS[args.student]
    if args.student == "nuclei":
        teacher = with_classical_half(teacher)
    log.info("stage 1 on %d unlabeled files, distilling %s", len(paths), teacher)
    student = args.out / (folder if args.backbone == "rckd_csat" else args.backbone)
    pretrain(
        paths,
        student,
        Stage1Recipe(
            teacher=teacher,
            backbone=args.backbone,
            **dict(
                STAGE1,
                steps=args.stage1_steps,
                tiles=args.stage1_tiles,
                augment=args.stage1_augment or STUDENT_AUGMENT[args.student],
                targets=args.stage1_targets or STUDENT_TARGETS[args.student],
            ),
            **common,
        ),
        cache_dir=args.out / "teacher-cache",  # the teacher answers once for every student
        mpp_table=table,
        resume=True,
        callbacks=progress,
    )
    if args.package and args.backbone == "rckd_csat":
        stage2 = args.student == "stage2"
        package(student / "best.safetensors", "csat", f"{UNLABELED_DATA}; {targets}", stage2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
