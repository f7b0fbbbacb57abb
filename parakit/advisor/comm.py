"""Communication in the cost model: alpha-beta time of a collective, DDP's gradient buckets and
what each compression sends. Standard library only.

A collective of S bytes (nccl-tests' size: all_gather counts its output, reduce_scatter its
input) over n ranks takes::

    time = alpha * ceil(log2 n) / ceil(log2 n0) + S * bus_factor(n) / bus_bandwidth

with alpha and the bus bandwidth from the communication benchmark (measured on n0 ranks) or a
preset. The bandwidth term is the ring algorithms' (each rank's link carries bus_factor * S);
the latency term grows with log2 n, as tree and recursive-doubling algorithms do for the small
messages where it matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from parakit.advisor.hardware import Hardware
from parakit.config.formulas import bus_factor, powersgd_compresses
from parakit.config.levers import Compression, CompressionKind

MIB = 2**20
# DDP's buckets: the first (the last layers' gradients, ready first) is capped at 1 MiB so
# communication starts early; the others at bucket_cap_mb (25 MiB by default).
FIRST_BUCKET_BYTES = 1 * MIB
BUCKET_BYTES = 25 * MIB


def collective_time(hardware: Hardware, collective: str, nbytes: float, ranks: int, calls: int = 1,
                    span: int | None = None) -> float:
    """Seconds for ``calls`` collectives moving ``nbytes`` in all, over ``ranks`` ranks.

    ``span``: the ranks the group stretches over (a mesh's outer groups are strided), which
    decides whether it crosses the network; default ``ranks``.
    """
    if ranks < 2 or nbytes <= 0 or calls <= 0:
        return 0.0
    link = hardware.link_for(collective, span or ranks)
    measured = hardware.measured_world if collective in hardware.collectives else 2
    steps = 1 if collective == "send_recv" else math.ceil(math.log2(ranks)) / math.ceil(math.log2(max(measured, 2)))
    return calls * link.alpha_s * steps + nbytes * bus_factor(collective, ranks) / link.bandwidth_bytes_per_s


def buckets(grad_bytes: float, bucket_bytes: float = BUCKET_BYTES) -> list[float]:
    """DDP's bucket sizes, in the order they are reduced (the last layers' first)."""
    sizes, left = [], grad_bytes
    cap = FIRST_BUCKET_BYTES
    while left > 0:
        sizes.append(min(cap, left))
        left -= sizes[-1]
        cap = bucket_bytes
    return sizes


@dataclass(frozen=True)
class Wire:
    """What one gradient synchronisation sends: per collective, bytes (nccl-tests' size) and
    calls; ``sent_bytes`` is what each rank hands to collectives (parakit's counters' figure)."""

    parts: tuple[tuple[str, float, int], ...]
    """(collective, bytes, calls)."""
    sent_bytes: float

    def time(self, hardware: Hardware, ranks: int) -> float:
        return sum(collective_time(hardware, c, b, ranks, calls) for c, b, calls in self.parts)


def gradient_wire(compression: Compression, grad_bytes: float, numel: int, matrices, ranks: int,
                  n_buckets: int) -> Wire:
    """What DDP's hook for ``compression`` sends for gradients of ``grad_bytes`` (``numel``
    entries; ``matrices`` are the weight shapes, for PowerSGD)."""
    kind = compression.kind
    if kind is CompressionKind.NONE:
        return Wire((("all_reduce", grad_bytes, n_buckets),), grad_bytes)
    if kind in (CompressionKind.FP16, CompressionKind.BF16):
        return Wire((("all_reduce", grad_bytes / 2, n_buckets),), grad_bytes / 2)
    if kind is CompressionKind.POWERSGD:
        sent = 4.0 * powersgd_numel(numel, matrices, compression.rank)
        return Wire((("all_reduce", sent, 3 * n_buckets),), sent)  # P, Q and the uncompressed rest
    k = math.ceil(compression.ratio * numel)
    if kind is CompressionKind.TOPK:
        # values (4 bytes) and int32 indices (4 bytes), all-gathered: every rank receives all ranks'
        sent = 8.0 * k
        return Wire((("all_gather", sent * ranks, 2 * n_buckets),), sent)
    return Wire((("all_reduce", 4.0 * k, n_buckets),), 4.0 * k)  # randomk: the same indices on every rank


def powersgd_numel(numel: int, matrices, rank: int) -> int:
    """Entries PowerSGD all-reduces: P and Q of each matrix worth compressing, the rest as is."""
    kept = 0
    compressed_numel = 0
    for rows, cols in matrices:
        if powersgd_compresses(rows, cols, rank):  # torch's rule, as the engine's hook applies it
            kept += (rows + cols) * rank
            compressed_numel += rows * cols
    return kept + (numel - compressed_numel)


def overlapped_exposure(backward_s: float, bucket_sizes: list[float], bucket_time) -> tuple[float, float]:
    """(communication time, the part of it left after backward) when buckets are all-reduced
    one after another as backward produces them (gradients arrive evenly over backward).

    Args:
        backward_s: backward's compute time.
        bucket_sizes: bytes of each bucket, in reduction order.
        bucket_time: bytes -> seconds of one bucket's collective(s).
    """
    total = sum(bucket_sizes) or 1.0
    ready = done = 0.0
    comm = 0.0
    for size in bucket_sizes:
        ready += backward_s * size / total  # the bucket is full when backward has made its gradients
        t = bucket_time(size)
        comm += t
        done = max(done, ready) + t
    return comm, max(0.0, done - backward_s)
