"""Ground truth mixed with pseudo-labelled tissue (self-training a nuclei teacher).

The labelled nuclei sources are few and alike; unlabeled slides show stains, scanners and
tissues they do not. A share of the training crops is replaced by unlabeled tiles answered
by a teacher (`TissueTileDataset`), so the network also learns what that teacher does on
tissue no annotator outlined. Validation stays on ground truth.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_rckd.errors import RckdError


class MixedDataset(Dataset):
    """``labelled`` items with about ``share`` of them replaced by items of ``pseudo``.

    Which index is replaced, and by which pseudo tile, is fixed by ``seed`` and the index, so
    a resumed run sees the same stream. Pseudo items get an all-ones ``mask`` (every pixel of
    a teacher's answer is known), matching the labelled items' keys.
    """

    def __init__(self, labelled: Dataset, pseudo: Dataset, share: float, seed: int = 0):
        if not 0 < share < 1:
            raise RckdError(f"the pseudo-labelled share must be between 0 and 1, got {share}")
        if not len(pseudo):
            raise RckdError("no pseudo-labelled tiles to mix in")
        self.labelled, self.pseudo, self.share, self.seed = labelled, pseudo, share, seed

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # 7919 keeps this stream apart from the crops' own (seed, index) generator
        rng = np.random.default_rng([self.seed, 7919, index])
        if rng.random() >= self.share:
            return self.labelled[index]
        item = self.pseudo[int(rng.integers(len(self.pseudo)))]
        return {**item, "mask": torch.ones_like(item["target"])}
