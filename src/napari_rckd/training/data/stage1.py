"""Stage-1 (RCKD pretraining) dataset: random tissue tiles and their cached teacher response.

The tile plan (which slide, where) is drawn once from a seed, so the same tiles come back
every epoch and the teacher's answers can be cached; only the augmentation changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_rckd.atomic import atomic_open
from napari_rckd.errors import RckdError
from napari_rckd.io.find import find_slides
from napari_rckd.io.slide import DamagedSlideError
from napari_rckd.training.data.augment import Augment, item_rng
from napari_rckd.training.data.cache import CachedTile, ResponseCache
from napari_rckd.training.data.labelled import to_tensor
from napari_rckd.training.data.sampling import (
    MIN_TISSUE,
    SlidePool,
    plan_tissue_tiles,
    slide_identity,
)

log = logging.getLogger(__name__)


class TissueTileDataset(Dataset):
    """``count`` tissue tiles of ``size`` px at ``mpp`` from ``slides`` (files or folders, or a
    `SlidePool` of them that knows the pixel size of slides whose files do not say it).

    Items: ``image`` float32 3×H×W in [0, 1] and ``target`` float32 C×H×W (channel 0 the
    teacher's nuclear probability, channel 1 instance boundaries when ``boundaries``).
    """

    def __init__(
        self,
        slides: str | os.PathLike | Iterable[str | os.PathLike] | SlidePool,
        teacher,
        cache_dir: str | os.PathLike,
        count: int = 1000,
        size: int = 256,
        mpp: float = 0.5,
        seed: int = 0,
        boundaries: bool = False,
        augment: Augment | None = None,
        avoid: TissueTileDataset | None = None,
    ):
        # A `SlidePool` brings the pixel sizes of slides whose files do not say theirs.
        self.pool = slides if isinstance(slides, SlidePool) else SlidePool(find_slides(slides))
        self.teacher = teacher
        self.cache = ResponseCache(cache_dir, teacher.identity)
        self.size, self.mpp, self.seed = size, mpp, seed
        self.boundaries = boundaries
        self.augment = augment
        self._slide_ids = [slide_identity(path) for path in self.pool.paths]
        self._avoid = None
        if avoid is not None:  # held-out tiles: none may overlap a training tile
            if (avoid.size, avoid.mpp, avoid.pool.paths) != (size, mpp, self.pool.paths):
                raise RckdError("avoid= needs a dataset of the same slides, tile size and mpp")
            self._avoid = avoid.plan
        avoided = None if avoid is None else hashlib.sha256(avoid.plan.tobytes()).hexdigest()
        mpps = [self.pool.mpp_table.get(str(p.resolve())) for p in self.pool.paths]
        slide_mpp = self.pool.fallback_mpp
        plan_key = [self._slide_ids, count, size, mpp, seed, slide_mpp, MIN_TISSUE, avoided]
        plan_key += [mpps] if any(mpps) else []  # plans from before mpp tables keep their key
        self.plan = self._cached_plan(plan_key)
        self.pool.close()  # workers reopen what they read
        self.damaged: set[int] = set()  # plan indices whose tile could not be decoded

    def _cached_plan(self, plan_key: list) -> np.ndarray:
        """The tile plan, saved beside the responses: a resumed run or another DDP rank
        gets the same tiles without detecting tissue again."""
        digest = hashlib.sha256(json.dumps(plan_key).encode()).hexdigest()[:32]
        path = self.cache.root / "plans" / f"{digest}.npy"
        if path.exists():
            try:
                plan = np.load(path)
                if plan.ndim == 2 and plan.shape[1] == 3 and len(plan):
                    return plan
                raise ValueError(f"shape {plan.shape}")
            except (OSError, ValueError) as error:
                log.warning("tile plan %s is corrupt (%s); sampling the tiles again", path, error)
        _, count, size, mpp, seed, _, min_tissue, _ = plan_key[:8]
        plan = plan_tissue_tiles(self.pool, count, size, mpp, seed, min_tissue, self._avoid)
        with atomic_open(path) as handle:
            np.save(handle, plan)
        return plan

    def __len__(self) -> int:
        return len(self.plan)

    def _key(self, index: int) -> str:
        slide, y, x = (int(v) for v in self.plan[index])
        return self.cache.key(self._slide_ids[slide], y, x, self.mpp, self.size)

    def tile(self, index: int) -> CachedTile:
        """The tile and teacher response, from the cache or computed and stored."""
        key = self._key(index)
        cached = self.cache.load(key, self.size)
        if cached is not None:
            return cached
        slide, y, x = (int(v) for v in self.plan[index])
        try:
            image = self.pool.get(slide).read_at_mpp(y, x, self.size, self.mpp)
        except DamagedSlideError as error:
            # learnt as glass (white, no nuclei), so the plan, and every DDP rank's share of
            # it, stays the same; `fill_cache` counts these and refuses a mostly damaged plan
            if not self.damaged:
                log.warning("skipping tiles that cannot be read (learnt as glass): %s", error)
            self.damaged.add(index)
            image = np.full((self.size, self.size, 3), 255, np.uint8)
        output = self.teacher.predict(image, self.mpp)
        return self.cache.store(key, image, output.prob, output.labels)

    def precompute(self) -> Iterator[tuple[int, int]]:
        """Fill the cache; yields (done, total) after each tile so callers can show progress."""
        total = len(self)
        for index in range(total):
            self.tile(index)
            yield index + 1, total

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tile = self.tile(index)
        image = to_tensor(tile.image)
        channels = [tile.prob] + ([tile.boundary.astype(np.float32)] if self.boundaries else [])
        target = torch.from_numpy(np.stack(channels))
        if self.augment is not None:
            image, target = self.augment(item_rng(), image, target)
        return {"image": image, "target": target}
