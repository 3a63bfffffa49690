"""One code path for one process or many: device choice, process group, samplers, reductions.

Under ``torchrun --nproc-per-node N`` the environment carries RANK, WORLD_SIZE and
LOCAL_RANK; `setup` then joins the process group (NCCL on GPUs, gloo on CPUs). Run as a
plain script, the same calls fall through to single-process no-ops, so `fit` never branches
on "am I distributed" except where only rank 0 may act (checkpoints, logs, callbacks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from napari_rckd import devices
from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Where this process computes and which part of the job it is."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_process_group: bool = False  # we started it, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device_request: str) -> Runtime:
    """Pick the device and, when launched by torchrun, join the process group."""
    place = devices.launch()
    if not place.distributed and not dist.is_initialized():
        return Runtime(device=torch.device(devices.resolve_device(device_request)))
    device = torch.device(devices.resolve_device(device_request, place.local_rank))
    if device.type == "mps":
        raise RckdError("distributed training needs CUDA GPUs or CPUs; use device 'cuda' or 'cpu'")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        # NCCL moves CUDA tensors between GPUs; gloo is the CPU backend.
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    runtime = Runtime(device, dist.get_rank(), dist.get_world_size(), owns)
    log.info("process %d of %d on %s", runtime.rank, runtime.world_size, device)
    return runtime


def teardown(runtime: Runtime) -> None:
    """Leave the process group we joined (a caller's own group is left alone)."""
    if runtime.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place (no-op in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(value: object) -> list:
    """Every process's ``value`` in rank order (a one-element list in a single process)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward, so after the last training step
    each rank holds statistics of its own batches; validation and the final weights use
    rank 0's, the ones its checkpoint holds.
    """
    if dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class ResumableSampler(Sampler[int]):
    """A shuffled, sharded epoch of indices that can start part-way through.

    Wraps `DistributedSampler` (so every rank sees an equal, disjoint share, reshuffled by
    seed and epoch) and drops the first ``skip`` indices: a resumed run continues at the
    exact sample where the interrupted one stopped, without loading the ones it had seen.
    """

    def __init__(self, dataset_length: int, rank: int, world_size: int, seed: int) -> None:
        self.base = torch.utils.data.DistributedSampler(
            range(dataset_length), num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(self.base)
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return len(self.base) - self.skip


class ShardSampler(Sampler[int]):
    """Every rank's disjoint, in-order share of a validation set, without padding.

    `DistributedSampler` pads with repeated samples so ranks get equal counts; for metrics
    that would count some tiles twice, so validation shards as ``rank::world_size`` instead.
    """

    def __init__(self, dataset_length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, dataset_length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
