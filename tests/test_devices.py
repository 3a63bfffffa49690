"""One device layer: the resolver, torchrun's place, and the file hash every layer shares."""

from __future__ import annotations

import hashlib

import pytest

from napari_rckd import devices
from napari_rckd.errors import RckdError


def test_resolve_device_names_a_device_that_exists(monkeypatch):
    import torch

    assert devices.resolve_device("CPU") == devices.resolve_device("cpu", 3) == "cpu"
    with pytest.raises(RckdError, match="device 'tpu' is unknown; use one of auto, cpu, cuda"):
        devices.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device(None) == devices.resolve_device("cuda") == "cuda"
    assert devices.resolve_device("auto", 1) == devices.resolve_device("cuda", 1) == "cuda:1"
    assert devices.resolve_device("cuda:3", 1) == "cuda:3"  # an explicit GPU is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RckdError, match="not available on this machine"):
        devices.resolve_device("cuda:0")


def test_training_runs_on_the_device_the_one_resolver_names():
    from napari_rckd.training import distributed

    assert not hasattr(distributed, "resolve_device")  # one resolver: napari_rckd.devices
    runtime = distributed.setup("auto")
    try:
        assert str(runtime.device).startswith(devices.resolve_device("auto"))
    finally:
        distributed.teardown(runtime)


def test_launch_reads_torchrun_s_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert devices.launch() == devices.Launch(0, 1, 0) and not devices.launch().distributed
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    place = devices.launch()
    assert (place.rank, place.world_size, place.local_rank) == (5, 8, 1) and place.distributed


def test_sha256_prefix_is_the_start_of_the_file_s_sha256(tmp_path):
    from napari_rckd.files import sha256_prefix

    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 5000)  # over one 1 MiB read block
    full = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_prefix(path) == full[:16] and sha256_prefix(path, 8) == full[:8]
