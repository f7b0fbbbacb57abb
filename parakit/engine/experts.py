"""A mixture of experts in any layout (engine/compose.py calls ``attach_experts``): its balancing
loss added to the training loss, its routing counts summed over the data-parallel ranks, and a
log of what each step routed, for the run's report.

What the log keeps, per step: the tokens this rank sent to each expert (summed over the blocks'
mixtures, each of a token's k choices counted), and the bytes this rank sent to other ranks in
all-to-alls (expert parallelism's dispatch and combine, forward and backward, and the count
exchange before each; 0 elsewhere). records/experts.py adds the ranks' counts up and reads the
load imbalance from them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from parakit.engine.losses import LossFn, ModelLoss
from parakit.engine.strategies.base import Parallel
from parakit.engine.workloads.moe import MoE, moe_layers


class ExpertLog:
    """What a run's mixtures routed, step by step (the counts stay on the device until a step ends)."""

    def __init__(self) -> None:
        self.tokens: list[list[int]] = []
        self.all_to_all_bytes: list[int] = []
        self._counts: torch.Tensor | None = None
        self._sent = 0

    def count(self, counts: torch.Tensor) -> None:
        self._counts = counts.detach() if self._counts is None else self._counts + counts.detach()

    def sent(self, nbytes: int) -> None:
        self._sent += nbytes

    def end_step(self) -> None:
        # note: a host-device sync on a GPU (the counts read); expert parallelism's dispatch has
        # synced for its split sizes already
        self.tokens.append([] if self._counts is None else self._counts.tolist())
        self.all_to_all_bytes.append(self._sent)
        self._counts, self._sent = None, 0

    def stats(self) -> dict[str, Any]:
        return {"expert_tokens": self.tokens, "all_to_all_bytes": self.all_to_all_bytes}


def with_balancing_loss(loss_fn: LossFn, layers: list[MoE]) -> LossFn:
    """The run's loss plus each mixture's load-balancing loss of the same forward: so fp16's
    scaling and accumulation's weights apply to both alike."""
    if isinstance(loss_fn, ModelLoss):
        return loss_fn  # a model that computes its own loss includes its own balancing

    def loss(outputs, targets):
        return loss_fn(outputs, targets) + sum(layer.aux_loss for layer in layers)

    loss.__name__ = getattr(loss_fn, "__name__", "loss")
    return loss


def attach_experts(model: torch.nn.Module, setup, data_group) -> tuple[Any, ExpertLog | None]:
    """Prepare a model's mixtures for its layout: the setup with the balancing loss in its loss,
    the counts summed over ``data_group`` (None: one rank), and a log. A dense model: as given."""
    layers = moe_layers(model)
    if not layers:
        return setup, None
    log = ExpertLog()
    for layer in layers:
        layer.balance_group, layer.log = data_group, log
    return dataclasses.replace(setup, loss_fn=with_balancing_loss(setup.loss_fn, layers)), log


def log_steps(parallel: Parallel, log: ExpertLog | None) -> None:
    """Close each step's entry in the log after the optimizer step, and report the log."""
    if log is None:
        return
    before = parallel.after_step

    def after_step() -> None:
        before()
        log.end_step()

    stats = parallel.stats
    parallel.after_step, parallel.stats = after_step, lambda: {**stats(), **log.stats()}

