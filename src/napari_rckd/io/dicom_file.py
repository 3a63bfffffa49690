"""A single DICOM whole-slide file that wsidicom refuses, read with pydicom alone.

wsidicom opens whole series and wants what a scanner writes (VOLUME image type, pixel
spacing, ...). Converters often write one tiled file without those, yet its frames are an
ordinary grid of tiles over the total pixel matrix, so it is shown as a one-level slide.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pydicom

from napari_rckd.io.dicom_frames import (
    DicomFrameReader,
    FrameSource,
    frame_decoder,
    locate_frames,
    pixel_data_length,
)
from napari_rckd.io.dicom_order import runs_down_columns
from napari_rckd.io.geometry import MAX_CHUNK_BYTES, MAX_PIXELS
from napari_rckd.io.levels import DamageLog, add_coarsened_levels, dask_level
from napari_rckd.io.slide import Slide, SlideError, check_decodes
from napari_rckd.io.tiles import TileCache

# A tile grid this large (16M tiles, 2⁴⁰ pixels at 256² px tiles) is no slide: a sparse
# layout cannot make a small file claim more, however small its tiles.
MAX_TILES = 2**24


def open_dicom_file(path: Path, mpp: float | None) -> Slide:
    handle = open(path, "rb")  # noqa: SIM115 - the slide closes it
    try:
        return _build_slide(handle, path, mpp)
    except BaseException:
        handle.close()
        raise


def _build_slide(handle, path: Path, mpp_override: float | None) -> Slide:
    try:
        ds = pydicom.dcmread(handle, stop_before_pixels=True)
    except Exception as error:
        raise SlideError(
            f"{path.name} is not a readable DICOM file ({type(error).__name__}: {error}); "
            "copy or export it again."
        ) from error
    syntax = ds.file_meta.TransferSyntaxUID
    length = pixel_data_length(handle, syntax, path)
    height, width = _required(ds, path, "TotalPixelMatrixRows", "TotalPixelMatrixColumns")
    tile = _required(ds, path, "Rows", "Columns")
    samples, bits = int(ds.get("SamplesPerPixel", 1)), int(ds.get("BitsAllocated", 8))
    if samples not in (1, 3) or bits != 8:
        raise SlideError(
            f"{path.name} holds {samples} samples of {bits} bits per pixel; napari-rckd reads "
            "8-bit RGB or grey brightfield slides (convert fluorescence first)."
        )
    if height * width > MAX_PIXELS or tile[0] * tile[1] * samples > MAX_CHUNK_BYTES:
        raise SlideError(
            f"{path.name} declares a {width:,} x {height:,} pixel image in {tile[1]:,} x "
            f"{tile[0]:,} tiles, which no slide has; the file is damaged, so export it again."
        )
    decode = frame_decoder(syntax, path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    frames = locate_frames(handle, syntax, length, count, tile[0] * tile[1] * samples, path)
    source = FrameSource(handle.fileno(), frames, decode, tile)
    frame_of = _tile_layout(ds, (height, width), source, path)
    cache = TileCache()
    reader = DicomFrameReader(source, frame_of, width, cache)
    damage = DamageLog(path.name)
    levels, readers = [dask_level(reader, (height, width), tile, damage)], [reader]
    add_coarsened_levels(levels, readers, damage)
    check_decodes(reader, path)

    def close() -> None:
        cache.clear()
        handle.close()

    return Slide(
        path,
        levels,
        readers,
        mpp=mpp_override if mpp_override is not None else _mpp(ds),
        magnification=None,
        vendor="dicom",
        compression=syntax.name,
        tile_shape=tile,
        closers=[close],
        cache=cache,
    )


def _required(ds, path: Path, *keywords: str) -> tuple[int, ...]:
    """Positive integers the layout cannot do without, or one sentence saying which is missing."""
    values = tuple(ds.get(keyword) for keyword in keywords)
    if any(v is None for v in values):
        missing = " and ".join(k for k, v in zip(keywords, values, strict=True) if v is None)
        raise SlideError(
            f"{path.name} is not a DICOM whole-slide image: it declares no {missing}, so it "
            "is no tiled slide; export it as a VL whole-slide image."
        )
    if any(int(v) < 1 for v in values):
        raise SlideError(f"{path.name} declares an empty image; the file is damaged.")
    return tuple(int(v) for v in values)


def _tile_layout(ds, shape, source: FrameSource, path: Path) -> Callable[[int], int]:
    """Frame index for each tile (row-major), -1 where a sparse layout stores none.

    TILED_FULL stores the tiles in row-major order (further focal planes and optical paths
    after them, which are not shown); TILED_SPARSE says where each frame lies; a file that
    says neither is looked at (`dicom_order.py`).
    """
    tile, count = source.tile_shape, len(source)
    across, down = -(-shape[1] // tile[1]), -(-shape[0] // tile[0])
    if across * down > MAX_TILES:
        raise SlideError(
            f"{path.name} declares {across * down:,} tiles, which no slide has; the file is "
            "damaged, so export it again."
        )
    kind = str(ds.get("DimensionOrganizationType", "")).upper()
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if kind == "TILED_SPARSE" or (kind != "TILED_FULL" and _has_positions(per_frame)):
        places = _sparse_places(per_frame, tile, across, down, count, path)
        return lambda index: places.get(index, -1)
    if count < across * down:
        raise SlideError(
            f"{path.name} holds {count:,} frames where its {shape[1]:,} x {shape[0]:,} pixels in "
            f"{tile[1]} x {tile[0]} tiles need {across * down:,}, so it is damaged; export it again."
        )
    if kind != "TILED_FULL" and runs_down_columns(source, across, down):
        return lambda index: (index % across) * down + index // across
    return lambda index: index


def _has_positions(per_frame) -> bool:
    return bool(per_frame) and "PlanePositionSlideSequence" in per_frame[0]


def _sparse_places(per_frame, tile, across: int, down: int, count: int, path: Path) -> dict:
    """Tile index -> frame, from each frame's position (the first focal plane found wins)."""
    if not per_frame or len(per_frame) != count:
        raise SlideError(
            f"{path.name} is a sparse tiled DICOM slide whose {count:,} frames have "
            f"{len(per_frame or ()):,} positions, so it is damaged; export it again."
        )
    places: dict[int, int] = {}
    for frame, item in enumerate(per_frame):
        try:
            position = item.PlanePositionSlideSequence[0]
            row = int(position.RowPositionInTotalImagePixelMatrix) - 1
            column = int(position.ColumnPositionInTotalImagePixelMatrix) - 1
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
            raise SlideError(
                f"{path.name} frame {frame} has no position in the pixel matrix, so the "
                "sparse slide cannot be laid out; export it again."
            ) from error
        grid_row, grid_column = row // tile[0], column // tile[1]
        if (
            row % tile[0]
            or column % tile[1]
            or not (0 <= grid_row < down and 0 <= grid_column < across)
        ):
            raise SlideError(
                f"{path.name} places frame {frame} at row {row + 1}, column {column + 1}, off "
                f"its {tile[1]} x {tile[0]} tile grid; napari-rckd reads tiles on a grid only."
            )
        places.setdefault(grid_row * across + grid_column, frame)
    return places


def _mpp(ds) -> float | None:
    """µm per pixel from PixelSpacing (mm, row then column): shared, else the first frame's."""
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            value = float(getattr(ds, keyword)[0].PixelMeasuresSequence[0].PixelSpacing[1]) * 1000
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None
