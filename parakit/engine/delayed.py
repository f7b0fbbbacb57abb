"""Delayed gradient averaging for DDP (DGA: Zhu et al., "Delayed Gradient Averaging: Tolerate
the Communication Latency for Federated Learning", NeurIPS 2021).

Each step's gradient all-reduce runs in the background while the next D steps compute, and its
result is used D steps late: communication hides behind compute, the price is staleness.

The variant: the paper's update, made on the gradient the optimizer is handed. At step t every
rank steps on its own gradient g_t at once (the hook hands DDP the local bucket unchanged and
launches the all-reduce of a copy). At step t + D, before the optimizer step, it adds the
correction (average of step t - its own g_t), so the optimizer is handed

    g_{t+D} + avg_t - g_t

What each rank's optimizer is handed over the run telescopes to the averaged gradients, save the
last D steps' local parts: with SGD a rank's parameters after step t are the start minus lr times
the averages of steps up to t - D and its own gradients of the last D steps, so the ranks differ
by those alone (tests/engine/test_compression.py checks it). The paper writes it for SGD; it is
taken here as it is because it costs no optimizer step beyond the run's own, keeps the run's
optimizer and needs one hook point before the optimizer step.

What it does not give under AdamW (the run's optimizer): AdamW's moments are each rank's own
and normalise each step's input, so the telescoping holds for what goes in, not for the steps
taken. The replicas are not bit-identical at the end, so ``replicated`` is False and the run
reports no ``params_in_sync``.

At the run's end the last D steps' all-reduces are waited for after the last step (so nothing is
in flight when the next run's collectives start), and their corrections are dropped: applying
them would take an optimizer step that is not one of the run's. A run stopped early (a stop
request, a divergence) leaves them in flight; every rank launched them, so they complete.

Costs: each step all-reduces a copy of every bucket (in the wire dtype: fp16 and bf16 cast it,
as their every-step hooks do), and holds, per step in flight, two copies of the gradients: the
one sent and the local one the correction subtracts.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations as objects.

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from parakit.engine.compression.counting import WireCounter


@dataclass
class InFlight:
    """One bucket's all-reduce, launched at one step, applied D steps later."""

    work: Any
    """The all-reduce's handle (dist.Work)."""
    average: torch.Tensor
    """The copy sent, divided by the world size: the ranks' average once ``work`` is done."""
    local: torch.Tensor
    """This rank's own gradient of the bucket, as it stepped on it."""
    params: list[torch.nn.Parameter]
    """The bucket's parameters, in the order their gradients lie in it."""


@dataclass
class DelayedState:
    group: dist.ProcessGroup
    counter: WireCounter
    wire_dtype: torch.dtype | None
    """The dtype gradients travel in; None keeps the bucket's dtype."""
    launched: list[InFlight] = field(default_factory=list)
    """This step's buckets, in the order the hook launched them (autograd's thread)."""


def delayed_hook(state: DelayedState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Launch the all-reduce of a copy of the bucket and hand DDP the local bucket at once."""
    buffer = bucket.buffer()
    state.counter.add_bucket(buffer)
    # Divided before the all-reduce, as the cast hooks do: a sum of fp16 gradients can overflow.
    wire = buffer.to(state.wire_dtype or buffer.dtype, copy=True).div_(state.group.size())
    state.counter.add_sent(wire)
    work = dist.all_reduce(wire, group=state.group, async_op=True)
    state.launched.append(InFlight(work, wire, buffer.clone(), bucket.parameters()))
    done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    done.set_result(buffer)  # no wait: this rank steps on its own gradient now
    return done


def correct(flight: InFlight) -> None:
    """Wait for one bucket's average and add (average - local) to its parameters' gradients."""
    flight.work.wait()  # note: blocks here only if the all-reduce is not done after D steps
    correction = flight.local.neg_().add_(flight.average)  # in place: the local copy is ours
    for p, part in zip(flight.params, correction.split([p.numel() for p in flight.params])):
        if p.grad is None:  # a parameter this step's backward did not reach
            p.grad = part.view_as(p).clone()
        else:
            p.grad.add_(part.view_as(p))


class DelayedAveraging:
    """Registers the delayed hook on a DDP model and applies each step's average D steps later.

    Example::

        delayed = DelayedAveraging(ddp_model, delay=1, steps=steps)
        for step in range(steps):
            ...
            loss.backward()           # the hook launches this step's all-reduces
            delayed.before_step()     # adds the correction of step - D to the gradients
            optimizer.step()
            delayed.after_step()      # after the last step: waits for what is in flight
            step_bytes = delayed.counter.take_step()
    """

    def __init__(self, ddp_model: DistributedDataParallel, delay: int, *, steps: int,
                 wire_dtype: torch.dtype | None = None) -> None:
        """Register the hook.

        Args:
            ddp_model: the DDP-wrapped model; takes no other communication hook.
            delay: D, steps between a gradient's all-reduce and its correction (>= 1).
            steps: the run's steps; after the last, the all-reduces in flight are waited for.
            wire_dtype: the dtype gradients travel in (None: their own).
        """
        if delay < 1:
            raise ValueError(f"need delay >= 1 (got {delay})")
        self.counter = WireCounter()
        """Bytes this rank hands to all-reduce: a copy of every bucket, every step."""
        self.delay, self.steps, self.steps_done = delay, steps, 0
        self.state = DelayedState(dist.group.WORLD, self.counter, wire_dtype)
        self.waiting: deque[list[InFlight]] = deque()
        """Launched steps not yet corrected, oldest first."""
        ddp_model.register_comm_hook(self.state, delayed_hook)

    def before_step(self) -> None:
        """Queue this step's all-reduces; apply the oldest step's corrections once D are queued
        behind it. Call after backward, before ``optimizer.step()``."""
        self.waiting.append(self.state.launched)
        self.state.launched = []
        if len(self.waiting) > self.delay:
            for flight in self.waiting.popleft():
                correct(flight)

    def after_step(self) -> None:
        """Count the step; after the run's last one, wait for every all-reduce still in flight
        (their corrections are dropped: see the module's docstring)."""
        self.steps_done += 1
        if self.steps_done == self.steps:
            while self.waiting:
                for flight in self.waiting.popleft():
                    flight.work.wait()  # note: the last step waits for the last D steps' all-reduces
