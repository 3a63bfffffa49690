"""A deterministic synthetic H&E slide with a known region map, generated offline.

Colour comes from Beer-Lambert mixing of hematoxylin and eosin optical densities, so
stain vectors look like a real scan. Regions are drawn from smooth random fields:
background (white glass), stroma (pink, fibrous, sparse spindle nuclei), tumour (dense,
large, pleomorphic, hyperchromatic nuclei) and normal (regular glands: a lumen ringed by
evenly spaced small nuclei). `region_map` is the ground truth later issues train on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_rckd.atomic import atomic_path

logger = logging.getLogger(__name__)

REGION_CLASSES = ("background", "stroma", "tumour", "normal")
BACKGROUND, STROMA, TUMOUR, NORMAL = range(4)
MPP = 0.5
TILE = 512
MAP_DOWNSAMPLE = 32  # region map pixel = 32 level-0 pixels = 16 µm

# optical density per unit stain (Ruifrok & Johnston's H&E vectors)
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29], np.float32)
_EOSIN = np.array([0.10, 0.85, 0.35], np.float32)  # a little bluer than R&J: pink, not magenta


@dataclass(frozen=True)
class SyntheticSlide:
    path: Path
    region_map: np.ndarray  # uint8, one of REGION_CLASSES per MAP_DOWNSAMPLE² block
    map_downsample: int
    mpp: float


def synthetic_region_map(size: int = 8192, seed: int = 0) -> np.ndarray:
    """Ground truth (uint8 class index) at 1/MAP_DOWNSAMPLE of level 0, without rendering."""
    return _classify(*_fields(size, seed))


def make_synthetic_slide(
    path: str | os.PathLike, size: int = 8192, seed: int = 0
) -> SyntheticSlide:
    """Render the slide in tiles and write a pyramidal OME-TIFF atomically to ``path``."""
    import tifffile

    path = Path(path)
    started = time.perf_counter()
    tissue, kind = _fields(size, seed)
    region_map = _classify(tissue, kind)
    renderer = _Renderer(size, seed, tissue, kind)
    level1 = np.empty((size // 2, size // 2, 3), np.uint8)

    def level0_tiles():
        for ty in range(0, size, TILE):
            for tx in range(0, size, TILE):
                tile = renderer.tile(ty, tx)
                level1[ty // 2 : (ty + TILE) // 2, tx // 2 : (tx + TILE) // 2] = _halve(tile)
                yield tile

    n_reduced = max(int(np.log2(size / 512)), 1)  # down to about 512 px
    options = dict(
        tile=(TILE, TILE), compression="jpeg", compressionargs={"level": 90}, photometric="rgb"
    )
    pixels_per_cm = (int(1e4 / MPP), 1)
    # a 64k² slide's JPEG tiles may pass classic TIFF's 4 GB offsets: BigTIFF beyond 32k px
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=size > 32768, ome=True) as tif:
        tif.write(
            level0_tiles(),
            shape=(size, size, 3),
            dtype=np.uint8,
            subifds=n_reduced,
            resolution=pixels_per_cm,
            resolutionunit="CENTIMETER",
            metadata={
                "axes": "YXS",
                "PhysicalSizeX": MPP,
                "PhysicalSizeY": MPP,
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeYUnit": "µm",
            },
            **options,
        )
        level = level1  # filled while level 0 was written
        for factor in range(1, n_reduced + 1):
            if factor > 1:
                level = _halve(level)
            scale = 2**factor
            tif.write(
                level,
                subfiletype=1,
                resolution=(pixels_per_cm[0] // scale, 1),
                resolutionunit="CENTIMETER",
                **options,
            )
    logger.info("synthetic slide %s written in %.1f s", path.name, time.perf_counter() - started)
    return SyntheticSlide(path, region_map, MAP_DOWNSAMPLE, MPP)


def _fields(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth low-resolution fields: tissue (>0 is tissue) and kind (tumour high, normal low)."""
    rng = np.random.default_rng(seed)
    n = size // MAP_DOWNSAMPLE
    yy, xx = np.mgrid[0:n, 0:n] / n - 0.5
    distance = np.hypot(yy, xx)
    # one large irregular section that never touches the slide's edges
    tissue = np.minimum(0.36 - distance + 0.2 * _smooth_noise(rng, n, n / 10), 0.46 - distance)
    kind = _smooth_noise(rng, n, n / 8)
    # rescale so that about 30% of the tissue is tumour (kind > 0.55) and 30% normal (< -0.55)
    low, mid, high = np.quantile(kind[tissue > 0], [0.3, 0.5, 0.7])
    kind = np.where(kind > mid, (kind - mid) / (high - mid), (kind - mid) / (mid - low)) * 0.55
    return tissue.astype(np.float32), kind.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma, mode="wrap")
    return noise / (noise.std() + 1e-9)


def _classify(tissue: np.ndarray, kind: np.ndarray) -> np.ndarray:
    region = np.full(tissue.shape, BACKGROUND, np.uint8)
    region[tissue > 0] = STROMA
    region[(tissue > 0) & (kind > 0.55)] = TUMOUR
    region[(tissue > 0) & (kind < -0.55)] = NORMAL
    return region


def _halve(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).astype(np.uint16)
    return (blocks.sum(axis=(1, 3)) // 4).astype(np.uint8)


class _Renderer:
    """Draws level-0 tiles from the fields and a global, tile-independent list of nuclei."""

    def __init__(self, size: int, seed: int, tissue: np.ndarray, kind: np.ndarray):
        self.size, self.seed = size, seed
        self.tissue, self.kind = tissue, kind
        rng = np.random.default_rng(seed + 1)
        self.fibres = ndimage.gaussian_filter(
            rng.standard_normal((size // 8, size // 8)), (0.6, 4.0), mode="wrap"
        ).astype(np.float32)
        self.fibres /= self.fibres.std()
        self.nuclei = _place_nuclei(rng, size, tissue, kind)
        self.glands = self.nuclei.pop("glands")

    def tile(self, ty: int, tx: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, ty, tx))
        yy, xx = np.mgrid[ty : ty + TILE, tx : tx + TILE].astype(np.float32)
        tissue = _sample(self.tissue, yy, xx, MAP_DOWNSAMPLE)
        kind = _sample(self.kind, yy, xx, MAP_DOWNSAMPLE)
        fibres = _sample(self.fibres, yy, xx, 8)
        inside = np.clip(tissue * 40, 0, 1)  # soft tissue edge over ~1 map pixel
        eosin = inside * (0.20 + 0.07 * fibres + 0.06 * np.clip(kind, -1, 1))
        hema = inside * 0.05
        for cy, cx, r in self.glands:
            if abs(cy - ty - TILE / 2) < TILE / 2 + r and abs(cx - tx - TILE / 2) < TILE / 2 + r:
                dist = np.hypot(yy - cy, xx - cx)
                lumen = np.clip((r * 0.55 - dist) / 3, 0, 1)
                epithelium = np.clip((r - dist) / 3, 0, 1) - lumen
                eosin = eosin * (1 - lumen) + 0.12 * epithelium
                hema = hema * (1 - lumen)
        for cy, cx, a, b, angle, darkness in self.nuclei_in(ty, tx):
            _draw_nucleus(hema, eosin, cy - ty, cx - tx, a, b, angle, darkness, rng)
        density = hema[..., None] * _HEMATOXYLIN + eosin[..., None] * _EOSIN
        rgb = 255.0 * np.exp(-density * 2.3) + rng.normal(0, 2.0, density.shape)
        return np.clip(rgb, 0, 255).astype(np.uint8)

    def nuclei_in(self, ty: int, tx: int) -> np.ndarray:
        centres = self.nuclei["centres"]
        margin = 20
        keep = (
            (centres[:, 0] > ty - margin)
            & (centres[:, 0] < ty + TILE + margin)
            & (centres[:, 1] > tx - margin)
            & (centres[:, 1] < tx + TILE + margin)
        )
        return np.column_stack([centres[keep], self.nuclei["shape"][keep]])


def _sample(field: np.ndarray, yy: np.ndarray, xx: np.ndarray, step: int) -> np.ndarray:
    coords = np.stack([(yy - step / 2) / step, (xx - step / 2) / step])
    return ndimage.map_coordinates(field, coords, order=1, mode="nearest")


def _place_nuclei(rng, size: int, tissue: np.ndarray, kind: np.ndarray) -> dict:
    """Nuclei for the whole slide: (y, x) centres and (a, b, angle, darkness) shapes in pixels."""
    region = _classify(tissue, kind)
    cell = MAP_DOWNSAMPLE

    def region_at(points):
        index = np.clip((points // cell).astype(int), 0, region.shape[0] - 1)
        return region[index[:, 0], index[:, 1]]

    # tumour: dense jittered grid, large, pleomorphic, dark
    step = 22
    grid = np.mgrid[0:size:step, 0:size:step].reshape(2, -1).T.astype(np.float32)
    grid += rng.uniform(-7, 7, grid.shape)
    tumour = grid[region_at(grid) == TUMOUR]
    tumour_shape = np.column_stack(
        [
            rng.uniform(8, 15, len(tumour)),
            rng.uniform(6, 11, len(tumour)),
            rng.uniform(0, np.pi, len(tumour)),
            rng.uniform(0.75, 1.1, len(tumour)),
        ]
    )
    # stroma: sparse elongated spindle nuclei along the fibres
    sparse = rng.uniform(0, size, (size * size // 4000, 2)).astype(np.float32)
    stroma = sparse[region_at(sparse) == STROMA]
    stroma_shape = np.column_stack(
        [
            rng.uniform(8, 11, len(stroma)),
            rng.uniform(2.5, 3.5, len(stroma)),
            rng.normal(0, 0.25, len(stroma)),
            rng.uniform(0.5, 0.7, len(stroma)),
        ]
    )
    # normal: glands on a regular lattice, each a ring of evenly spaced small round nuclei
    gstep, radius = 150, 55.0
    lattice = np.mgrid[gstep // 2 : size : gstep, gstep // 2 : size : gstep].reshape(2, -1).T
    lattice = lattice.astype(np.float32) + rng.uniform(-8, 8, lattice.shape)
    glands = lattice[region_at(lattice) == NORMAL]
    angles = np.linspace(0, 2 * np.pi, 18, endpoint=False)
    ring = np.stack([np.sin(angles), np.cos(angles)], axis=1) * (radius * 0.78)
    normal = (glands[:, None, :] + ring[None]).reshape(-1, 2)
    normal_shape = np.column_stack(
        [
            np.full(len(normal), 5.5),
            np.full(len(normal), 4.5),
            np.tile(angles + np.pi / 2, len(glands)),
            np.full(len(normal), 0.55),
        ]
    )
    return {
        "centres": np.concatenate([tumour, stroma, normal]),
        "shape": np.concatenate([tumour_shape, stroma_shape, normal_shape]).astype(np.float32),
        "glands": [(float(y), float(x), radius) for y, x in glands],
    }


def _draw_nucleus(hema, eosin, cy, cx, a, b, angle, darkness, rng) -> None:
    """A soft-edged textured ellipse of hematoxylin (chromatin granules), in place."""
    r = int(np.ceil(a)) + 2
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, hema.shape[0])
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, hema.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (dx * cos + dy * sin) / a, (-dx * sin + dy * cos) / b
    inside = np.clip((1 - np.hypot(u, v)) * min(a, b) / 1.5, 0, 1)
    granules = 0.75 + 0.5 * rng.random(inside.shape)
    hema[y0:y1, x0:x1] = np.maximum(hema[y0:y1, x0:x1], inside * darkness * granules)
    eosin[y0:y1, x0:x1] *= 1 - 0.6 * inside


def sample_tissue_tiles(count: int, seed: int = 0, size: int = 4096) -> list[np.ndarray]:
    """A few 512² tissue tiles of a small synthetic slide (for benchmarks that need real-looking pixels)."""
    renderer = _Renderer(size, seed, *_fields(size, seed))
    tiles = []
    for ty in range(size // 4, size * 3 // 4, TILE):
        tile = renderer.tile(ty, size // 2 - TILE // 2)
        if tile.mean() < 235:  # skip glass
            tiles.append(tile)
        if len(tiles) == count:
            break
    return tiles
