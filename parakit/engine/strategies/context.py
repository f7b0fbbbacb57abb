"""Context parallelism: each sequence split over the ranks, attention computed round a ring.

Every rank holds the whole model and reads the whole global batch, but only its two chunks of
each sequence (strategies/ring.py says which and why two): its tokens at their global
positions, their targets, and a loss over them. The attention layers' ``attend`` becomes ring
attention, which lets each query see every earlier key, wherever it sits. The other layers work
token by token, so they need nothing more. Every rank's loss is the mean over the same number
of tokens, so the mean over the ranks, the figure the run reports, is the whole sequence's
loss. Backward leaves each rank with the gradient of the sum of all ranks' losses through its own
tokens; one flat all-reduce after backward, divided by R, gives every rank the full batch's
gradient (hybrid.average_gradients, as ddp+tensor does). Parameters keep the model's names, so
a run switches to and from context as it does between ddp and single.

Which path: torch's own ``context_parallel`` (torch.distributed.tensor.experimental) shards
the buffers and dispatches SDPA's flash, efficient and cuDNN kernels to its ring. On CPU (torch
2.13) SDPA runs ``_scaled_dot_product_flash_attention_for_cpu``, for which DTensor has no
sharding rule (NotImplementedError), and with the math kernel forced it fails on mixed Tensor
and DTensor (torchtitan#3340 reports the same). So parakit's own ring runs on every device;
``CONTEXT_PATH`` names it in the run's record.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from parakit.engine.compression.counting import StepBytes
from parakit.engine.strategies.base import LossFn, Parallel, plain_forward_backward, unscaled
from parakit.engine.strategies.hybrid import average_gradients
from parakit.engine.strategies.ring import Ring, chunk_positions, ring_attention

CONTEXT_PATH = "ring (point-to-point)"
"""The path a context run took: parakit's ring (module docstring: why not torch's)."""


def replaceable_attentions(model: nn.Module) -> list[nn.Module]:
    """The attention modules whose ``attend`` parakit can swap for ring attention (the built-in gpt's)."""
    return [m for m in model.modules() if callable(getattr(m, "attend", None))]


class RingBytes:
    """The run's WireCounter for context: per step, the bytes sent round the ring plus the
    gradients' all-reduce, all uncompressed; the ring's share is kept per step for the record."""

    def __init__(self, ring: Ring, gradient_bytes: int) -> None:
        self.ring, self.gradient_bytes = ring, gradient_bytes
        self.ring_bytes: list[int] = []
        self._seen = 0

    def take_step(self) -> StepBytes:
        sent, self._seen = self.ring.sent_bytes - self._seen, self.ring.sent_bytes
        self.ring_bytes.append(sent)
        return StepBytes(sent + self.gradient_bytes, sent + self.gradient_bytes)


def apply_context(model: nn.Module, mesh, *, device: torch.device, loss_fn: LossFn,
                  scale_loss: Callable[[torch.Tensor], torch.Tensor] = unscaled) -> Parallel:
    """Split each sequence over ``mesh``'s ranks: ring attention in the model's attention layers,
    this rank's positions in its position embedding, its tokens picked from each batch.

    Args:
        model: the built-in gpt (RunConfig refuses others), on this rank's device.
        mesh: a 1-D device mesh: the context ranks, in ring order.
        device: this rank's device.
        loss_fn: (outputs, targets) -> the loss.
        scale_loss: fp16's GradScaler.scale; the loss itself otherwise.

    Returns:
        The replica, its forward_backward taking the whole batch and training on this rank's tokens.
    """
    attentions = replaceable_attentions(model)
    if not attentions:  # RunConfig lets only the gpt through; this guards a model built otherwise
        raise ValueError("context parallelism needs attention layers with an `attend` parakit can replace")
    group = mesh.get_group()
    ring = Ring(group)
    for attention in attentions:
        attention.attend = partial(ring_attention, ring=ring)
    positions = chunk_positions(model.seq_len, ring.rank, ring.size).to(device)
    model.positions = positions
    inner = plain_forward_backward(model, loss_fn, scale_loss)
    params = list(model.parameters())
    wire = RingBytes(ring, sum(p.numel() * p.element_size() for p in params))

    def forward_backward(inputs, targets):
        # This rank's tokens of every row: the same columns of inputs and targets.
        loss = inner(inputs.index_select(1, positions), targets.index_select(1, positions))
        average_gradients(params, group, ring.size)
        return loss

    def stats() -> dict:
        return {"context_path": CONTEXT_PATH, "ring_bytes": list(wire.ring_bytes)}

    return Parallel([model], forward_backward, replicated=True, stats=stats, wire=wire)

