"""Bad input gives one clear sentence naming the file, from the API, the CLI and the napari reader."""

from __future__ import annotations

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
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_api_raises_one_clear_sentence(case, tmp_path):
    make, message = BAD_INPUTS[case]
    with pytest.raises(SlideError, match=message) as raised:
        open_slide(make(tmp_path))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("case", ["missing", "empty", "truncated"])
def test_cli_info_prints_the_sentence(case, tmp_path, capsys):
    from napari_rckd.cli import main

    make, message = BAD_INPUTS[case]
    try:
        code = main(["info", str(make(tmp_path))])
    except ModuleNotFoundError as error:  # another command's module is not written yet
        pytest.skip(f"CLI parser incomplete: {error}")
    assert code == 2
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


def test_bad_mpp_override_is_rejected():
    with pytest.raises(SlideError, match="mpp must be a positive number"):
        open_slide(shared_path("slides/cmu-1-small-region.svs"), mpp=-1)


def test_dicom_without_wsi_frames_is_explained():
    pytest.importorskip("wsidicom")
    with pytest.raises(SlideError, match="prostate-biopsy.dcm is not a DICOM whole-slide image"):
        open_slide(shared_path("slides/dicom/prostate-biopsy.dcm"))


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
    assert "thumbnail 768x956" in out
