"""Single DICOM whole-slide files wsidicom refuses open through pydicom: layouts, mpp, damage."""

from __future__ import annotations

import io

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.io import SlideError, open_slide

pytest.importorskip("wsidicom")
pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate, get_frame  # noqa: E402

BIOPSY = "slides/dicom/prostate-biopsy.dcm"


def _frame_of_file(path, index: int) -> np.ndarray:
    """Frame ``index`` straight from pydicom's encapsulated frame access, decoded by Pillow."""
    from PIL import Image

    with open(path, "rb") as handle:
        header = pydicom.dcmread(handle, stop_before_pixels=True)
        handle.seek(handle.tell() + 12)  # the Pixel Data tag, VR and undefined length
        data = get_frame(handle, index, number_of_frames=int(header.NumberOfFrames))
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_single_file_biopsy_opens_with_its_frames_where_they_belong():
    path = shared_path(BIOPSY)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    with open_slide(path) as slide:
        assert slide.shape == (header.TotalPixelMatrixRows, header.TotalPixelMatrixColumns)
        assert slide.tile_shape == (header.Rows, header.Columns) == (500, 500)
        # the file records no PixelSpacing (no functional groups at all): no mpp, never a guess
        assert "SharedFunctionalGroupsSequence" not in header and slide.mpp is None
        assert slide.vendor == "dicom" and slide.compression == "JPEG Baseline (Process 1)"
        # its 7 x 6 frames run down the columns, which the file does not declare:
        # the tile at row 1, column 2 is frame 2 * 6 + 1
        tile = slide.read_region(0, 500, 1000, 500, 500)
        np.testing.assert_array_equal(tile, _frame_of_file(path, 13))
        np.testing.assert_array_equal(np.asarray(slide.levels[0][500:1000, 1000:1500]), tile)


def _tissue(height: int, width: int) -> np.ndarray:
    with open_slide(shared_path("slides/cmu-1-small-region.svs")) as slide:
        return slide.read_region(0, 600, 300, height, width)


def write_dicom(path, pixels, tile, *, order="row", organization=None, keep=None, spacing=None):
    """A single-file VL whole-slide image of uncompressed frames wsidicom refuses (no ImageType).

    ``order`` "column" writes the frames down the columns; ``keep`` (grid cells) writes only
    those frames, with per-frame positions (TILED_SPARSE).
    """
    height, width = pixels.shape[:2]
    down, across = -(-height // tile), -(-width // tile)
    padded = np.zeros((down * tile, across * tile, 3), np.uint8)
    padded[:height, :width] = pixels
    cells = [(r, c) for r in range(down) for c in range(across)]
    if order == "column":
        cells = [(r, c) for c in range(across) for r in range(down)]
    if keep is not None:
        cells = [cell for cell in cells if cell in keep]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.VLWholeSlideMicroscopyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = tile
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = height, width
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(cells)
    if organization:
        ds.DimensionOrganizationType = organization
    if spacing is not None:
        measures = Dataset()
        measures.PixelSpacing = [spacing, spacing]
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        ds.SharedFunctionalGroupsSequence = [shared]
    if keep is not None:
        ds.PerFrameFunctionalGroupsSequence = [
            _positioned(r * tile + 1, c * tile + 1) for r, c in cells
        ]
    frames = [padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r, c in cells]
    ds.PixelData = b"".join(frame.tobytes() for frame in frames)
    ds.save_as(path, enforce_file_format=True)
    return path


def _positioned(row: int, column: int) -> Dataset:
    position = Dataset()
    position.RowPositionInTotalImagePixelMatrix = row
    position.ColumnPositionInTotalImagePixelMatrix = column
    item = Dataset()
    item.PlanePositionSlideSequence = [position]
    return item


@pytest.mark.parametrize("order", ["row", "column"])
def test_undeclared_frame_order_is_read_from_the_tissue(order, tmp_path):
    pixels = _tissue(700, 900)
    path = write_dicom(tmp_path / f"{order}.dcm", pixels, 128, order=order)
    with open_slide(path) as slide:
        assert slide.shape == (700, 900) and slide.mpp is None
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 700, 900), pixels)


def test_declared_tiled_full_is_row_major_and_pixel_spacing_gives_the_mpp(tmp_path):
    pixels = _tissue(300, 260)
    path = write_dicom(
        tmp_path / "full.dcm", pixels, 64, organization="TILED_FULL", spacing=0.00025
    )
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 300, 260), pixels)


def test_sparse_frames_are_placed_by_position_and_missing_tiles_are_white(tmp_path):
    pixels = _tissue(256, 256)
    keep = {(0, 1), (1, 0)}
    path = write_dicom(tmp_path / "sparse.dcm", pixels, 128, organization="TILED_SPARSE", keep=keep)
    with open_slide(path) as slide:
        region = slide.read_region(0, 0, 0, 256, 256)
    np.testing.assert_array_equal(region[:128, 128:], pixels[:128, 128:])
    np.testing.assert_array_equal(region[128:, :128], pixels[128:, :128])
    assert region[:128, :128].min() == 255 and region[128:, 128:].min() == 255


def test_frames_off_the_tile_grid_are_refused_in_one_sentence(tmp_path):
    path = write_dicom(tmp_path / "odd.dcm", _tissue(256, 256), 128, keep={(0, 0)})
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence = [_positioned(5, 1)]
    ds.save_as(path)
    with pytest.raises(SlideError, match=r"odd.dcm places frame 0 at row 5, column 1, off its"):
        open_slide(path)


def test_encapsulated_frames_past_the_end_are_truncated(tmp_path):
    data = shared_path(BIOPSY).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SlideError, match=r"^cut.dcm (is truncated|packs 42 frames)") as raised:
        open_slide(path)
    assert "\n" not in str(raised.value)


def test_a_corrupt_first_frame_is_refused_at_open(tmp_path):
    data = bytearray(shared_path(BIOPSY).read_bytes())
    first = data.index(b"\xff\xd8\xff")  # the first frame's JPEG header
    data[first + 600 : first + 4000] = b"\x00garbage" * 425
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(bytes(data))
    with pytest.raises(SlideError, match=r"corrupt.dcm cannot be decoded"):
        open_slide(path)


def test_a_dicom_image_that_is_no_tiled_slide_is_explained(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(64)
    path = tmp_path / "xray.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(SlideError, match=r"xray.dcm is not a DICOM whole-slide image: it declares"):
        open_slide(path)


def test_frames_split_into_fragments_are_joined_by_the_offset_table(tmp_path):
    import imagecodecs

    pixels = _tissue(256, 384)
    ds = pydicom.dcmread(write_dicom(tmp_path / "native.dcm", pixels, 128))
    tiles = [pixels[r : r + 128, c : c + 128] for r in (0, 128) for c in (0, 128, 256)]
    encoded = [imagecodecs.jpeg8_encode(t, level=95) for t in tiles]
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate(encoded, fragments_per_frame=2, has_bot=True)
    ds["PixelData"].VR = "OB"
    path = tmp_path / "jpeg.dcm"
    ds.save_as(path, enforce_file_format=True)
    with open_slide(path) as slide:
        for index, (r, c) in enumerate((r, c) for r in (0, 128) for c in (0, 128, 256)):
            expected = imagecodecs.jpeg8_decode(encoded[index])
            np.testing.assert_array_equal(slide.read_region(0, r, c, 128, 128), expected)
