"""Where stage-1 tiles come from: slide files or folders, tissue masks, random tissue tiles.

Slides are opened by path on first use in each process (`SlidePool`): tifffile/zarr
handles cannot be pickled into DataLoader workers, so a worker reopens what it reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)

# A sampled tile keeps at least this tissue fraction in the coarse mask.
MIN_TISSUE = 0.75
# Random draws per wanted tile before a slide is declared too small or too sparse.
DRAWS_PER_TILE = 20


def slide_identity(path: Path) -> str:
    """Path, size and modification time: changes whenever the file does, cheap to compute."""
    stat = Path(path).stat()
    return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def read_mpp_table(path: str | os.PathLike) -> dict[str, float]:
    """µm/px per file from a CSV with ``path`` and ``mpp`` columns (paths relative to the CSV,
    as in a data manifest); rows with an empty mpp are left out. Keys are resolved paths."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise RckdError(f"mpp table {path} does not exist; give a CSV with path and mpp columns")
    table = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"path", "mpp"} <= set(reader.fieldnames or ()):
            raise RckdError(
                f"mpp table {path} needs the columns path and mpp (it has {reader.fieldnames})"
            )
        for row in reader:
            value = (row["mpp"] or "").strip().lstrip("~")
            if not value:
                continue
            try:
                mpp = float(value)
            except ValueError:
                mpp = float("nan")
            if not mpp > 0:
                raise RckdError(
                    f"mpp table {path}: {row['path']} has mpp {row['mpp']!r}; give µm/px > 0"
                )
            table[str((path.parent / row["path"]).resolve())] = mpp
    return table


class SlidePool:
    """Slides opened lazily by index, once per process; picklable (holds only paths).

    A slide without a pixel size in its file takes its entry in ``mpp_table`` (resolved path
    -> µm/px), else ``fallback_mpp``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        fallback_mpp: float | None = None,
        mpp_table: dict[str, float] | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        self.fallback_mpp = fallback_mpp
        self.mpp_table = mpp_table or {}
        self._open: dict[int, object] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}, "_pid": None}

    def get(self, index: int):
        """The open slide ``index``; raises when it has no mpp and no fallback was given."""
        if self._pid != os.getpid():  # a forked worker: the parent's handles are not ours
            self._open, self._pid = {}, os.getpid()
        slide = self._open.get(index)
        if slide is None:
            path = self.paths[index]
            fallback = self.mpp_table.get(str(path.resolve()), self.fallback_mpp)
            slide = self._open[index] = open_with_mpp(path, fallback)
        return slide

    def close(self) -> None:
        for slide in self._open.values():
            slide.close()
        self._open.clear()


def open_with_mpp(path: Path, fallback_mpp: float | None = None):
    """Open a slide whose pixel size is known: the file's, else ``fallback_mpp``, else an error."""
    from napari_rckd.io import open_slide

    slide = open_slide(path)
    if slide.mpp is None:
        slide.close()
        if fallback_mpp is None:
            raise RckdError(
                f"slide {Path(path).name} has no mpp (µm per pixel) in its metadata; "
                "pass --slide-mpp with the scanner's value (slide_mpp= in Python), e.g. 0.25 for 40x or 0.5 for 20x"
            )
        slide = open_slide(path, mpp=fallback_mpp)
    return slide


def sample_tissue_locations(
    slide,
    tissue,
    count: int,
    size: int,
    mpp: float,
    rng: np.random.Generator,
    min_tissue: float = MIN_TISSUE,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """``count`` random top-left corners (level-0 y, x) of size×size tiles at ``mpp``.

    Centres are drawn uniformly over the tissue mask and kept when the whole tile's
    footprint is at least ``min_tissue`` tissue, lies inside the slide and overlaps none of
    the same-sized tiles at the corners in ``avoid`` (e.g. the training tiles, for validation).
    """
    footprint = size * mpp / slide.mpp  # level-0 pixels per tile side
    height, width = slide.shape
    if footprint > min(height, width):
        raise RckdError(
            f"slide {slide.path.name} ({height}×{width} px) is smaller than one {size}-px tile "
            f"at {mpp} µm/px; use a smaller tile size or a finer mpp"
        )
    ys, xs = np.nonzero(tissue.mask)
    kept: list[np.ndarray] = []
    for _ in range(DRAWS_PER_TILE):
        picks = rng.integers(0, len(ys), size=2 * count)
        jitter = rng.random((2 * count, 2))
        centres = (np.stack([ys[picks], xs[picks]], 1) + jitter) * tissue.downsample
        corners = centres - footprint / 2
        corners[:, 0] = corners[:, 0].clip(0, height - footprint)
        corners[:, 1] = corners[:, 1].clip(0, width - footprint)
        corners = np.floor(corners)
        good = np.array(
            [tissue.fraction(y, x, footprint, footprint) >= min_tissue for y, x in corners]
        )
        if avoid is not None and len(avoid):
            gaps = np.abs(corners[:, None, :] - avoid[None, :, :])  # (candidates, avoided, 2)
            good &= ~(gaps < footprint).all(axis=2).any(axis=1)
        kept.append(corners[good])
        if sum(len(k) for k in kept) >= count:
            break
    corners = np.concatenate(kept)[:count]
    if len(corners) < count:
        raise RckdError(
            f"slide {slide.path.name} has too little tissue for {count} tiles of {size} px at "
            f"{mpp} µm/px ({len(corners)} found); ask for fewer tiles or add slides"
        )
    return corners.astype(np.int64)


def plan_tissue_tiles(
    pool: SlidePool,
    count: int,
    size: int,
    mpp: float,
    seed: int = 0,
    min_tissue: float = MIN_TISSUE,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """(count, 3) int64 rows (slide index, y, x): tiles shared among slides by tissue area.

    Deterministic given ``seed``; no tile overlaps one in ``avoid`` (rows of another plan
    with the same size and mpp). Slides without tissue are skipped with a warning and an
    error is raised only when none has any.
    """
    from napari_rckd.io.tissue import detect_tissue

    rng = np.random.default_rng(seed)
    masks, areas = {}, {}
    for index, path in enumerate(pool.paths):
        slide = pool.get(index)
        try:
            masks[index] = detect_tissue(slide, path.name)
        except RckdError as error:
            if len(pool.paths) == 1:
                raise
            log.warning("skipping %s: %s", path.name, error)
            continue
        areas[index] = masks[index].area_px0 * slide.mpp**2
    if not masks:
        raise RckdError(f"no tissue found in any of the {len(pool.paths)} slides given")
    indices = sorted(masks)
    shares = np.array([areas[i] for i in indices]) / sum(areas.values())
    counts = np.floor(shares * count).astype(int)
    counts[np.argsort(-shares)[: count - counts.sum()]] += 1  # hand out the remainder
    rows = []
    for index, n in zip(indices, counts, strict=True):
        if n == 0:
            continue
        avoided = None if avoid is None else avoid[avoid[:, 0] == index, 1:]
        corners = sample_tissue_locations(
            pool.get(index), masks[index], n, size, mpp, rng, min_tissue, avoided
        )
        rows.append(np.column_stack([np.full(n, index), corners]))
    plan = np.concatenate(rows)
    return plan[rng.permutation(len(plan))]
