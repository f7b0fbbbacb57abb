"""Where a rank's batches come from: built-in data, a user's callable, or a user's Dataset."""

from __future__ import annotations

from typing import Any

import torch

from parakit.config.run import RunConfig
from parakit.engine.workloads import built_in_data


def slice_rows(batch: Any, lo: int, hi: int) -> Any:
    """Rows lo:hi of a tensor, or of every tensor in a tuple, list or dict."""
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi]
    if isinstance(batch, (tuple, list)):
        return type(batch)(slice_rows(b, lo, hi) for b in batch)
    if isinstance(batch, dict):
        return {k: slice_rows(v, lo, hi) for k, v in batch.items()}
    raise TypeError(f"data must give tensors (or tuples/dicts of them), got {type(batch).__name__}")


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        if device.type == "cuda" and batch.device.type == "cpu" and not batch.is_pinned():
            # From pageable memory the driver stages the copy and may first wait for the GPU
            # to finish the work queued before it: a hidden host-device sync every step, so
            # the host cannot queue the next step ahead. From pinned memory (torch caches it)
            # the copy is queued like a kernel.
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


class CallableBatches:
    """A user's ``(step, global_batch_size) -> (inputs, targets)``: every rank calls it and keeps
    its slice, so the global batch is the same at any world size."""

    def __init__(self, fn):
        self.fn = fn

    def rows(self, step: int, global_batch: int, lo: int, hi: int):
        inputs, targets = self.fn(step, global_batch)
        if len(inputs) != global_batch:
            raise ValueError(
                f"data callable returned {len(inputs)} rows for step {step}; expected the "
                f"global batch of {global_batch}"
            )
        return slice_rows(inputs, lo, hi), slice_rows(targets, lo, hi)


class DatasetBatches:
    """A torch Dataset read through a DistributedSampler: rank r takes every world-th example of
    a seeded permutation, so the ranks' batches of a step make up single's global batch."""

    def __init__(self, dataset, *, rank: int, world_size: int, per_rank: int, seed: int):
        from torch.utils.data import DataLoader, DistributedSampler

        self.sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.loader = DataLoader(dataset, batch_size=per_rank, sampler=self.sampler, drop_last=True)
        if len(self.loader) == 0:
            raise ValueError(
                f"dataset of {len(dataset)} examples is smaller than one global batch"
            )
        self.epoch, self.it = 0, iter(self.loader)

    def rows(self, step: int, global_batch: int, lo: int, hi: int):
        try:
            return next(self.it)
        except StopIteration:
            self.epoch += 1
            self.sampler.set_epoch(self.epoch)
            self.it = iter(self.loader)
            return next(self.it)


def make_batches(config: RunConfig, rank: int, world_size: int):
    """The batch source for this rank."""
    data = config.data
    if data is None:
        return built_in_data(config.model, dict(config.model_options), config.seed)
    if isinstance(data, torch.utils.data.Dataset):
        return DatasetBatches(
            data, rank=rank, world_size=world_size, per_rank=config.per_rank_batch_size, seed=config.seed
        )
    return CallableBatches(data)
