"""Where each frame of a single DICOM file lies, and a tile reader that decodes them from there.

pydicom's frame access walks the fragments from the start for every frame, through one shared
file position; indexing them once at open and reading with ``os.pread`` keeps each tile read
one system call, and lets threads read without a lock.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import imagecodecs
import numpy as np
from pydicom import uid
from pydicom.encaps import parse_basic_offsets, parse_fragments

from napari_rckd.io.slide import SlideError
from napari_rckd.io.tiles import TileCache, TileGridReader

# (offset, length) of each piece of one frame's bytes in the file
Frame = tuple[tuple[int, int], ...]

DECODERS = {
    uid.JPEGBaseline8Bit: imagecodecs.jpeg8_decode,
    uid.JPEGExtended12Bit: imagecodecs.jpeg8_decode,
    uid.JPEGLossless: imagecodecs.ljpeg_decode,
    uid.JPEGLosslessSV1: imagecodecs.ljpeg_decode,
    uid.JPEGLSLossless: imagecodecs.jpegls_decode,
    uid.JPEGLSNearLossless: imagecodecs.jpegls_decode,
    uid.JPEG2000Lossless: imagecodecs.jpeg2k_decode,
    uid.JPEG2000: imagecodecs.jpeg2k_decode,
    uid.HTJ2KLossless: imagecodecs.jpeg2k_decode,
    uid.HTJ2KLosslessRPCL: imagecodecs.jpeg2k_decode,
    uid.HTJ2K: imagecodecs.jpeg2k_decode,
}
NATIVE = {uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian}
PIXEL_DATA = 0x7FE00010


def frame_decoder(syntax: uid.UID, path: Path) -> Callable[[bytes], np.ndarray]:
    """The codec for the transfer syntax; native frames are already pixels."""
    if syntax in NATIVE:
        return lambda data: np.frombuffer(data, np.uint8)
    if syntax not in DECODERS:
        raise SlideError(
            f"{path.name} stores its frames as {syntax.name}, which napari-rckd cannot decode; "
            "export it with JPEG, JPEG-LS, JPEG 2000 or no compression."
        )
    return DECODERS[syntax]


def pixel_data_length(handle, syntax: uid.UID, path: Path) -> int:
    """Read the Pixel Data header where pydicom stopped, leaving ``handle`` at its value."""
    expected = 8 if syntax.is_implicit_VR else 12  # explicit OB/OW: VR and 2 reserved bytes
    header = handle.read(expected)
    if len(header) < 4 or struct.unpack("<HH", header[:4]) != divmod(PIXEL_DATA, 0x10000):
        raise SlideError(f"{path.name} holds no pixel data; it may be truncated or not an image.")
    if len(header) < expected:
        raise _truncated(path, os.fstat(handle.fileno()).st_size)
    return struct.unpack("<I", header[-4:])[0]


def locate_frames(handle, syntax: uid.UID, length: int, count: int, frame_bytes: int, path: Path):
    """Where the ``count`` frames lie (`Frame` each), from the Pixel Data value on."""
    size = os.fstat(handle.fileno()).st_size
    if syntax in NATIVE:
        return _native(handle.tell(), length, count, frame_bytes, size, path)
    try:
        frames = _encapsulated(handle, count, path)
    except (struct.error, ValueError, EOFError) as error:  # pydicom's reading of item tags
        raise SlideError(
            f"{path.name} is truncated or damaged: its frame table cannot be read ({error}); "
            "copy or download it again."
        ) from error
    if max(offset + n for frame in frames for offset, n in frame) > size:
        raise _truncated(path, size)
    return frames


def _native(start: int, length: int, count: int, frame_bytes: int, size: int, path: Path):
    """Uncompressed frames back to back, checked before listing (a damaged count is huge)."""
    need = count * frame_bytes
    if length < need:
        raise SlideError(
            f"{path.name} holds {length:,} bytes of pixels where its {count:,} frames need "
            f"{need:,}, so it is damaged; copy or export it again."
        )
    if start + need > size:
        raise _truncated(path, size)
    return [((start + i * frame_bytes, frame_bytes),) for i in range(count)]


def _truncated(path: Path, size: int) -> SlideError:
    return SlideError(
        f"{path.name} is truncated: its image data runs past the end of the file "
        f"({size:,} bytes); copy or download it again."
    )


def _encapsulated(handle, count: int, path: Path) -> list[Frame]:
    """Group the fragments into frames: one fragment each, or as the basic offset table says."""
    offsets = parse_basic_offsets(handle)
    found, positions = parse_fragments(handle)
    if found == 0:
        raise SlideError(f"{path.name} is truncated: it holds no image frames; copy it again.")
    handle.seek(positions[-1] + 4)
    lengths = [b - a - 8 for a, b in zip(positions, positions[1:], strict=False)]
    lengths.append(struct.unpack("<I", handle.read(4))[0])
    pieces = [(p + 8, n) for p, n in zip(positions, lengths, strict=True)]
    if found == count:
        return [(piece,) for piece in pieces]
    if len(offsets) != count:
        raise SlideError(
            f"{path.name} packs {count:,} frames into {found:,} fragments without an offset "
            "table to tell them apart, so it is damaged or truncated; copy or export it again."
        )
    relative = [p - positions[0] for p in positions]
    bounds = [bisect.bisect_left(relative, o) for o in offsets] + [found]
    return [tuple(pieces[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


class FrameSource:
    """Frame ``k`` decoded to (rows, columns, samples), read with ``os.pread`` (no shared position)."""

    def __init__(
        self,
        fd: int,
        frames: Sequence[Frame],
        decode: Callable[[bytes], np.ndarray],
        tile_shape: tuple[int, int],
    ):
        self._fd = fd
        self._frames = frames
        self._decode = decode
        self.tile_shape = tile_shape

    def __len__(self) -> int:
        return len(self._frames)

    def __call__(self, k: int) -> np.ndarray:
        pieces = self._frames[k]
        data = b"".join(os.pread(self._fd, n, offset) for offset, n in pieces)
        expected = sum(n for _, n in pieces)
        if len(data) != expected:
            raise EOFError(f"read {len(data)} of {expected} bytes")
        return np.asarray(self._decode(data)).reshape(*self.tile_shape, -1)


class DicomFrameReader(TileGridReader):
    """Tiles are frames, placed by ``frame_of`` (tile index -> frame); a tile with none is white."""

    def __init__(
        self, source: FrameSource, frame_of: Callable[[int], int], width: int, cache: TileCache
    ):
        super().__init__(cache, 0, source.tile_shape, width)
        self._source = source
        self._frame_of = frame_of

    def _decode_tile(self, index: int) -> np.ndarray:
        frame = self._frame_of(index)
        if frame < 0:
            return np.full((self.tile_height, self.tile_width, 3), 255, np.uint8)
        return self._source(frame)
