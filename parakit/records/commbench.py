"""What the communication benchmark (engine/commbench.py) sends back from every rank:
``CommBenchFigures``, a row per (collective, message size) and a latency + bandwidth fit per
collective. The session turns rank 0's into the stored ``CommBenchResult`` (records/result.py),
whose rows are this JSON (``to_dict``), at the store boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class CommBenchRow:
    """One collective at one message size, the same on every rank (the slowest rank's)."""

    collective: str
    """all_reduce, all_gather, reduce_scatter, broadcast or send_recv."""
    bytes: int
    """The bytes the time counts, as nccl-tests counts them (all_gather: its whole output,
    reduce_scatter: its whole input); a little under the size asked for where the per-rank
    share is rounded down to whole elements."""
    time_s: float
    """The median of the timed repeats on the slowest rank (send_recv: the one-way time, half
    the round trip)."""
    time_min_s: float
    """The fastest repeat, the slowest rank's."""
    time_max_s: float
    """The slowest repeat of any rank."""
    algbw_gbps: float
    """Algorithm bandwidth, bytes / time_s, in GB/s (1e9 bytes per second)."""
    busbw_gbps: float
    """Bus bandwidth, algbw_gbps times the collective's bus factor (nccl-tests' definition)."""
    repeats: int
    """Timed calls it is the median of."""
    warmup: int
    """Untimed calls before them."""


@dataclass(frozen=True, kw_only=True)
class CollectiveFit:
    """time_s = alpha_s + bytes / beta_bytes_per_s, fitted to one collective's rows."""

    alpha_s: float | None
    """The latency; None when it could not be fitted (``reason``)."""
    beta_bytes_per_s: float | None
    """The bandwidth; None when it could not be fitted."""
    reason: str | None
    """Why the fit is None (too few sizes, noise); None when it was fitted."""


@dataclass(frozen=True, kw_only=True)
class CommBenchFigures:
    """One rank's result of ``engine.commbench.run_comm_bench``; every rank returns the same."""

    world_size: int
    """Ranks in the process group it ran on."""
    backend: str
    """The group's backend: 'gloo' or 'nccl'."""
    device: str
    """Where the buffers lived: 'cpu' or 'cuda:0'."""
    dtype: str
    """The buffers' element type: float32, float16 or bfloat16."""
    rows: list[CommBenchRow]
    """A row per measured (collective, size): collective by collective, sizes ascending."""
    fits: dict[str, CollectiveFit]
    """Collective -> its latency and bandwidth fit, for every measured collective."""
    skipped: dict[str, str]
    """Collective -> why this backend and device cannot measure it honestly (not measured)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: what the stored CommBenchResult holds."""
        return asdict(self)
