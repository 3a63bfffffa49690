"""What `bench transfer` will train, checked before the first step: tiles, folds, budgets, inits.

Every problem the data or the options can cause (no class folders, one class, a groups file
naming missing tiles, a budget that leaves a class without training tiles, an init that
cannot load) is found here and reported in one sentence, so a long run never dies halfway.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError
from napari_rckd.training.data.labelled import LabelledTile, check_classes, scan_tile_folders
from napari_rckd.training.data.splits import group_folds, take_groups
from napari_rckd.training.initial import Init, resolve_init


@dataclass(frozen=True)
class Job:
    """One training run: an init on a fold's training groups at a budget, for a seed."""

    fold: int
    seed: int
    budget: float
    init: str  # the name as given in --inits


@dataclass
class Plan:
    classes: list[str]
    tiles: list[LabelledTile]  # --train's tiles
    test: list[LabelledTile] | None  # --test's tiles (None: cross-validation on --train)
    fold_of: np.ndarray  # fold of each --train tile (all 0 with --test)
    folds: int
    inits: dict[str, Init]
    budgets: list[float]
    seeds: list[int]
    scale_lines: list[str] = field(default_factory=list)  # `read_scale`'s, one per folder

    def jobs(self) -> list[Job]:
        """In fold, seed, budget, init order: the runs of one comparison finish together."""
        return [
            Job(fold, seed, budget, init)
            for fold, seed, budget, init in itertools.product(
                range(self.folds), self.seeds, self.budgets, self.inits
            )
        ]

    def read_mpps(self) -> list[float]:
        """The µm/px the tiles are read at (the scale rule's choices), for the --json file."""
        tiles = self.tiles + (self.test or [])
        return sorted({round(t.mpp, 4) for t in tiles if t.mpp is not None})

    def test_tiles(self, fold: int) -> list[LabelledTile]:
        if self.test is not None:
            return self.test
        return [t for t, f in zip(self.tiles, self.fold_of, strict=True) if f == fold]

    def train_tiles(self, job: Job) -> list[LabelledTile]:
        """The training part of ``job.fold``, cut to ``job.budget`` of its groups per class."""
        part = [t for t, f in zip(self.tiles, self.fold_of, strict=True) if f != job.fold]
        if self.test is not None:
            part = self.tiles
        labels = [self.classes.index(t.label) for t in part]
        chosen = take_groups([t.group for t in part], labels, job.budget, job.seed)
        kept = {g for groups in chosen.values() for g in groups}
        return [t for t in part if t.group in kept]


def make_plan(
    train: str | Path,
    test: str | Path | None,
    folds: int,
    inits: list[str],
    backbone: str,
    budgets: list[float],
    seeds: int,
    data_mpp: float | None = None,
    model_mpp: float = 0.5,
) -> Plan:
    """Read and check everything a run of `bench transfer` needs; the tiles' scale is chosen
    by `read_scale` (recorded --data-mpp, else the nuclei estimate, else their own pixels)."""
    if seeds < 1 or not budgets or not inits:
        raise RckdError("give at least one seed (--seeds), budget (--budgets) and init (--inits)")
    outside = [b for b in budgets if not 0 < b <= 1]
    if outside:
        raise RckdError(
            f"--budgets {outside[0]:g} is not a fraction of the training groups; give values "
            "in (0, 1], e.g. 0.05,0.2,1.0"
        )
    lines: list[str] = []
    tiles = _class_tiles(Path(train), "--train", data_mpp, model_mpp, lines)
    classes = check_classes([t.label for t in tiles], None, f"--train {train}")
    labels = [classes.index(t.label) for t in tiles]
    test_tiles = None
    if test is not None:
        test_tiles = _class_tiles(Path(test), "--test", data_mpp, model_mpp, lines)
        unknown = sorted({t.label for t in test_tiles} - set(classes))
        if unknown:
            raise RckdError(
                f"--test {test} has class folders {', '.join(unknown)} that --train {train} "
                f"lacks (it has {', '.join(classes)}); remove them or add them to --train"
            )
        overlap = {t.group for t in tiles} & {t.group for t in test_tiles}
        if overlap:
            raise RckdError(
                f"--train {train} and --test {test} share the group {sorted(overlap)[0]}; the "
                "test set must hold other sources (fix the groups.csv files)"
            )
        fold_of, folds = np.zeros(len(tiles), dtype=int), 1
    else:
        if folds < 2:
            raise RckdError(f"--folds must be at least 2 without --test, got {folds}")
        fold_of = group_folds([t.group for t in tiles], labels, folds, 0, classes)
    plan = Plan(
        classes, tiles, test_tiles, fold_of, folds, {}, sorted(set(budgets)), list(range(seeds)),
        lines,
    )  # fmt: skip
    _check_budgets(plan, Path(train))
    plan.inits = {name: _init(name, backbone) for name in inits}
    return plan


def _class_tiles(
    root: Path, flag: str, data_mpp: float | None, model_mpp: float, lines: list[str]
) -> list[LabelledTile]:
    """The tiles of ``root``, which must hold one sub-folder per class, with the mpp they are
    read at (`tile_scales`; its line is added to ``lines``)."""
    from napari_rckd.training.data.scale import tile_scales

    if not root.is_dir():
        raise RckdError(
            f"{flag} {root} is not a folder; give a folder with one sub-folder per class"
        )
    tiles = scan_tile_folders(root, label_from="folder", mpp=data_mpp)
    loose = [t for t in tiles if t.path.parent == root]
    if loose:
        raise RckdError(
            f"{flag} {root} has no class folders ({loose[0].path.name} lies directly in it); "
            "put each class's tiles in a sub-folder named after the class"
        )
    classes = sorted({t.label for t in tiles})
    if len(classes) < 2:
        raise RckdError(
            f"{flag} {root} holds only one class folder ({classes[0]}); add a sub-folder for "
            "each other class"
        )
    tiles, told = tile_scales(tiles, [root], data_mpp, model_mpp)
    lines.extend(told)
    return tiles


def _check_budgets(plan: Plan, train: Path) -> None:
    """Every budget must leave every class some training groups, in every fold and seed."""
    for job in _budget_checks(plan):
        labels = {t.label for t in plan.train_tiles(job)}
        for name in plan.classes:
            if name not in labels:
                raise RckdError(
                    f"--budgets {job.budget:g} leaves class {name} of --train {train} without "
                    f"training tiles (fold {job.fold + 1}, seed {job.seed}); raise the budget "
                    "or add groups of that class"
                )


def _budget_checks(plan: Plan) -> list[Job]:
    return [
        Job(fold, seed, budget, "")
        for fold, seed, budget in itertools.product(range(plan.folds), plan.seeds, plan.budgets)
    ]


def _init(name: str, backbone: str) -> Init:
    """A --inits entry: csat (the shipped RCKD weights), none, imagenet or a checkpoint."""
    if name in ("csat", "none"):
        return resolve_init(name, backbone, flag="--inits")
    if name == "imagenet":
        _check_imagenet_cached(backbone)
        return resolve_init("imagenet", backbone)
    path = Path(name)
    if path.suffix != ".safetensors" or not path.is_file():
        raise RckdError(
            f"--inits {name} is neither csat, none, imagenet nor an existing .safetensors "
            "checkpoint; check the spelling or the path"
        )
    return resolve_init(path, backbone, flag="--inits")


def _check_imagenet_cached(backbone: str) -> None:
    """timm's ImageNet weights must already be on this machine: a benchmark never downloads
    (and a failing download would retry for a minute before saying so)."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(backbone)
    hub = cfg.hf_hub_id if cfg is not None else None
    if not hub:  # rckd_csat's pretrained weights are the shipped RCKD ones, not ImageNet's
        raise RckdError(
            f"--inits imagenet: timm has no ImageNet weights for {backbone}; drop imagenet, "
            "or compare on a --backbone that has them (e.g. resnet18)"
        )
    files = ("model.safetensors", "pytorch_model.bin")
    if not any(isinstance(try_to_load_from_cache(hub, f), str) for f in files):
        raise RckdError(
            f"--inits imagenet needs timm's ImageNet weights for {backbone}, which are not in "
            "this machine's Hugging Face cache and bench transfer never downloads; fetch them "
            f"once online (timm.create_model({backbone!r}, pretrained=True)) or drop imagenet"
        )
