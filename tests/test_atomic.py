"""Atomic writes keep the old file whole when writing fails, and leave no temporary behind."""

from __future__ import annotations

import json

import pytest

from napari_rckd.atomic import atomic_open, atomic_path, write_json_atomic


def test_success_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_writers_that_take_a_path_write_to_a_sibling(tmp_path):
    target = tmp_path / "slide.tif"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and not temporary.exists()
        temporary.write_bytes(b"pixels")
        assert not target.exists()
    assert target.read_bytes() == b"pixels"
