"""Dense hooks: plain all-reduce (``none``) and all-reduce in float16 / bfloat16.

Written here rather than taken from torch's ``default_hooks`` so that the tensor handed to the
all-reduce is counted where it is handed over; and torch refuses to register its own
``bf16_compress_hook`` unless CUDA with NCCL >= 2.10 is present (it checks the hook's name),
which would rule bf16 out for CPU engines although gloo all-reduces bfloat16 fine.
"""

# No ``from __future__ import annotations`` in hook modules: DDP's register_comm_hook compares
# the hook's annotations with dist.GradBucket and Future[Tensor], and strings never match.

from dataclasses import dataclass

import torch
import torch.distributed as dist

from parakit.engine.compression.counting import Hook, HookSetup, WireCounter, all_reduce
from parakit.config.levers import Compression, CompressionKind

WIRE_DTYPE: dict[CompressionKind, torch.dtype | None] = {
    CompressionKind.NONE: None,  # the bucket's own dtype: fp32, or bf16 for bf16-pure
    CompressionKind.FP16: torch.float16,
    CompressionKind.BF16: torch.bfloat16,
}


@dataclass(frozen=True)
class CastState:
    group: dist.ProcessGroup
    counter: WireCounter
    wire_dtype: torch.dtype | None
    """The dtype gradients travel in; None keeps the bucket's dtype."""


def cast_hook(state: CastState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average a bucket over the group, all-reduced in ``state.wire_dtype``.

    Divides before the all-reduce, as torch's hooks do: a sum of n float16 gradients can
    overflow where their mean would not.
    """
    buffer = bucket.buffer()
    state.counter.add_bucket(buffer)
    world = state.group.size()
    if state.wire_dtype is None or state.wire_dtype == buffer.dtype:
        buffer.div_(world)
        return all_reduce(buffer, state.group, state.counter)
    wire = buffer.to(state.wire_dtype).div_(world)

    def cast_back(fut: torch.futures.Future) -> torch.Tensor:
        buffer.copy_(fut.value())  # in place: no second full-size buffer
        return buffer

    return all_reduce(wire, state.group, state.counter).then(cast_back)


def make_cast(compression: Compression, setup: HookSetup) -> tuple[CastState, Hook]:
    """State and hook for ``none``, ``fp16`` and ``bf16``."""
    return CastState(setup.group, setup.counter, WIRE_DTYPE[compression.kind]), cast_hook
