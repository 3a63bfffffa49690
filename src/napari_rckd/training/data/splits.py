"""Train/validation splits by group (slide, region, case), so no source leaks across.

Tiles of one slide look alike (same stain, scanner, patient); a split by tile would let
validation reward memorising the slide. Groups go wholly to one side, stratified by each
group's majority class so every class with two or more groups is validated.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from napari_rckd.errors import RckdError


def split_by_group(
    groups: Sequence[str],
    labels: Sequence[int] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): deterministic given ``seed``; no group on both sides."""
    if not 0 < val_fraction < 1:
        raise RckdError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    groups = [str(g) for g in groups]
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise RckdError(
            f"all {len(groups)} tiles come from one source ({unique[0] if unique else 'none'}); "
            "a leak-free validation split needs tiles from at least two slides, regions or cases"
        )
    strata = _strata(groups, labels)
    rng = np.random.default_rng(seed)
    val_groups: set[str] = set()
    for stratum in sorted(strata):
        members = strata[stratum]
        order = [members[i] for i in rng.permutation(len(members))]
        take = round(len(members) * val_fraction)
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)  # validate every class, train on it too
        val_groups.update(order[:take])
    if not val_groups:  # every class has a single group: still hold one out
        val_groups.add(unique[int(rng.integers(len(unique)))])

    is_val = np.array([g in val_groups for g in groups])
    train, val = np.nonzero(~is_val)[0], np.nonzero(is_val)[0]
    leaked = {groups[i] for i in train} & {groups[i] for i in val}
    assert not leaked, f"groups on both sides of the split: {sorted(leaked)}"
    return train, val


def _strata(groups: Sequence[str], labels: Sequence[int] | None) -> dict[int, list[str]]:
    """Sorted groups per majority class (all in stratum 0 without labels)."""
    majority: dict[str, int] = {}
    if labels is not None:
        per_group: dict[str, Counter] = defaultdict(Counter)
        for group, label in zip(groups, labels, strict=True):
            per_group[group][int(label)] += 1
        majority = {g: counts.most_common(1)[0][0] for g, counts in per_group.items()}
    strata: dict[int, list[str]] = defaultdict(list)
    for group in sorted(set(groups)):
        strata[majority.get(group, 0)].append(group)
    return strata


def group_folds(
    groups: Sequence[str],
    labels: Sequence[int],
    folds: int,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The fold (0..folds-1) of every item: groups dealt round-robin per class after a
    seeded shuffle, so each fold holds about 1/folds of every class and no group is split."""
    groups = [str(g) for g in groups]
    fold_of: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    offset = 0
    for stratum, members in sorted(_strata(groups, labels).items()):
        if len(members) < folds:
            name = class_names[stratum] if class_names is not None else stratum
            raise RckdError(
                f"class {name} has {len(members)} groups, fewer than the {folds} folds; "
                "lower the number of folds or add sources of that class"
            )
        for position, index in enumerate(rng.permutation(len(members))):
            # Continue the deal where the last class stopped, so fold sizes stay even.
            fold_of[members[index]] = (offset + position) % folds
        offset += len(members)
    return np.array([fold_of[g] for g in groups])


def take_groups(
    groups: Sequence[str], labels: Sequence[int], fraction: float, seed: int = 0
) -> dict[int, list[str]]:
    """A seeded ``fraction`` of each class's groups, {class: chosen groups}; nested in the
    fraction (the 5 % groups are among the 20 %), so label budgets differ only in amount.
    A class may end up with none: the caller decides whether that is an error."""
    if not 0 < fraction <= 1:
        raise RckdError(f"a label budget must lie in (0, 1], got {fraction}")
    chosen: dict[int, list[str]] = {}
    rng = np.random.default_rng(seed)
    for stratum, members in sorted(_strata([str(g) for g in groups], labels).items()):
        order = [members[i] for i in rng.permutation(len(members))]
        chosen[stratum] = order[: round(len(members) * fraction)]
    return chosen
