"""Tile groups from a ``groups.csv``: which tiles share one source image, slide or patient.

Sets such as LC25000 hold many rotated and flipped copies of each source image. Names and
pixels cannot reliably tell those copies apart, so whoever made the set says which tiles
belong together, in a CSV with the columns ``class,group,file`` (more are allowed), where
``file`` is the tile's path relative to the tile folder. A ``groups.csv`` beside the tiles
is read by itself; another file can be named explicitly. Every split keeps a group whole.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from napari_rckd.errors import RckdError

GROUPS_FILE = "groups.csv"
COLUMNS = ("class", "group", "file")


def groups_file(root: Path, explicit: str | Path | None = None) -> Path | None:
    """The groups CSV that applies to the tile folder ``root``: ``explicit``, else
    ``root/groups.csv`` when it exists, else None (each tile is then its own source)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise RckdError(
                f"the groups file {path} does not exist; give a CSV with columns "
                "class,group,file or leave --groups out"
            )
        return path
    beside = root / GROUPS_FILE
    return beside if beside.is_file() else None


def read_groups(path: Path, roots: list[Path]) -> dict[Path, str]:
    """{tile path: group} from the CSV ``path``, whose ``file`` entries are relative to one
    of the tile folders ``roots``; every file it names must exist."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing_columns = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing_columns:
                raise RckdError(
                    f"{path} has no column {', '.join(missing_columns)}; a groups file needs "
                    "the header class,group,file (further columns are allowed)"
                )
            rows = [(row["group"], row["file"]) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RckdError(f"cannot read the groups file {path} ({error}); check the file") from None
    groups: dict[Path, str] = {}
    missing: list[str] = []
    for group, name in rows:
        if not group or not name:
            raise RckdError(f"{path} has a row without a group or file; fill in or remove it")
        relative = PurePosixPath(name.replace("\\", "/"))
        found = [root / relative for root in roots if (root / relative).is_file()]
        if not found:
            missing.append(name)
            continue
        groups[found[0]] = group
    if missing:
        folders = ", ".join(str(r) for r in roots)
        raise RckdError(
            f"{path} names {len(missing)} files that are not in {folders} (e.g. {missing[0]}); "
            "fix or remove those rows, or restore the files"
        )
    return groups


def apply_groups(paths: list[Path], groups: dict[Path, str], csv_path: Path) -> list[str]:
    """The group of each tile in ``paths``; a tile the CSV does not list is an error."""
    unlisted = [p for p in paths if p not in groups]
    if unlisted:
        raise RckdError(
            f"{csv_path} does not list {len(unlisted)} of the tiles (e.g. {unlisted[0]}); add "
            "a row class,group,file for each, or move those tiles out of the folder"
        )
    return [groups[p] for p in paths]
