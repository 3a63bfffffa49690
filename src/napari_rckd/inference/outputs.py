"""A slide's prediction outputs appear all at once: staged in a hidden sibling, then renamed.

A slide's outputs in OUT are ``<stem>.zarr`` and its exports ``<stem>.<result>.<ext>``. A run
writes them into ``OUT/.<stem>.<pid>.staging/``; when every file is complete a ``ready`` list
is written there, naming the new files and the slide's old ones, and the renames follow
(a few system calls). So a run that fails or is killed before ``ready`` leaves the earlier
results as they were, and `recover` (run at the next start) deletes its staging folder; a
kill during the renames is finished by `recover`. Either way OUT ends with the old set or
the new set of a slide's files, never a mix of two runs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_rckd.atomic import atomic_open, process_alive
from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)

RESULT_NAMES = ("nuclei", "subtype", "region")  # the <result> of export file names
READY = "ready.json"


def slide_outputs(out: Path, stem: str, only: Iterable[str] | None = None) -> list[Path]:
    """The files and folders of one slide's results already in ``out`` (among ``only``)."""
    if not out.is_dir():
        return []
    if only is not None:
        return sorted(out / name for name in set(only) if (out / name).exists())
    return sorted(p for p in out.iterdir() if _belongs(p.name, stem))


def refuse_existing(out: Path, stems: Iterable[str], only: Iterable[str] | None = None) -> None:
    """Raise one sentence when ``out`` already holds results of one of the slides ``stems``."""
    for stem in stems:
        old = slide_outputs(out, stem, only)
        if old:
            raise RckdError(
                f"{out} already holds results of {stem} ({', '.join(p.name for p in old)}); "
                "pass --overwrite to replace them, or choose another --out."
            )


@contextmanager
def staged_outputs(
    out: Path, stem: str, overwrite: bool, only: Iterable[str] | None = None
) -> Iterator[Path]:
    """A staging folder for one slide's outputs, published into ``out`` when the block succeeds.

    Refuses a folder that already holds results of this slide unless ``overwrite``; turns a
    read-only folder or a full disk into one sentence. ``only`` (file names) limits what is
    replaced to those files, so exporting one format leaves the slide's others alone.
    """
    if not overwrite:
        refuse_existing(out, [stem], only)
    old = slide_outputs(out, stem, only)
    staging = out / f".{stem}.{os.getpid()}.staging"
    try:
        _fresh(staging)
        yield staging
        new = sorted(p.name for p in staging.iterdir())
        with atomic_open(staging / READY, "w") as handle:
            json.dump({"new": new, "old": [p.name for p in old]}, handle)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise RckdError(write_failure(out, stem, error)) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(out, staging)


def recover(out: Path) -> None:
    """Finish publishes a killed run had started, and delete the staging folders it left."""
    if not out.is_dir():
        return
    for staging in out.glob(".*.staging"):
        pid = staging.name.split(".")[-2]
        if pid.isdigit() and process_alive(int(pid)):
            continue  # another run, still writing
        if (staging / READY).is_file():
            log.info("finishing the publication of %s, interrupted last time", staging.name)
            _publish(out, staging)
        else:
            log.info("removing %s, left by an interrupted run", staging.name)
            shutil.rmtree(staging, ignore_errors=True)


def finish_publications(out: Path, stem: str) -> None:
    """Finish the publications of ``stem`` that a killed process had started (its ``ready``
    list written); leave staging folders without one (`recover` removes those)."""
    if not out.is_dir():
        return
    for staging in out.iterdir():
        name, pid = staging.name, staging.name[len(stem) + 2 : -len(".staging")]
        mine = name.startswith(f".{stem}.") and name.endswith(".staging") and pid.isdigit()
        if mine and (staging / READY).is_file():
            log.info("finishing the publication of %s, interrupted", name)
            _publish(out, staging)


def _publish(out: Path, staging: Path) -> None:
    """Old files out, new files in, staging gone; safe to repeat after a kill at any point."""
    plan = json.loads((staging / READY).read_text())
    for name in set(plan["old"]) - set(plan["new"]):  # the others are replaced below
        _remove(out / name)
    for name in plan["new"]:
        if (staging / name).exists():  # not yet moved (an earlier attempt may have moved it)
            _remove(out / name)
            os.replace(staging / name, out / name)
    shutil.rmtree(staging, ignore_errors=True)


def _belongs(name: str, stem: str) -> bool:
    if name == f"{stem}.zarr":
        return True
    rest = name[len(stem) + 1 :] if name.startswith(f"{stem}.") else ""
    return rest.split(".")[0] in RESULT_NAMES and "." in rest


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_failure(out: Path, stem: str, error: OSError) -> str:
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is read-only (permission denied); choose another folder"
    elif error.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full; free some space or choose another folder"
    else:
        why = f"{error.strerror or error}; check the folder"
    return f"could not write the results of {stem} into {out}: {why} (earlier results are intact)."
