"""PowerSGD: torch's own hook, wrapped so the bytes it all-reduces are counted.

Each weight matrix M of a bucket is sent as two thin matrices P (rows x r) and Q (cols x r),
one power-iteration step per optimizer step, warm-started from last step's Q, with error
feedback (what the low-rank product missed is added to the next step's gradient). Vectors such
as biases, and matrices too small to gain ``POWERSGD_MIN_RATE`` (config/formulas.py, where the
advisor reads the same rule), are all-reduced as they are.

Start iteration: torch requires ``start_powerSGD_iter >= 2`` with error feedback or warm start,
because DDP rebuilds its buckets after the first iteration and state remembered per bucket
before that would no longer fit. Torch suggests about 10% of training for accuracy; runs here
are 20 to 200 steps and exist to show what compression does, so ``POWERSGD_START_ITER = 2``
(the smallest allowed) compresses all but the first two steps. With the default 2 warm-up steps
those two vanilla steps fall inside the warm-up, so every measured step is compressed.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations as objects.

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import PowerSGDState, powerSGD_hook

from parakit.config.formulas import POWERSGD_MIN_RATE
from parakit.config.levers import Compression
from parakit.engine.compression.counting import Hook, HookSetup, WireCounter

POWERSGD_START_ITER = 2


@dataclass(frozen=True)
class CountedPowerSGD:
    powersgd: PowerSGDState
    counter: WireCounter
    one_bucket_at_a_time: bool
    """Finish each bucket before the next begins (gloo): see counted_powersgd_hook."""


def counted_powersgd_hook(state: CountedPowerSGD, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Run torch's ``powerSGD_hook`` on the bucket and count what it hands to all-reduce.

    torch's hook calls ``dist.all_reduce`` itself, up to three times per bucket, two of them
    from future callbacks, so the tensors are read from its state instead of at the call:

    - before the start iteration it all-reduces the bucket buffer itself;
    - after it: P and Q, which are exactly ``state.p_memory_dict[i]`` / ``q_memory_dict[i]``
      (allocated before the hook returns, fixed in size thereafter), and one flat tensor of
      the uncompressed gradients, a local variable of the hook. Its size is taken from
      torch's own tally: ``total_numel_after_compression`` grows by P + Q + uncompressed for
      each bucket, synchronously, before the hook returns.

    Wrapping the process group instead would count at the call, but ``dist.all_reduce`` takes
    only a real C++ ProcessGroup, and patching ``torch.distributed`` would count every other
    caller in the engine too.
    """
    powersgd = state.powersgd
    buffer = bucket.buffer()
    state.counter.add_bucket(buffer)
    if powersgd.iter < powersgd.start_powerSGD_iter:
        state.counter.add_sent(buffer)  # torch all-reduces the bucket uncompressed
        return powerSGD_hook(powersgd, bucket)
    numel_before = powersgd.total_numel_after_compression
    future = powerSGD_hook(powersgd, bucket)
    sent_numel = powersgd.total_numel_after_compression - numel_before
    p = powersgd.p_memory_dict[bucket.index()]
    q = powersgd.q_memory_dict[bucket.index()]
    state.counter.add_sent(p)
    state.counter.add_sent(q)
    uncompressed_numel = sent_numel - p.numel() - q.numel()
    state.counter.add_sent_bytes(uncompressed_numel * buffer.element_size())
    if state.one_bucket_at_a_time:
        # torch's hook issues its Q all-reduce from a callback thread. NCCL orders collectives
        # on its stream, but gloo takes them in the order each process issues them, and two
        # buckets' callbacks can race in different orders on different ranks: a collective
        # mismatch that aborts the process ("Received data size doesn't match expected size").
        # Waiting here costs gloo runs the overlap of one bucket's compression with the next.
        future.wait()
    return future


def make_powersgd(compression: Compression, setup: HookSetup) -> tuple[CountedPowerSGD, Hook]:
    """State and hook for ``powersgd:r``. Error feedback is always on: PowerSGD without it
    loses too much of the gradient to converge (torch recommends keeping it on)."""
    rank = compression.rank if compression.rank is not None else Compression.DEFAULT_RANK
    powersgd = PowerSGDState(
        process_group=setup.group,
        matrix_approximation_rank=rank,
        start_powerSGD_iter=setup.powersgd_start_iter,
        # Passed, not left to torch's default, so torch decides as formulas.powersgd_compresses
        # (the advisor's and the tests' rule) says.
        min_compression_rate=POWERSGD_MIN_RATE,
        use_error_feedback=True,
        warm_start=True,
        random_seed=setup.seed,  # Q's random start must be the same on every rank
    )
    serial = dist.get_backend(setup.group) == "gloo"
    return CountedPowerSGD(powersgd, setup.counter, serial), counted_powersgd_hook
