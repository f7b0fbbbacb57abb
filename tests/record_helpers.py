"""Hand-built records for tests that need a rank's report without running one, and the store read
strictly."""

from __future__ import annotations

import warnings

from parakit.records.rank import RankReport
from parakit.records.result import RunResult
from parakit.records.store import read_runs


def report(**figures) -> RankReport:
    """A CPU rank's report of a run nothing went wrong in; ``figures`` replace the defaults."""
    plain = dict(rank=0, error=None, stopped_early=False, stop_reason=None, losses=[1.0], step_time_s=[0.1],
                 comm_bytes=None, uncompressed_bytes=None, peak_mem_bytes=None, peak_mem_kind=None,
                 peak_mem_reason=None, param_bytes=0, optimizer_bytes=0, params_digest=None, math_flags={},
                 flops_per_step=None, flops_method=None, peak_flops_per_s=None, no_peak_reason=None,
                 measured_wall_s=None, power=None, power_device="cpu@h", profiler_cost_s=0.0, progress_cost_s=0.0,
                 profiler_on_steps=[], progress_messages=0, gc_collections=None)
    return RankReport(**{**plain, **figures})


def quietly_read(folder) -> list[RunResult]:
    """read_runs, failing on any warning: a half-written or damaged file would show as one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_runs(folder)
