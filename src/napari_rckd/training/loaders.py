"""Data loaders for `fit`: resumable, sharded across processes, with one clear sentence for
data that cannot make a batch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from napari_rckd.errors import RckdError
from napari_rckd.training.checkpointing import TrainState
from napari_rckd.training.config import FitConfig
from napari_rckd.training.distributed import ResumableSampler, Runtime, ShardSampler


def make_train_loader(dataset: Dataset, config: FitConfig, runtime: Runtime):
    """The training loader, its resumable sampler (None for iterable data), steps per epoch."""
    # A private generator seeds the workers' RNGs per epoch, the same on a resumed run.
    generator = torch.Generator()
    common = dict(
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        pin_memory=runtime.device.type == "cuda",
        drop_last=True,  # equal, full batches on every rank: no BatchNorm on a batch of one
        persistent_workers=config.num_workers > 0,
        generator=generator,
    )
    if isinstance(dataset, IterableDataset):
        if config.steps is None:
            raise RckdError(
                "the training data is a stream without a length; give FitConfig.steps, not epochs"
            )
        return DataLoader(dataset, **common), None, None
    if len(dataset) == 0:
        raise RckdError(
            "the training set is empty; point the dataset at images or tiles to learn from"
        )
    sampler = ResumableSampler(len(dataset), runtime.rank, runtime.world_size, config.seed)
    steps_per_epoch = len(sampler.base) // config.batch_size
    if steps_per_epoch == 0:
        raise RckdError(
            f"the training set has {len(dataset)} samples, fewer than one batch of "
            f"{config.batch_size} per process ({runtime.world_size} processes); lower batch_size"
        )
    return DataLoader(dataset, sampler=sampler, **common), sampler, steps_per_epoch


def make_val_loader(dataset: Dataset, config: FitConfig, runtime: Runtime) -> DataLoader:
    if isinstance(dataset, IterableDataset):
        sampler = None  # a stream shards itself
    elif len(dataset) < runtime.world_size:
        raise RckdError(
            f"the validation set has {len(dataset)} samples, fewer than the {runtime.world_size} "
            "processes; add validation data or run on fewer processes"
        )
    else:
        sampler = ShardSampler(len(dataset), runtime.rank, runtime.world_size)
    return DataLoader(
        dataset,
        batch_size=config.val_batch_size or config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=runtime.device.type == "cuda",
    )


def batches_forever(
    loader: DataLoader, sampler, state: TrainState, config: FitConfig
) -> Iterator[dict]:
    """Batches forever, epoch after epoch, starting where ``state`` says the run is."""
    while True:
        if sampler is not None:
            # Skip what this epoch already trained on, without loading it.
            sampler.set_epoch(state.epoch, skip=state.batch_in_epoch * config.batch_size)
        loader.generator.manual_seed(config.seed + state.epoch)
        produced = False
        for batch in loader:
            produced = True
            yield batch
        if not produced:
            raise RckdError(
                "the training data produced no batch; check that the dataset yields samples"
            )
