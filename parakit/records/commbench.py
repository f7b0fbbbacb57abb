"""What the communication benchmark (engine/commbench.py) sends back from every rank:
``CommBenchFigures``, a row per (collective, message size) and a latency + bandwidth fit per
collective. The session turns rank 0's into the stored ``CommBenchResult`` (below), whose rows
are this JSON (``to_dict``), at the store boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from parakit.records.result import OK, new_run_id, now_iso, renamed

if TYPE_CHECKING:
    import pandas


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


@dataclass
class CommBenchResult:
    """A communication micro-benchmark on the session's engines; saved like a run."""

    RENAMED = {"device": "device_names"}  # stored name before 0.2 -> the field's name now

    bench_id: str
    status: str
    world_size: int
    backend: str | None
    device_names: list[str]
    """Each rank's device by its product name (stored as "device" before 0.2)."""
    dtype: str = "float32"
    rows: list[dict[str, Any]] = field(default_factory=list)
    """One per (collective, message size): bytes, time_s (median of the slowest rank), time_min_s,
    time_max_s, algbw_gbps, busbw_gbps (nccl-tests definitions), repeats, warmup."""
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per collective: alpha_s (latency) and beta_bytes_per_s (bandwidth) of time = alpha + bytes/beta,
    or None with the reason."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Collectives this backend and device cannot measure honestly, and why."""
    error: str | None = None
    started_at: str = ""
    ended_at: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CommBenchResult":
        return cls(**renamed(d, cls))

    def frame(self) -> "pandas.DataFrame":
        """The rows as a DataFrame, one row per (collective, size)."""
        import pandas as pd  # only where a table is wanted

        return pd.DataFrame(self.rows)

    def __repr__(self) -> str:
        head = f"CommBenchResult({self.bench_id}, {self.status}, {self.backend} x{self.world_size}"
        if not self.ok:
            return f"{head}, error={self.error!r})"
        peak = max((r["busbw_gbps"] for r in self.rows), default=None)
        return f"{head}, {len(self.rows)} rows" + (f", peak busbw {peak:.2f} GB/s)" if peak else ")")


def bench_result(outcome, world: int, backend: str | None, devices: list[str], started: str) -> CommBenchResult:
    """The record of a benchmark: rank 0's figures (every rank returns the same, the slowest
    rank's), or the error of a failed or stopped one."""
    result = CommBenchResult(
        bench_id=f"comm-{new_run_id()}", status=outcome.status, world_size=world,
        backend=backend, device_names=devices, error=outcome.error, started_at=started, ended_at=now_iso(),
    )
    if outcome.status == OK and outcome.rank_results:
        measured = outcome.rank_results[0]
        result.dtype, result.rows = measured["dtype"], measured["rows"]
        result.fits, result.skipped = measured["fits"], measured["skipped"]
    return result
