"""Local SGD and post-local SGD for DDP, from torch's own pieces.

Each rank takes H optimizer steps on its own gradients, then the ranks average their
parameters: one all-reduce of the whole model every H steps instead of one of the gradients
every step. Post-local SGD first runs ``global_steps`` ordinary DDP steps (gradients averaged),
which torch's authors found to help accuracy, then switches to local steps.

- ``post_localSGD_hook`` with ``PostLocalSGDState(post_local_gradient_allreduce=False)``:
  the gradient all-reduce for the first ``global_steps`` steps, none after.
- ``PeriodicModelAverager``: averages the parameters after the optimizer step.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations as objects.

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import PostLocalSGDState, post_localSGD_hook
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
from torch.distributed.algorithms.model_averaging.utils import get_params_to_average
from torch.nn.parallel import DistributedDataParallel

from parakit.engine.compression.counting import WireCounter


@dataclass(frozen=True)
class CountedPostLocalSGD:
    post_local: PostLocalSGDState
    counter: WireCounter


def counted_post_local_sgd_hook(
    state: CountedPostLocalSGD, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """torch's post-local-SGD hook, counting the bucket when it all-reduces it (global steps)."""
    buffer = bucket.buffer()
    state.counter.add_bucket(buffer)  # what every-step DDP would send: the ratio's denominator
    if state.post_local.iter < state.post_local.start_localSGD_iter:
        state.counter.add_sent(buffer)  # torch all-reduces the bucket as it is
    return post_localSGD_hook(state.post_local, bucket)


class LocalSGD:
    """Registers the post-local-SGD hook on a DDP model and averages parameters every H steps.

    Averages fall after steps ``global_steps + H - 1``, ``global_steps + 2H - 1``, ...: each one
    follows exactly H local steps. (torch's example sets the averager's warm-up equal to the
    hook's start, which averages after the first local step already.) Right after an average
    every rank holds bit-identical parameters: each divides its copy by the world size and the
    all-reduce hands every rank the same sum.

    Example::

        local_sgd = LocalSGD(ddp_model, every=8)
        for step in range(steps):
            ...
            loss.backward()
            optimizer.step()
            local_sgd.after_step(ddp_model.parameters())
            step_bytes = local_sgd.counter.take_step()
    """

    def __init__(
        self,
        ddp_model: DistributedDataParallel,
        every: int,
        *,
        global_steps: int = 0,
    ) -> None:
        """Register the hook and build the averager.

        Args:
            ddp_model: the DDP-wrapped model; takes no other communication hook.
            every: H, local steps between parameter averages (>= 1).
            global_steps: ordinary DDP steps (gradients averaged) before local steps begin;
                0 is plain local SGD, more is post-local SGD.

        Averages over the whole group, as DDP's own all-reduce does (torch's default group).
        """
        if every < 1 or global_steps < 0:
            raise ValueError(f"need every >= 1 and global_steps >= 0 (got {every}, {global_steps})")
        self.counter = WireCounter()
        """Bytes this rank hands to all-reduce: gradients in global steps, parameters after."""
        self.every = every
        self.global_steps = global_steps
        post_local = PostLocalSGDState(
            process_group=None,  # the world
            subgroup=None,  # never built: with no post-local gradient all-reduce it is unused
            start_localSGD_iter=global_steps,
            post_local_gradient_allreduce=False,
        )
        ddp_model.register_comm_hook(CountedPostLocalSGD(post_local, self.counter), counted_post_local_sgd_hook)
        with warnings.catch_warnings():
            # H = 1 makes torch warn that plain DDP would do; here it is a deliberate baseline.
            warnings.filterwarnings("ignore", message="When period is 1", category=UserWarning)
            self.averager = PeriodicModelAverager(
                period=every, warmup_steps=global_steps + every - 1
            )

    def averages_now(self) -> bool:
        """Whether the next ``after_step`` averages (the averager's own rule, read ahead)."""
        a = self.averager
        return a.step >= a.warmup_steps and (a.step - a.warmup_steps) % a.period == 0

    def after_step(self, params: Iterable[torch.nn.Parameter]) -> bool:
        """Average the parameters if this step ends a period; call after ``optimizer.step()``.

        Call before ``zero_grad(set_to_none=True)``: torch averages only parameters that have
        a gradient. The averaged tensors replace the parameters' ``.data`` (torch's way), so
        the optimizer keeps working on the same Parameter objects.

        Args:
            params: the model's parameters (an iterator is fine).

        Returns:
            True if this call averaged (one all-reduce, counted), False for a local step.
        """
        params = list(params)
        averaging = self.averages_now()
        if averaging:
            # torch all-reduces one flat copy of exactly these parameters (utils.average_parameters).
            self.counter.add_sent_bytes(sum(p.numel() * p.element_size() for p in get_params_to_average(params)))
        # note: on a GPU torch synchronises the device before this all-reduce (averaging steps only)
        self.averager.average_parameters(params)
        return averaging
