"""Bad input gives one clear sentence naming the file, from the API, the CLI and the napari reader."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import tifffile

from conftest import shared_path
from napari_rckd.commands import info
from napari_rckd.io import SlideError, open_slide


def _file(path, content: bytes):
    path.write_bytes(content)
    return path


def _truncated(tmp_path):
    source = shared_path("slides/cmu-1-small-region.svs")
    data = source.read_bytes()
    path = tmp_path / "truncated.svs"
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_data(tmp_path):
    """An OME-TIFF whose directories come first: the tiles are what is missing."""
    source = shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif")
    data = source.read_bytes()
    path = tmp_path / "cut.ome.tif"
    path.write_bytes(data[: len(data) * 3 // 4])
    return path


def _unknown_compression(tmp_path):
    path = tmp_path / "odd-codec.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), tile=(16, 16), photometric="rgb")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(50001)
    return path


def _corrupt_tiles(tmp_path):
    source = shared_path("slides/cmu-1-small-region.pyramid-jpeg.ome.tif")
    path = tmp_path / "corrupt.ome.tif"
    shutil.copy(source, path)
    with tifffile.TiffFile(path) as tif:
        # garble the coarsest level's tile, which open_slide decodes as its check
        page = tif.series[0].levels[-1].pages[0]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00garbage" * (count // 8))
    return path


def _pyramid(path):
    """A small tiled JPEG TIFF with one reduced level, directories first and tiles after."""
    image = np.random.default_rng(0).integers(0, 255, (256, 192, 3), np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(64, 64), compression="jpeg", photometric="rgb")
        tif.write(image[::2, ::2], tile=(64, 64), compression="jpeg", subfiletype=1)
    return path


def _cut(percent):
    def make(tmp_path):
        data = _pyramid(tmp_path / "whole.tif").read_bytes()
        return _file(tmp_path / f"cut{percent}.tif", data[: len(data) * percent // 100])

    return make


def _absurd_dimensions(tmp_path):
    path = _pyramid(tmp_path / "absurd.tif")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(10**9)
        tif.pages[0].tags["ImageLength"].overwrite(10**9)
    return path


def _offsets_past_eof(tmp_path):
    path = _pyramid(tmp_path / "offsets.tif")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        offsets = tif.pages[1].tags["TileOffsets"]
        offsets.overwrite([v + 10**8 for v in offsets.value])
    return path


def _symlink_loop(tmp_path):
    (tmp_path / "a.svs").symlink_to(tmp_path / "b.svs")
    (tmp_path / "b.svs").symlink_to(tmp_path / "a.svs")
    return tmp_path / "a.svs"


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.svs")
    return tmp_path / "pipe.svs"


def _folder_named_svs(tmp_path):
    (tmp_path / "folder.svs").mkdir()
    return tmp_path / "folder.svs"


BAD_INPUTS = {
    "missing": (lambda tmp: tmp / "nope.svs", "does not exist"),
    "directory": (lambda tmp: tmp, "is a directory"),
    "empty": (lambda tmp: _file(tmp / "empty.svs", b""), "is empty"),
    "not-an-image": (
        lambda tmp: _file(tmp / "notes.svs", b"meeting notes, not a slide"),
        "notes.svs could not be opened as a slide",
    ),
    # an SVS keeps its directories at the end: cutting it leaves a header and no directory
    "truncated": (_truncated, "truncated.svs .*truncated"),
    "truncated-data": (_truncated_data, "cut.ome.tif is truncated"),
    "unknown-compression": (_unknown_compression, "odd-codec.tif cannot be decoded"),
    "corrupt-tiles": (_corrupt_tiles, "corrupt.ome.tif cannot be decoded"),
    "truncated-10%": (_cut(10), "cut10.tif is truncated"),
    "truncated-50%": (_cut(50), "cut50.tif is truncated"),
    "truncated-99%": (_cut(99), "cut99.tif is truncated"),
    "directory-named-svs": (_folder_named_svs, "folder.svs is a directory"),
    "absurd-dimensions": (
        _absurd_dimensions,
        "absurd.tif declares a 1,000,000,000 x 1,000,000,000",
    ),
    "offsets-past-eof": (_offsets_past_eof, "offsets.tif is truncated"),
    "symlink-loop": (_symlink_loop, "a.svs is a symbolic link to nothing"),
    "fifo": (_fifo, "pipe.svs is not a regular file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_api_raises_one_clear_sentence(case, tmp_path):
    make, message = BAD_INPUTS[case]
    with pytest.raises(SlideError, match=message) as raised:
        open_slide(make(tmp_path))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_info_prints_the_sentence(case, tmp_path, capsys):
    from napari_rckd.cli import main

    make, message = BAD_INPUTS[case]
    assert main(["info", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-rckd info: error:") and re.search(message, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["not-an-image", "truncated", "empty"])
def test_napari_reader_raises_the_sentence(case, tmp_path):
    import npe2

    npe2.PluginManager.instance().discover()
    make, message = BAD_INPUTS[case]
    with pytest.raises(SlideError, match=message):
        npe2.read([str(make(tmp_path))], stack=False, plugin_name="napari-rckd")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_says_permission_denied(tmp_path):
    path = _pyramid(tmp_path / "private.tif")
    path.chmod(0)
    with pytest.raises(SlideError, match="private.tif cannot be read: permission denied"):
        open_slide(path)


def test_permission_denied_is_named_even_when_tests_run_as_root(tmp_path, monkeypatch):
    """Root reads any file, so CI simulates the refusal the operating system gives a user."""
    from napari_rckd.io import opener

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(opener, "open", refuse, raising=False)
    with pytest.raises(SlideError, match="private.tif cannot be read: permission denied"):
        open_slide(_pyramid(tmp_path / "private.tif"))


def test_wrong_extension_is_read_by_its_content(tmp_path):
    tiff = _pyramid(tmp_path / "pyramid.tif")
    renamed = _file(tmp_path / "pyramid.png", tiff.read_bytes())
    with open_slide(renamed) as slide:
        assert slide.shape == (256, 192) and len(slide.levels) == 2
    png = tmp_path / "photo.svs"
    from PIL import Image

    Image.fromarray(np.full((40, 30, 3), 9, np.uint8)).save(png, format="PNG")
    with open_slide(png) as slide:
        assert slide.vendor == "plain" and slide.read_region(0, 0, 0, 40, 30).max() == 9


def test_bad_mpp_override_is_rejected():
    with pytest.raises(SlideError, match="mpp must be a positive number"):
        open_slide(shared_path("slides/cmu-1-small-region.svs"), mpp=-1)


def test_dicom_without_wsidicom_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wsidicom(name, *args, **kwargs):
        if name == "wsidicom":
            raise ImportError("No module named 'wsidicom'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wsidicom)
    with pytest.raises(SlideError, match=r"pip install 'napari-rckd\[dicom\]'"):
        open_slide(shared_path("slides/dicom/cmu-1-small-region"))


def test_info_module_runs_without_the_cli(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    info.add_arguments(parser)
    assert info.run(parser.parse_args([str(shared_path("slides/tcga-cr-7395-jp2k.svs"))])) == 0
    out = capsys.readouterr().out
    assert "unknown (not recorded in the file)" in out
    assert "0: 3567 x 4443" in out and "1: 1783 x 2221" in out
    assert "thumbnail 768 x 956" in out and "height x width" in out


def test_a_folder_of_dicom_slides_says_which_folder_to_give(tmp_path, capsys):
    pytest.importorskip("wsidicom")
    from napari_rckd.cli import main

    series = shared_path("slides/dicom/cmu-1-small-region")
    (tmp_path / "case-7").symlink_to(series, target_is_directory=True)
    with pytest.raises(SlideError, match=r"subfolders, not one slide.*here: case-7/") as raised:
        open_slide(tmp_path)
    assert "WsiDicom" not in str(raised.value)
    # a folder with a single-file slide beside a series (the data set's dicom/ folder)
    assert main(["info", str(series.parent)]) == 2
    err = capsys.readouterr().err
    assert "no complete DICOM whole-slide series" in err and "prostate-biopsy.dcm" in err
    assert "WsiDicom" not in err and err.count("\n") == 1
