"""Sparse hooks: each rank sends k = ceil(ratio * n) entries of each bucket of n gradients.

- topk: the k largest-magnitude entries of (gradient + residual). Ranks choose different
  entries, so values and their indices are all-gathered, and every rank adds all ranks'
  entries up and divides by the world size.
- randomk: k entries chosen by a generator seeded with (seed, step, bucket index), the same on
  every rank, so only the values travel, in one all-reduce.

With error feedback each rank keeps what it did not send (the residual) and adds it to the
next step's gradient, so nothing is lost, only delayed; without it the rest is dropped.
Residuals are kept per parameter rather than per bucket: DDP rebuilds its buckets after the
first step, and a residual kept by bucket index would then land on other parameters.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations as objects.

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from parakit.engine.compression.counting import Hook, HookSetup, WireCounter, all_gather, all_reduce
from parakit.config.levers import Compression

INT32_MAX = 2**31 - 1


@dataclass
class SparseState:
    group: dist.ProcessGroup
    counter: WireCounter
    ratio: float
    """Share of each bucket's entries sent, in (0, 1]."""
    error_feedback: bool
    seed: int
    residuals: dict[torch.nn.Parameter, torch.Tensor] = field(default_factory=dict)
    """What this rank has not sent yet, per parameter, flat (error feedback only)."""
    step: int = 0
    """Optimizer steps seen, counted on each step's last bucket (seeds randomk)."""


def _with_residual(state: SparseState, bucket: dist.GradBucket) -> torch.Tensor:
    """The bucket's gradient plus this rank's residual, as a new tensor when there is one."""
    buffer = bucket.buffer()
    if not state.error_feedback:
        return buffer
    parts = [state.residuals.get(p) for p in bucket.parameters()]
    if all(part is None for part in parts):  # the first step
        return buffer.clone()
    residual = torch.cat([
        torch.zeros(p.numel(), dtype=buffer.dtype, device=buffer.device) if part is None else part
        for p, part in zip(bucket.parameters(), parts)
    ])
    return buffer + residual


def _keep_residual(state: SparseState, bucket: dist.GradBucket, acc: torch.Tensor, sent: torch.Tensor) -> None:
    """Store ``acc`` minus the sent entries as the residual (in place: ``acc`` is ours)."""
    if not state.error_feedback:
        return
    acc[sent] = 0
    params = bucket.parameters()
    # A bucket's buffer holds its parameters' gradients back to back, in this order.
    for p, part in zip(params, torch.split(acc, [p.numel() for p in params])):
        state.residuals[p] = part


def _count_step(state: SparseState, bucket: dist.GradBucket) -> None:
    if bucket.is_last():
        state.step += 1


def _k(state: SparseState, n: int) -> int:
    return min(n, math.ceil(state.ratio * n))


def topk_hook(state: SparseState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Send this rank's k largest entries of (gradient + residual) as values and indices."""
    buffer = bucket.buffer()
    state.counter.add_bucket(buffer)
    acc = _with_residual(state, bucket)
    n, world = acc.numel(), state.group.size()
    indices = acc.abs().topk(_k(state, n), sorted=False).indices
    values = acc[indices]  # advanced indexing copies, so acc may change below
    _keep_residual(state, bucket, acc, indices)
    _count_step(state, bucket)
    wire_indices = indices.to(torch.int32 if n <= INT32_MAX else torch.int64)
    values_fut = all_gather(values, state.group, state.counter)
    indices_fut = all_gather(wire_indices, state.group, state.counter)

    def add_up(indices_done: torch.futures.Future) -> torch.Tensor:
        # wait() inside a callback, as torch's PowerSGD hook does: on a GPU it also makes this
        # stream wait for the gather (a future's value() alone would not).
        gathered = zip(values_fut.wait(), indices_done.value())
        buffer.zero_()
        # Rank by rank, in rank order: a rank's indices are distinct, so each += is exact,
        # and every rank adds in the same order and ends bit-identical (one index_add_ of all
        # ranks' entries would use atomics on a GPU, in no fixed order).
        for rank_values, rank_indices in gathered:
            buffer[rank_indices.long()] += rank_values
        return buffer.div_(world)

    return indices_fut.then(add_up)


def random_indices(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct indices in [0, n), a uniformly random subset, in O(k log k) when k << n.

    ``randperm(n)`` costs O(n) per bucket per step (0.26 s for 6.5M entries on one CPU core),
    as much as top-k's selection, which randomk exists to avoid. So for k <= n / 4 this draws
    2k indices with replacement (at least ~1.57k distinct in expectation) and keeps a random k
    of the distinct ones; every k-subset is equally likely by symmetry.
    """
    if 4 * k > n:
        return torch.randperm(n, generator=generator)[:k]
    picked = torch.unique(torch.randint(n, (2 * k,), generator=generator))
    while picked.numel() < k:  # rare: too many repeats
        extra = torch.randint(n, (2 * k,), generator=generator)
        picked = torch.unique(torch.cat([picked, extra]))
    return picked[torch.randperm(picked.numel(), generator=generator)[:k]]


def _bucket_generator(state: SparseState, bucket: dist.GradBucket) -> torch.Generator:
    # The seed differs for every (step, bucket) pair while there are fewer than 4099 buckets
    # and 1e6 steps.
    seed = (state.seed * 1_000_003 + state.step) * 4099 + bucket.index()
    return torch.Generator().manual_seed(seed)


def randomk_hook(state: SparseState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """All-reduce the same k random entries of (gradient + residual) on every rank."""
    buffer = bucket.buffer()
    state.counter.add_bucket(buffer)
    acc = _with_residual(state, bucket)
    n, world = acc.numel(), state.group.size()
    # Drawn on the CPU (the same on every rank and device type); a small copy to the GPU.
    indices = random_indices(n, _k(state, n), _bucket_generator(state, bucket)).to(acc.device)
    values = acc[indices].div_(world)  # a copy; divided first, like the dense hooks
    _keep_residual(state, bucket, acc, indices)
    _count_step(state, bucket)

    def scatter(fut: torch.futures.Future) -> torch.Tensor:
        buffer.zero_()
        buffer[indices] = fut.value()
        return buffer

    return all_reduce(values, state.group, state.counter).then(scatter)


def _state(compression: Compression, setup: HookSetup) -> SparseState:
    ratio = compression.ratio if compression.ratio is not None else Compression.DEFAULT_RATIO
    return SparseState(setup.group, setup.counter, ratio, setup.error_feedback, setup.seed)


def make_topk(compression: Compression, setup: HookSetup) -> tuple[SparseState, Hook]:
    """State and hook for ``topk:ratio``."""
    return _state(compression, setup), topk_hook


def make_randomk(compression: Compression, setup: HookSetup) -> tuple[SparseState, Hook]:
    """State and hook for ``randomk:ratio``."""
    return _state(compression, setup), randomk_hook
