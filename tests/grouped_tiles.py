"""A small LC25000-like folder for tests: class sub-folders, several turned and flipped copies
of each source image, and a groups.csv (class,group,file) that says which copies belong together."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ("benign", "tumour", "stroma")
TINTS = {"benign": (200, 120, 190), "tumour": (120, 60, 150), "stroma": (230, 150, 170)}


def make_grouped_folder(
    root: Path, groups_per_class: int = 6, copies: int = 3, size: int = 40, with_csv: bool = True
) -> Path:
    """``root``/<class>/<class>-<g>-<c>.png; copy c of source g is the source turned c × 90°."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for group in range(groups_per_class):
            source = np.array(TINTS[name]) + rng.normal(0, 25, (size, size, 3))
            source = np.clip(source, 0, 255).astype(np.uint8)
            for copy in range(copies):
                file = f"{name}/{name}-{group}-{copy}.png"
                Image.fromarray(np.ascontiguousarray(np.rot90(source, copy))).save(root / file)
                rows.append((name, f"{name}-{group}", file))
    if with_csv:
        with open(root / "groups.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "group", "file", "note"])
            writer.writerows([(*row, "synthetic") for row in rows])
    return root
