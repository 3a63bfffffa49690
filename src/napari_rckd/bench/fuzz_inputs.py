"""Seed TIFFs for the reader fuzz, and the mutations applied to them.

The seeds cover the layouts `open_slide` handles differently: tiled and stripped, JPEG,
Deflate and uncompressed, grey, SubIFD and page pyramids, an Aperio-style file with a
thumbnail, and a single level wide enough to get coarsened display levels. Half of the
mutations land in the TIFF structure (directories and the tag values they point to),
where a random byte is far more likely to change what the reader believes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

MUTATIONS = ("bitflip", "overwrite", "truncate", "duplicate")
# Values that sit on the edges of what a TIFF field can mean (sizes, counts, offsets).
INTERESTING = (0, 1, 2, 7, 255, 256, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 10**9)


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    structure: tuple[tuple[int, int], ...]  # byte ranges of directories and tag values


def write_seeds(folder: Path) -> list[Seed]:
    """Write the seed files into ``folder`` and return them with their structure ranges."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = _tissue_like(rng, 96, 128)
    rgb = {"photometric": "rgb"}
    writers = {
        "tiled-jpeg.tif": lambda p: tifffile.imwrite(
            p, image, tile=(16, 16), compression="jpeg", **rgb
        ),
        "tiled-deflate-pages.tif": lambda p: _page_pyramid(p, image),
        "strips-deflate.tif": lambda p: tifffile.imwrite(
            p, image, rowsperstrip=16, compression="deflate", **rgb
        ),
        "strips-raw.tif": lambda p: tifffile.imwrite(p, image, rowsperstrip=8, **rgb),
        "strips-jpeg.tif": lambda p: tifffile.imwrite(
            p, image, rowsperstrip=16, compression="jpeg", **rgb
        ),
        "grey-tiled.tif": lambda p: tifffile.imwrite(
            p, image[..., 1], tile=(16, 16), compression="deflate", photometric="minisblack"
        ),
        "subifd-pyramid.ome.tif": lambda p: _subifd_pyramid(p, image),
        "aperio-like.svs": lambda p: _aperio_like(p, image),
        "wide-single-level.tif": lambda p: tifffile.imwrite(
            p, _tissue_like(rng, 64, 8448), tile=(64, 64), compression="deflate", **rgb
        ),
    }
    seeds = []
    for name, write in writers.items():
        path = folder / name
        write(path)
        seeds.append(Seed(name, path.read_bytes(), _structure(path)))
    return seeds


def mutate(seed: Seed, rng: np.random.Generator) -> tuple[str, bytes]:
    """One randomly chosen mutation of the seed: (its name, the mutated bytes)."""
    kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    data = bytearray(seed.data)
    if kind == "truncate":
        return kind, bytes(data[: int(rng.integers(len(data)))])
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            position = _position(seed, rng)
            data[position] ^= 1 << int(rng.integers(8))
    elif kind == "overwrite":
        position = _position(seed, rng)
        if rng.random() < 0.5:
            value = INTERESTING[int(rng.integers(len(INTERESTING)))]
            width = 4 if value > 0xFFFF or rng.random() < 0.5 else 2
            patch = struct.pack("<I" if width == 4 else "<H", value & (256**width - 1))
        else:
            patch = rng.bytes(int(rng.integers(1, 17)))
        data[position : position + len(patch)] = patch
    else:  # duplicate: copy a run of bytes over another place (or insert it)
        start = int(rng.integers(len(data)))
        chunk = bytes(data[start : start + int(rng.integers(1, 257))])
        position = _position(seed, rng)
        if rng.random() < 0.5:
            data[position:position] = chunk
        else:
            data[position : position + len(chunk)] = chunk
    return kind, bytes(data)


def _position(seed: Seed, rng: np.random.Generator) -> int:
    if seed.structure and rng.random() < 0.5:
        start, end = seed.structure[int(rng.integers(len(seed.structure)))]
        return int(rng.integers(start, max(end, start + 1)))
    return int(rng.integers(len(seed.data)))


def _structure(path: Path) -> tuple[tuple[int, int], ...]:
    ranges = [(0, 16)]  # the header and the first directory's offset
    with tifffile.TiffFile(path) as tif:
        pages = {page.offset: page for page in tif.pages}
        for series in tif.series:
            for level in series.levels:
                pages.update({page.offset: page for page in level.pages if page is not None})
        for page in pages.values():
            tags = list(page.tags)
            ranges.append((page.offset, page.offset + 2 + 12 * len(tags) + 4))
            ranges += [(t.valueoffset, t.valueoffset + t.valuebytecount) for t in tags]
    return tuple(ranges)


def _tissue_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth pink-and-purple blobs: compresses like tissue, not like noise."""
    coarse = rng.integers(90, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    return np.ascontiguousarray(coarse.repeat(16, 0).repeat(16, 1)[:height, :width])


def _page_pyramid(path: Path, image: np.ndarray) -> None:
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(16, 16), compression="deflate", photometric="rgb")
        tif.write(
            image[::2, ::2], tile=(16, 16), compression="deflate", photometric="rgb", subfiletype=1
        )


def _subifd_pyramid(path: Path, image: np.ndarray) -> None:
    options = {"tile": (16, 16), "compression": "jpeg", "photometric": "rgb"}
    metadata = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(image, subifds=2, metadata=metadata, **options)
        tif.write(image[::2, ::2], subfiletype=1, **options)
        tif.write(image[::4, ::4], subfiletype=1, **options)


def _aperio_like(path: Path, image: np.ndarray) -> None:
    """Baseline, thumbnail, label and macro pages, described the way Aperio's scanners do."""
    head = "Aperio Image Library v12.0.0"
    height, width = image.shape[:2]
    pages = [
        (
            image,
            f"{head}\r\n{width}x{height} (16x16) JPEG/RGB|AppMag = 20|MPP = 0.5",
            {"tile": (16, 16)},
        ),
        (image[::4, ::4], f"{head}\n{width}x{height} -> {width // 4}x{height // 4}", {}),
        (image[:32, :48], f"{head}\nlabel 48x32", {"subfiletype": 1, "compression": None}),
        (image[:32, :64], f"{head}\nmacro 64x32", {"subfiletype": 9, "compression": "deflate"}),
    ]
    with tifffile.TiffWriter(path) as tif:
        for pixels, description, options in pages:
            options = {"compression": "jpeg", **options}
            tif.write(pixels, photometric="rgb", metadata=None, description=description, **options)
