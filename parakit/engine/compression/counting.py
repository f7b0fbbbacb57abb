"""Bytes on the wire, counted where each collective is called.

"Bytes sent" is this rank's input to each collective: ``tensor.numel() * tensor.element_size()``
of the tensor handed to ``all_reduce``, or of the values and the indices handed to
``all_gather``. It is not the traffic on the links: a ring all-reduce moves about
``2 (n - 1) / n`` times its input out of each rank, the same factor for every kind that
all-reduces, so ratios between them are fair. A ring all-gather moves ``n - 1`` times its input;
at 2 ranks both factors are 1, and beyond that top-k's ratio flatters it by ``n / 2``.

Alongside it the counter keeps the bytes of each gradient bucket as DDP hands it over: what a
plain all-reduce (compression ``none``) would send for the same step, the denominator of a
compression ratio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# A DDP communication hook: (state, bucket) -> future of the averaged bucket.
Hook = Callable[[Any, dist.GradBucket], torch.futures.Future]


@dataclass(frozen=True)
class StepBytes:
    """What one rank handed to collectives during one optimizer step."""

    comm_bytes: int
    """Bytes of the tensors this rank gave to collectives."""
    uncompressed_bytes: int
    """Bytes of the gradient buckets: what plain all-reduce would have given for this step."""

    @property
    def compression_ratio(self) -> float | None:
        """uncompressed / sent; None when nothing was sent (a local-SGD step), not infinity."""
        return self.uncompressed_bytes / self.comm_bytes if self.comm_bytes else None


class WireCounter:
    """Counts this rank's collective input bytes, per optimizer step and for the whole run.

    Hooks add to it as buckets are reduced (from autograd's thread, and from the future
    callbacks of earlier collectives), so additions hold a lock. The training loop reads it
    with ``take_step()`` once per optimizer step; both are plain Python ints, no device sync.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._comm_bytes = 0
        self._uncompressed_bytes = 0
        self.total_comm_bytes = 0
        """Bytes sent since the counter was made, across all steps."""
        self.total_uncompressed_bytes = 0
        """Bucket bytes since the counter was made, across all steps."""

    def add_sent(self, tensor: torch.Tensor) -> None:
        """Count a tensor this rank is about to hand to a collective."""
        nbytes = tensor.numel() * tensor.element_size()
        with self._lock:
            self._comm_bytes += nbytes
            self.total_comm_bytes += nbytes

    def add_sent_bytes(self, nbytes: int) -> None:
        """Count bytes handed to a collective that runs inside torch code we do not call."""
        with self._lock:
            self._comm_bytes += nbytes
            self.total_comm_bytes += nbytes

    def add_bucket(self, buffer: torch.Tensor) -> None:
        """Count a gradient bucket as DDP hands it to the hook (the uncompressed size)."""
        nbytes = buffer.numel() * buffer.element_size()
        with self._lock:
            self._uncompressed_bytes += nbytes
            self.total_uncompressed_bytes += nbytes

    def take_step(self) -> StepBytes:
        """Return the bytes counted since the last call and start a new step.

        Call once per optimizer step, after ``backward()`` has returned (DDP waits for every
        bucket's future before backward returns, so the step's counts are complete), or after a
        local-SGD ``after_step``.
        """
        with self._lock:
            step = StepBytes(self._comm_bytes, self._uncompressed_bytes)
            self._comm_bytes = self._uncompressed_bytes = 0
        return step


class GradientBytes:
    """The counter of plain all-reduce, which runs without a hook (DDP's own): every optimizer
    step hands each gradient bucket over once, so a step's bytes are the gradients' bytes.
    The same interface as WireCounter."""

    def __init__(self, gradient_bytes: int) -> None:
        self.gradient_bytes = gradient_bytes
        self.total_comm_bytes = self.total_uncompressed_bytes = 0

    def take_step(self) -> StepBytes:
        self.total_comm_bytes += self.gradient_bytes
        self.total_uncompressed_bytes += self.gradient_bytes
        return StepBytes(self.gradient_bytes, self.gradient_bytes)


def all_reduce(tensor: torch.Tensor, group: dist.ProcessGroup, counter: WireCounter) -> torch.futures.Future:
    """Sum ``tensor`` in place over ``group`` asynchronously, counting it as sent.

    Returns:
        A future whose value is ``tensor``.
    """
    counter.add_sent(tensor)
    work = dist.all_reduce(tensor, group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def all_gather(tensor: torch.Tensor, group: dist.ProcessGroup, counter: WireCounter) -> torch.futures.Future:
    """Gather every rank's ``tensor`` (same shape on all ranks) asynchronously, counting it.

    Uses the list form of ``all_gather``: ``all_gather_into_tensor`` warns as deprecated in
    torch 2.13, and its successor ``all_gather_single`` is too new for older torches.

    Returns:
        A future whose value is the list of ranks' tensors, in rank order.
    """
    counter.add_sent(tensor)
    gathered = [torch.empty_like(tensor) for _ in range(group.size())]
    work = dist.all_gather(gathered, tensor, group=group, async_op=True)
    return work.get_future().then(lambda _fut: gathered)


@dataclass(frozen=True)
class HookSetup:
    """What every hook factory is given, whatever its kind."""

    group: dist.ProcessGroup
    """The data-parallel process group the gradients are averaged over."""
    counter: WireCounter
    """Where the hook counts the bytes it sends."""
    error_feedback: bool
    """Keep what a sparse hook did not send and add it to the next step's gradient."""
    seed: int
    """Seeds random choices that must agree across ranks (randomk indices, PowerSGD's Q)."""
    powersgd_start_iter: int
    """Steps of plain all-reduce before PowerSGD starts compressing."""
