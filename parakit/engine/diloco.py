"""DiLoCo (Douillard et al., "DiLoCo: Distributed Low-Communication Training of Language
Models", 2023) and Streaming DiLoCo (Douillard et al., "Streaming DiLoCo with overlapping
communication", 2025) for DDP.

Each rank takes H inner steps with the run's optimizer (AdamW) on its own gradients: DDP's hook
skips the all-reduce. Then the ranks average the pseudo-gradient, the parameters' change since
the last sync (outer gradient = parameters at the last sync - parameters now), and an outer SGD
with Nesterov momentum (lr 0.7, momentum 0.9 by default, the paper's) steps the last sync's
parameters with it. Every rank continues from the result, the same on every rank bit for bit
(the same average, the same deterministic step); AdamW's state stays each rank's own, as in the
paper. With outer lr 1 and no momentum the outer step lands on the ranks' average: local SGD.

Streaming DiLoCo splits the parameters into F fragments that sync H/F steps apart: fragment f
after the steps n (completed steps) with (n - f*H/F) % H == 0. The fragments here are runs of
consecutive parameters of about equal size (the paper takes strided groups of blocks; any split
keeps the algorithm, the strided one evens out the layers' staleness). A fragment's all-reduce is
launched after step n and overlaps step n + 1; after that step it is waited for, the outer step
taken and the fragment's parameters replaced by the result. That replacement drops step n + 1's
inner update of the fragment (a mixing factor of 0, torchft's default; the paper also mixes
local and global parameters). The fragments are never all synced at once, so the replicas of a
streaming run differ at its end.

A run stopped early (a stop request, a divergence) may leave a fragment's all-reduce in flight;
every rank launched it, so it completes.

Bytes (WireCounter): sent, the pseudo-gradient at each sync (in the wire dtype: fp16 and bf16
cast it before the all-reduce, and back after); uncompressed, every step's gradient buckets as
DDP hands them to the hook, what every-step DDP would send.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations as objects.

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from parakit.engine.compression.counting import WireCounter

STREAMING_OVERLAP_STEPS = 1
"""Inner steps a streaming fragment's all-reduce overlaps before it is applied: the fewest that
hide it, for the least staleness."""


def local_gradient_hook(counter: WireCounter, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """No all-reduce: each rank steps on its own gradient. Counts the bucket as every-step DDP
    would have sent it (the compression ratio's denominator)."""
    counter.add_bucket(bucket.buffer())
    done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    done.set_result(bucket.buffer())
    return done


@dataclass
class Fragment:
    """Parameters that sync together, and their outer optimizer."""

    params: list[torch.nn.Parameter]
    anchor: list[torch.Tensor]
    """The parameters after the fragment's last sync, the same on every rank; the outer
    optimizer steps these."""
    outer: torch.optim.Optimizer
    offset: int
    """Steps before its first sync, f * H / F; then every H."""
    work: Any = None
    """The pseudo-gradient's all-reduce in flight (dist.Work), or None."""
    wire: torch.Tensor | None = None
    """What that all-reduce averages in place."""
    due: int = 0
    """The completed step after which the all-reduce in flight is applied."""


def split_evenly(params: list[torch.nn.Parameter], parts: int) -> list[list[torch.nn.Parameter]]:
    """``parts`` runs of consecutive ``params``, none empty, each starting where the elements
    before it come nearest to its share of the total."""
    if parts > len(params):
        raise ValueError(f"streaming-diloco: F={parts} fragments, but the model has {len(params)} parameter tensors")
    total, before = sum(p.numel() for p in params), [0]
    for p in params:
        before.append(before[-1] + p.numel())
    starts = [0]
    for k in range(1, parts):
        first = min(range(len(before)), key=lambda i: abs(before[i] * parts - k * total))
        # after the previous start, and leaving one parameter for each part still to come
        starts.append(min(max(first, starts[-1] + 1), len(params) - (parts - k)))
    return [params[a:b] for a, b in zip(starts, starts[1:] + [len(params)])]


class DiLoCo:
    """Registers the hook that skips DDP's all-reduce and syncs the fragments on their steps.

    Example::

        diloco = DiLoCo(ddp_model, every=8, steps=steps)
        for step in range(steps):
            ...
            optimizer.step()          # an inner step
            diloco.after_step()       # every H steps: the outer step
            step_bytes = diloco.counter.take_step()
    """

    def __init__(self, ddp_model: DistributedDataParallel, every: int, *, steps: int, fragments: int = 1,
                 overlap: int = 0, outer_lr: float, outer_momentum: float,
                 wire_dtype: torch.dtype | None = None) -> None:
        """Register the hook and build each fragment's outer optimizer.

        Args:
            ddp_model: the DDP-wrapped model; takes no other communication hook.
            every: H, inner steps between a fragment's syncs.
            steps: the run's steps; after the last, a sync in flight is finished.
            fragments: F; 1 is DiLoCo.
            overlap: inner steps a sync's all-reduce overlaps before it is applied (0: at once).
            outer_lr: the outer SGD's learning rate.
            outer_momentum: its Nesterov momentum (0: plain SGD).
            wire_dtype: the dtype pseudo-gradients travel in (None: the parameters').
        """
        if every < 1 or every % fragments or overlap < 0:
            raise ValueError(f"need H >= 1, a multiple of F, and overlap >= 0 (got {every}, {fragments}, {overlap})")
        self.counter = WireCounter()
        """Bytes this rank hands to all-reduce: pseudo-gradients on sync steps only."""
        self.every, self.steps, self.overlap, self.wire_dtype = every, steps, overlap, wire_dtype
        self.steps_done = 0
        self.group = dist.group.WORLD
        params = [p for p in ddp_model.parameters() if p.requires_grad]
        self.fragments = [self._fragment(part, f * every // fragments, outer_lr, outer_momentum)
                          for f, part in enumerate(split_evenly(params, fragments))]
        ddp_model.register_comm_hook(self.counter, local_gradient_hook)

    @staticmethod
    def _fragment(params, offset: int, lr: float, momentum: float) -> Fragment:
        anchor = [p.detach().clone() for p in params]
        outer = torch.optim.SGD(anchor, lr=lr, momentum=momentum, nesterov=momentum > 0)
        return Fragment(params, anchor, outer, offset)

    def ends_replicated(self) -> bool:
        """Whether every fragment syncs at the run's last step, so the replicas end bit-identical:
        each one's sync launched there (and applied at once) or launched ``overlap`` steps before."""
        last = (self.steps, self.steps - self.overlap)
        return all(any(n >= 1 and (n - f.offset) % self.every == 0 for n in last) for f in self.fragments)

    def after_step(self) -> None:
        """Apply the syncs due after this step, then launch the ones that start here. Call
        after ``optimizer.step()``."""
        self.steps_done += 1
        n = self.steps_done
        for fragment in self.fragments:
            if fragment.work is not None and (fragment.due == n or n == self.steps):
                self._apply(fragment)
        for fragment in self.fragments:
            if (n - fragment.offset) % self.every == 0:
                self._launch(fragment, due=n + self.overlap)
                if self.overlap == 0 or n == self.steps:
                    self._apply(fragment)

    @torch.no_grad()
    def _launch(self, fragment: Fragment, due: int) -> None:
        delta = torch.cat([(a - p).reshape(-1) for a, p in zip(fragment.anchor, fragment.params)])
        # Divided before the all-reduce: a sum of fp16 pseudo-gradients can overflow.
        fragment.wire = delta.to(self.wire_dtype or delta.dtype).div_(self.group.size())
        self.counter.add_sent(fragment.wire)
        fragment.work = dist.all_reduce(fragment.wire, group=self.group, async_op=True)
        fragment.due = due

    @torch.no_grad()
    def _apply(self, fragment: Fragment) -> None:
        fragment.work.wait()  # note: blocks until the fragment's average is in
        for a, part in zip(fragment.anchor, fragment.wire.split([a.numel() for a in fragment.anchor])):
            a.grad = part.view_as(a).to(a.dtype)
        fragment.outer.step()
        fragment.outer.zero_grad(set_to_none=True)  # the gradients are views of the wire copy: free it
        for p, a in zip(fragment.params, fragment.anchor):
            p.copy_(a)  # every rank continues from the outer step's result
        fragment.work = fragment.wire = None
