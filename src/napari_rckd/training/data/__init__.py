"""Training data: stage-1 tissue tiles with cached teacher responses, stage-2 labelled sets.

Datasets yield dicts of tensors (see docs/architecture.md): stage 1 ``image`` and
``target``; classification ``image``, ``label`` and ``group``; segmentation ``image`` and
``mask``. Importing this package imports torch.
"""

from napari_rckd.io.find import find_slides
from napari_rckd.training.data.augment import Augment
from napari_rckd.training.data.cache import ResponseCache
from napari_rckd.training.data.labelled import LabelledTile, TileFolderDataset, scan_tile_folders
from napari_rckd.training.data.regions import MaskTileDataset, RegionTileDataset
from napari_rckd.training.data.splits import split_by_group
from napari_rckd.training.data.stage1 import TissueTileDataset

__all__ = [
    "Augment",
    "LabelledTile",
    "MaskTileDataset",
    "RegionTileDataset",
    "ResponseCache",
    "TileFolderDataset",
    "TissueTileDataset",
    "find_slides",
    "scan_tile_folders",
    "split_by_group",
]
