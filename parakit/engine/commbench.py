"""Communication micro-benchmark: time collectives over message sizes on the current process
group, with the nccl-tests definitions of algorithm and bus bandwidth.

Runs on every rank of a group the caller has already initialised; every rank returns the same
numbers (the slowest rank's), as records.commbench.CommBenchFigures.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.distributed as dist

from parakit.config.bench import COLLECTIVES, DEFAULT_SIZES_BYTES
# busbw = algbw * bus_factor: the advisor predicts with the same factor, so it lives in formulas.
from parakit.config.formulas import bus_factor
from parakit.records.commbench import CollectiveFit, CommBenchFigures, CommBenchRow

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# The single-tensor forms, as nccl-tests time them. torch 2.13 renames them *_single and warns
# on the old names; torch < 2.13 only has the old names.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


# Each builder allocates one size's buffers and returns (the call to time, the bytes it counts).
# Sizes follow nccl-tests exactly: all_gather counts its whole output buffer and reduce_scatter
# its whole input buffer (n times what one rank sends or keeps); both round the per-rank share
# down to whole elements, so the counted bytes can be a little under the size asked for.
def _all_reduce(numel, n, rank, zeros):
    buf = zeros(numel)
    return (lambda: dist.all_reduce(buf)), buf.nbytes


def _all_gather_op(numel, n, rank, zeros):
    share = max(1, numel // n)
    out, mine = zeros(share * n), zeros(share)
    return (lambda: _all_gather(out, mine)), out.nbytes


def _reduce_scatter_op(numel, n, rank, zeros):
    share = max(1, numel // n)
    whole, mine = zeros(share * n), zeros(share)
    return (lambda: _reduce_scatter(mine, whole)), whole.nbytes


def _broadcast(numel, n, rank, zeros):
    buf = zeros(numel)
    return (lambda: dist.broadcast(buf, src=0)), buf.nbytes


def _send_recv(numel, n, rank, zeros):
    """Ping-pong between ranks 0 and 1 (the others idle): rank 0 sends, rank 1 sends it back.
    The timed call is the round trip; ``run_comm_bench`` reports half of it as the one-way time."""
    buf = zeros(numel)
    if rank == 0:
        return (lambda: (dist.send(buf, dst=1), dist.recv(buf, src=1))), buf.nbytes
    if rank == 1:
        return (lambda: (dist.recv(buf, src=0), dist.send(buf, dst=0))), buf.nbytes
    return (lambda: None), buf.nbytes


BUILDERS = {"all_reduce": _all_reduce, "all_gather": _all_gather_op,
            "reduce_scatter": _reduce_scatter_op, "broadcast": _broadcast, "send_recv": _send_recv}
assert tuple(BUILDERS) == COLLECTIVES, "config/bench.py names the collectives this module times"

# (backend, device type, collective) that cannot be measured honestly. Known up front, not
# found by trying: every rank must skip the same collectives without talking, and a failed
# try can break the group (gloo's send of CUDA memory kills the TCP pair).
_GLOO_REDUCE_SCATTER = ("gloo runs reduce_scatter_tensor as a full all_reduce plus a local copy "
                        "(twice the data of a reduce-scatter), so its time would not be one")
CANNOT_MEASURE = {
    ("gloo", "cpu", "reduce_scatter"): _GLOO_REDUCE_SCATTER,
    ("gloo", "cuda", "reduce_scatter"): _GLOO_REDUCE_SCATTER,
    ("gloo", "cuda", "send_recv"): "gloo cannot send CUDA memory: its TCP transport fails with "
                                   "'Bad address' and breaks the connection",
}


def fit_alpha_beta(points: list[tuple[int, float]]) -> tuple[float | None, float | None, str | None]:
    """Least-squares fit of time_s = alpha + bytes / beta.

    Each point is weighted by 1 / time², so the fit minimises relative error: unweighted, the
    noise of the largest message alone (milliseconds) would set alpha (microseconds).

    Args:
        points: (bytes, time_s) pairs.

    Returns:
        (alpha_s, beta_bytes_per_s, None), or (None, None, reason) when they cannot be fitted.
    """
    if len({b for b, _ in points}) < 2:
        return None, None, "needs at least 2 message sizes to fit latency and bandwidth"
    x, t = np.array(points, dtype=np.float64).T
    if not (t > 0).all():
        return None, None, "a measured time is not positive"
    scale = x.max()  # bytes in units of the largest message, for a well-conditioned solve
    rows = np.stack([np.ones_like(x), x / scale], axis=1) / t[:, None]
    (alpha, per_byte), *_ = np.linalg.lstsq(rows, np.ones_like(t), rcond=None)
    per_byte /= scale
    if alpha < 0:
        return None, None, "fit gave a negative latency: times are dominated by noise"
    if per_byte <= 0 or not math.isfinite(1 / per_byte):
        return None, None, "fit gave no positive bandwidth: time does not grow with message size"
    return float(alpha), float(1 / per_byte), None


def run_comm_bench(sizes_bytes: list[int] | None = None, collectives: list[str] | None = None,
                   repeats: int = 10, warmup: int = 3, max_bytes: int | None = None,
                   on_progress: Callable[[dict], None] | None = None, dtype: str = "float32",
                   device: str | None = None) -> CommBenchFigures:
    """Time each collective at each message size on the default process group.

    Every timed repeat starts after a barrier, so ranks start together. A size's time is the
    median of ``repeats`` (after ``warmup`` untimed calls) on the slowest rank: the ranks'
    medians, mins and maxes are all-reduced with MAX, so every rank returns the same numbers.
    send_recv is a ping-pong between ranks 0 and 1 timed on rank 0, reported as half the round
    trip (the one-way time).

    Args:
        sizes_bytes: message sizes; default 1 KB .. 256 MB in powers of 4. Every rank holds up
            to two buffers of the largest size at once.
        collectives: any of all_reduce, all_gather, reduce_scatter, broadcast, send_recv;
            default all of them.
        repeats: timed calls per size.
        warmup: untimed calls per size before them.
        max_bytes: leave out sizes above this.
        on_progress: called on every rank after each (collective, size) with
            {"collective", "bytes", "done", "total"}.
        dtype: float32, float16 or bfloat16.
        device: where the buffers live; default cuda:0 if CUDA is available, else cpu.

    Returns:
        CommBenchFigures: a row per measured (collective, size), a fit per measured collective,
        and for each collective this backend and device cannot measure honestly, the reason
        (``CANNOT_MEASURE``).
    """
    collectives = list(BUILDERS) if collectives is None else list(collectives)
    sizes = _checked_sizes(collectives, sizes_bytes, max_bytes, repeats, warmup, dtype)
    bench = _Bench.on_this_group(dtype, device, repeats, warmup)
    skipped = {c: CANNOT_MEASURE[bench.backend, bench.where.type, c] for c in collectives
               if (bench.backend, bench.where.type, c) in CANNOT_MEASURE}
    measured = [c for c in collectives if c not in skipped]
    rows, fits, total = [], {}, len(measured) * len(sizes)
    for name in measured:
        for size in sizes:
            rows.append(bench.measure(name, size))
            if on_progress:
                on_progress({"collective": name, "bytes": rows[-1].bytes, "done": len(rows),
                             "total": total})
        fits[name] = _fit(rows, name)
    return CommBenchFigures(world_size=bench.world_size, backend=bench.backend, device=str(bench.where),
                            dtype=dtype, rows=rows, fits=fits, skipped=skipped)


def _checked_sizes(collectives: list[str], sizes_bytes: list[int] | None, max_bytes: int | None,
                   repeats: int, warmup: int, dtype: str) -> list[int]:
    """The sizes to time, ascending, once every setting is checked; before any communication."""
    _check_collectives(collectives)
    sizes = DEFAULT_SIZES_BYTES if sizes_bytes is None else list(sizes_bytes)
    if not sizes or any(not isinstance(s, int) or s <= 0 for s in sizes):
        raise ValueError(f"sizes_bytes must be positive whole numbers of bytes, got {sizes_bytes}")
    sizes = sorted({s for s in sizes if max_bytes is None or s <= max_bytes})
    if not sizes:
        raise ValueError(f"no message size is at most max_bytes={max_bytes}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return sizes


@dataclass(frozen=True)
class _Bench:
    """What every measurement of one benchmark shares: the group, the buffers' device and dtype."""

    world_size: int
    rank: int
    backend: str
    where: torch.device
    itemsize: int
    zeros: Callable[[int], torch.Tensor]
    repeats: int
    warmup: int

    @classmethod
    def on_this_group(cls, dtype: str, device: str | None, repeats: int, warmup: int) -> _Bench:
        if not dist.is_initialized():
            raise RuntimeError("the communication benchmark needs an initialised process group")
        n, rank = dist.get_world_size(), dist.get_rank()
        if n < 2:
            raise ValueError("the communication benchmark needs at least 2 workers")
        where = torch.device(device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
        # Zeros, not random data: a repeated SUM stays 0 instead of growing to inf, whose
        # arithmetic is slower on some CPUs.
        return cls(world_size=n, rank=rank, backend=str(dist.get_backend()), where=where,
                   itemsize=torch.empty(0, dtype=DTYPES[dtype]).element_size(),
                   zeros=partial(torch.zeros, dtype=DTYPES[dtype], device=where),
                   repeats=repeats, warmup=warmup)

    def measure(self, name: str, size: int) -> CommBenchRow:
        """One collective at one message size: its row, the same on every rank."""
        op, nbytes = BUILDERS[name](max(1, size // self.itemsize), self.world_size, self.rank, self.zeros)
        times = _timed(op, self.warmup, self.repeats, self.where)
        del op  # frees this size's buffers before the next size allocates
        if name == "send_recv":  # rank 0's clock sees the whole round trip; halve it
            times = [t / 2 if self.rank == 0 else 0.0 for t in times]
        return _row(name, nbytes, times, self.world_size, self.repeats, self.warmup, self.where)


def _fit(rows: list[CommBenchRow], name: str) -> CollectiveFit:
    """Latency and bandwidth of one collective from its rows, or the reason there are none."""
    alpha, beta, why = fit_alpha_beta([(r.bytes, r.time_s) for r in rows if r.collective == name])
    return CollectiveFit(alpha_s=alpha, beta_bytes_per_s=beta, reason=why)


def _check_collectives(names: list[str]) -> None:
    unknown = [c for c in names if c not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown collective {unknown[0]!r}: choose from {', '.join(BUILDERS)}")


def _timed(op, warmup: int, repeats: int, where: torch.device) -> list[float]:
    for _ in range(warmup):
        op()
    if where.type == "cuda":
        pairs = []
        for _ in range(repeats):
            dist.barrier()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            op()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize()  # note: the one host-device sync, after all the repeats
        return [s.elapsed_time(e) / 1e3 for s, e in pairs]
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        op()  # on a CPU the data has moved when the call returns
        times.append(time.perf_counter() - start)
    return times


def _row(name: str, nbytes: int, times: list[float], n: int, repeats: int, warmup: int,
         where: torch.device) -> CommBenchRow:
    stats = torch.tensor([statistics.median(times), min(times), max(times)],
                         dtype=torch.float64, device=where)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # the slowest rank's figures, on every rank
    median, fastest, slowest = stats.tolist()  # note: a host-device sync on a GPU
    algbw_gbps = nbytes / median / 1e9
    return CommBenchRow(collective=name, bytes=nbytes, time_s=median, time_min_s=fastest, time_max_s=slowest,
                        algbw_gbps=algbw_gbps, busbw_gbps=algbw_gbps * bus_factor(name, n), repeats=repeats,
                        warmup=warmup)


def bench_on_engine(options: dict) -> CommBenchFigures:
    """``run_comm_bench(**options)`` as the engines run it for ``Session.bench_comm``: rank 0
    publishes its progress to the notebook."""
    from parakit.engine.publish import publish

    progress = publish if dist.is_initialized() and dist.get_rank() == 0 else None
    return run_comm_bench(**options, on_progress=progress)
