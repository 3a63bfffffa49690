"""Model sources: what a tile window becomes for each of the three result kinds.

* ``NucleiSource`` — a teacher (the built-in one by default, or a dense student checkpoint
  taken as one): a nuclear probability and instance labels, stitched across tiles without seams.
* ``SubtypeSource`` — a classification checkpoint: one class and C probabilities per tile,
  stored as maps with one pixel per tile (``mpp = input_mpp * tile``).
* ``RegionSource`` — a dense segmentation checkpoint (e.g. cancer region): a C-channel
  probability image and a thresholded class mask.

A source runs a batch of RGB windows to plain numpy outputs (``predict``) and writes one
window's outputs into its result stores (``write``); the predictor owns reading, batching,
threads and caching.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit

from napari_rckd.errors import RckdError
from napari_rckd.files import sha256_prefix
from napari_rckd.inference.runner import ModelRunner, softmax
from napari_rckd.inference.scheduler import NUCLEI_MIN_SCREEN_PX
from napari_rckd.inference.stitching import clear_owned, label_dtype, stitch_instances
from napari_rckd.inference.store import ResultStore
from napari_rckd.inference.tiling import Box, TileGrid

# Teachers label a window of core + 2 × halo; 32 px at 0.5 µm/px (16 µm) holds a whole nucleus.
TEACHER_CORE = 256
TEACHER_HALO = 32
# Dense models drop this fraction of their input on each side, where context is missing.
DENSE_HALO_FRACTION = 1 / 8
# Whole-slide runs give dense models windows at least this large (px, a multiple of 32): the
# same halo around a larger core wastes less of every window (a 224-px model's 28-px halo
# leaves 168² of 224², 56 %, in live view; 456² of 512², 79 %, here).
WHOLE_SLIDE_WINDOW = 512
REGION_THRESHOLD = 0.5


@dataclass(frozen=True)
class ResultSpec:
    """One result array a source fills: ``per_tile`` results have one pixel per grid tile."""

    name: str
    kind: str  # a ResultStore kind: labels, classes, probability
    dtype: str
    channels: tuple[str, ...] | None = None
    per_tile: bool = False


class Source:
    """Base: a named model at ``mpp`` tiled with ``core`` + 2 × ``halo`` windows."""

    name: str
    mpp: float
    core: int
    halo: int
    min_screen_px: float = 0.0
    evictable = True  # live results of its tiles may be evicted to bound memory (`evict`)
    preview_of: str | None = None  # a quick stand-in for that source's results, live only

    @property
    def kind(self) -> str:
        """What the user toggles it as: a preview goes with the source it stands in for."""
        return self.preview_of or self.name

    @property
    def identity(self) -> str:
        raise NotImplementedError

    @property
    def window(self) -> int:
        return self.core + 2 * self.halo

    def for_whole_slide(self) -> Source:
        """The source a whole-slide run tiles with: itself, unless ``widen`` applies."""
        return self

    def grid(self, slide_shape: tuple[int, int], slide_mpp: float) -> TileGrid:
        return TileGrid.for_slide(slide_shape, slide_mpp, self.mpp, self.core, self.halo)

    def results(self, grid: TileGrid) -> list[ResultSpec]:
        raise NotImplementedError

    def predict(self, windows: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Outputs for a B×H×W×3 uint8 batch, one dict (result name -> array) per window."""
        raise NotImplementedError

    def write(self, stores: dict[str, ResultStore], grid: TileGrid, row: int, col: int, out):
        raise NotImplementedError

    def evict(self, stores: dict[str, ResultStore], grid: TileGrid, row: int, col: int) -> Box:
        """Clear tile (row, col)'s results (live memory is bounded); returns the box of result
        pixels that may now hold nothing (for ``ResultStore.release``)."""
        for spec in self.results(grid):
            _clear_core(stores[spec.name], grid, row, col)
        return grid.core(row, col)


def _load_model(path: str | Path, task: str, option: str, what: str, device: str):
    from napari_rckd.models import load_checkpoint

    path = Path(path).expanduser()
    if not path.is_file() or path.suffix != ".safetensors":
        raise RckdError(
            f"{option} {path} is not a .safetensors checkpoint that exists; give a checkpoint "
            f"written by napari-rckd training ({what})."
        )
    model, metadata = load_checkpoint(path)
    if model.config.task != task:
        raise RckdError(
            f"{option} {path} is a {model.config.task!r} checkpoint but {what} needs a {task!r} "
            f"model; pass it to the option for its task instead."
        )
    return ModelRunner(model, device), f"{path.stem}:{sha256_prefix(path)}", metadata


def widen(source: Source) -> Source:
    """A dense source with windows of ``WHOLE_SLIDE_WINDOW`` (or its own, if larger) around the
    same halo; the model is shared, the identity says the window (cached tiles of one
    geometry are never taken for the other's)."""
    window = max(WHOLE_SLIDE_WINDOW, -(-source.window // 32) * 32)
    if window == source.window:
        return source
    wide = copy.copy(source)
    wide.core = window - 2 * source.halo
    wide._identity = f"{source._identity}:window={window}"
    return wide


def compile_models(sources) -> int:
    """torch.compile every network among ``sources`` (checkpoints and network nuclei teachers)
    in place; returns how many. Each compiles on its first batch of a shape, then runs faster."""
    runners = [source.runner for source in sources if getattr(source, "runner", None) is not None]
    for runner in runners:
        runner.compile()
    return len(runners)


def _write_core(store: ResultStore, grid: TileGrid, row: int, col: int, window_array):
    store.write(grid.core(row, col), grid.crop_core(window_array, row, col))


def _clear_core(store: ResultStore, grid: TileGrid, row: int, col: int) -> None:
    core = grid.core(row, col)
    lead = store.levels[0].shape[:-2]
    store.write(core, np.zeros((*lead, int(core.height), int(core.width)), store.levels[0].dtype))


class NucleiSource(Source):
    """Nuclei from a teacher: a network one (named, or a TorchScript or dense student file) runs
    whole batches through its `ModelRunner`, any other one window by window."""

    name = "nuclei"
    min_screen_px = NUCLEI_MIN_SCREEN_PX

    def __init__(self, spec: str | Path = "builtin", device: str = "cpu", mpp: float | None = None):
        from napari_rckd.teachers import get_teacher

        self.teacher = get_teacher(str(spec), mpp=mpp, device=device)
        self.runner = getattr(self.teacher, "runner", None)  # None: not a network
        self._identity = self.teacher.identity
        self.mpp = self.teacher.mpp
        self.core, self.halo = TEACHER_CORE, TEACHER_HALO

    @property
    def identity(self) -> str:
        return f"nuclei:{self._identity}"

    def results(self, grid: TileGrid) -> list[ResultSpec]:
        return [
            ResultSpec("nuclei_labels", "labels", label_dtype(grid).name),
            ResultSpec("nuclei_prob", "probability", "float32"),
        ]

    def predict(self, windows: np.ndarray) -> list[dict[str, np.ndarray]]:
        if self.runner is not None:  # windows are read at the teacher's mpp
            outputs = self.teacher.predict_batch(windows)
        else:
            outputs = [self.teacher.predict(window, self.mpp) for window in windows]
        return [{"nuclei_prob": o.prob, "nuclei_labels": o.labels} for o in outputs]

    def write(self, stores, grid, row, col, out):
        stitch_instances(stores["nuclei_labels"], grid, row, col, out["nuclei_labels"])
        _write_core(stores["nuclei_prob"], grid, row, col, out["nuclei_prob"])

    def evict(self, stores, grid, row, col) -> Box:
        clear_owned(stores["nuclei_labels"], grid, row, col)  # its nuclei reach into the halo
        _clear_core(stores["nuclei_prob"], grid, row, col)
        return grid.window(row, col)


class PreviewNucleiSource(NucleiSource):
    """A fast nuclei model shown, faintly, where the chosen one has not answered yet: a slow
    model (``builtin`` on a CPU) fills a view about 3x later than ``csat`` (docs/analyze.md)."""

    name = "nuclei_preview"
    preview_of = "nuclei"

    @property
    def identity(self) -> str:
        return f"preview:{self._identity}"

    def results(self, grid: TileGrid) -> list[ResultSpec]:
        return [ResultSpec("preview_labels", "labels", label_dtype(grid).name)]

    def predict(self, windows: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [{"preview_labels": o["nuclei_labels"]} for o in super().predict(windows)]

    def write(self, stores, grid, row, col, out):
        stitch_instances(stores["preview_labels"], grid, row, col, out["preview_labels"])

    def evict(self, stores, grid, row, col) -> Box:
        clear_owned(stores["preview_labels"], grid, row, col)
        return grid.window(row, col)

    def hide(self, stores, grid: TileGrid, box_level0: Box) -> None:
        """Clear the preview under ``box_level0``, where the chosen model has answered."""
        box = grid.to_grid(box_level0)
        store = stores["preview_labels"]
        box = Box(*map(math.floor, box[:2]), *map(math.ceil, box[2:]))
        box = box.intersect(Box(0, 0, *store.shape))
        shown = store.read(box)
        if shown.any():  # else writing zeros would only hold memory for nothing
            store.write(box, np.zeros_like(shown))


class SubtypeSource(Source):
    """Tissue subtype per tile from a classification checkpoint (no halo: one label per tile)."""

    name = "subtype"
    evictable = False  # one pixel per tile: evicting it would give back nothing

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.runner, self._identity, _ = _load_model(
            path, "classify", "--subtype", "tissue subtype", device
        )
        config = self.runner.model.config
        self.mpp, self.core, self.halo = config.input_mpp, config.tile_size, 0
        self.class_names = list(config.class_names)
        self.class_colors = list(config.class_colors)

    @property
    def identity(self) -> str:
        return f"subtype:{self._identity}"

    def results(self, grid: TileGrid) -> list[ResultSpec]:
        return [
            ResultSpec("subtype_class", "classes", "uint8", per_tile=True),
            ResultSpec("subtype_prob", "probability", "float32", tuple(self.class_names), True),
        ]

    def predict(self, windows: np.ndarray) -> list[dict[str, np.ndarray]]:
        probs, _, winners = softmax(self.runner(windows))
        return [
            {
                # 0 = not computed, k + 1 = class k
                "subtype_class": np.array([[winner + 1]], np.uint8),
                "subtype_prob": p[:, None, None],
            }
            for p, winner in zip(probs, winners, strict=True)
        ]

    def write(self, stores, grid, row, col, out):
        box = Box(row, col, row + 1, col + 1)
        stores["subtype_class"].write(box, out["subtype_class"])
        stores["subtype_prob"].write(box, out["subtype_prob"])


class RegionSource(Source):
    """Cancer region (or any dense segmentation): class probabilities and a thresholded mask."""

    name = "region"

    def __init__(self, path: str | Path, device: str = "cpu", threshold: float = REGION_THRESHOLD):
        self.runner, self._identity, _ = _load_model(
            path, "dense", "--region", "the cancer region (a segmentation model)", device
        )
        config = self.runner.model.config
        self.mpp = config.input_mpp
        self.halo = max(8, round(config.tile_size * DENSE_HALO_FRACTION))
        self.core = config.tile_size - 2 * self.halo
        self.class_names = list(config.class_names)
        self.class_colors = list(config.class_colors)
        self.threshold = threshold

    @property
    def identity(self) -> str:
        return f"region:{self._identity}:threshold={self.threshold:g}"

    def for_whole_slide(self) -> Source:
        return widen(self)

    def results(self, grid: TileGrid) -> list[ResultSpec]:
        return [
            ResultSpec("region_mask", "classes", "uint8"),
            ResultSpec("region_prob", "probability", "float32", tuple(self.class_names)),
        ]

    def predict(self, windows: np.ndarray) -> list[dict[str, np.ndarray]]:
        logits = self.runner(windows)
        if logits.shape[1] == 1:  # one output: sigmoid, the mask is that class above threshold
            probs = expit(logits)
            masks = (probs[:, 0] >= self.threshold).astype(np.uint8)
        else:  # classes: softmax, the mask is the winning class (k + 1) where it is confident
            probs, best, winners = softmax(logits)
            masks = np.where(best >= self.threshold, winners + 1, 0).astype(np.uint8)
        return [
            {"region_prob": p.astype(np.float32, copy=False), "region_mask": m}
            for p, m in zip(probs, masks, strict=True)
        ]

    def write(self, stores, grid, row, col, out):
        _write_core(stores["region_mask"], grid, row, col, out["region_mask"])
        _write_core(stores["region_prob"], grid, row, col, out["region_prob"])
