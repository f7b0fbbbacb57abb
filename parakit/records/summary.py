"""Summary figures of a run, from what its ranks measured: medians over the measured steps,
the time breakdown, energy, FLOPs and MFU, as a frozen ``Summary`` (records/summary_fields.py).
A figure that could not be measured is None, with its reason in ``RunResult.unmeasured``; the
words (how each figure was obtained, why one is missing) are records/summary_words.py's."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Any

from parakit.config.formulas import TERA, achieved_flops_per_s, mfu, per_joule
from parakit.config.run import RunConfig
from parakit.records.context import context_summary
from parakit.records.experts import expert_step, expert_summary
from parakit.records.intervals import run_estimate, still_settling, within_run_sd
from parakit.records.machine_load import busy_warning, is_busy, machine_load
from parakit.records.memory import memory_methods, memory_summary
from parakit.records.rank import RankReport
from parakit.records.result import RankInfo, RunResult, StepRecord
from parakit.records.stragglers import rank_figures, why_no_stragglers
from parakit.records.summary_fields import InstrumentOverhead, Summary
from parakit.records.summary_words import (
    divergence_warning, methods, one_unit_warning, progress_warning, unmeasured_reasons,
)


def measure(result: RunResult, config: RunConfig, reports: list[RankReport | None]) -> None:
    """Fill ``result``'s steps, summary, unmeasured reasons and warnings from the ranks' reports.

    A failed run keeps the steps every returning rank completed (a dead rank returns nothing:
    None in its place); a run with no completed step has no summary.
    """
    returned = [r for r in reports if r is not None]
    if not returned:
        return
    failed_progress = progress_warning(returned)
    if failed_progress and failed_progress not in result.warnings:  # once, however often measured
        result.warnings.append(failed_progress)
    result.steps = steps_from_ranks(returned, config.warmup_steps)
    result.timelines = [r.timeline for r in returned if r.timeline is not None]  # plots.timeline draws them
    if not result.steps:
        return
    wall_s = measured_wall_s(returned)
    base = summarize(result.steps, config, result.ranks)
    # The meter's window is the measured steps': per-sample figures cover what the throughput does.
    power, no_energy = power_summary(result.ranks, config.batch_size * base.measured_steps)
    first = reports[0]  # rank 0 counts the FLOPs; None if its engine died
    flops, no_flops = flops_summary(first, base.step_time_s, config.workers)
    overhead = instrument_overhead(result.steps, returned, wall_s)
    summary = replace(
        base, **power, **flops, **machine_load(returned, wall_s), flops_method=first.flops_method if first else None,
        math_flags=returned[0].math_flags,
        fp8_layers=returned[0].fp8_layers,  # None but under fp8: no key then, so other runs' records compare equal
        sharded_units=returned[0].sharded_units, checkpointed_units=returned[0].checkpointed_units,
        **context_summary(returned, config.warmup_steps),  # {} off context: no keys
        wall_samples_per_s=config.batch_size * base.measured_steps / wall_s if wall_s else None,
        instrument_overhead=overhead, profiler_overhead=overhead.recorded_step_slowdown,
        diverged_at_step=diverged_at_step(result.steps),
    )
    summary = result.summary = replace(summary, method=methods(config, summary) | memory_methods(summary, returned))
    result.unmeasured.update(unmeasured_reasons(summary, config, returned, no_energy, no_flops))
    if (no_stragglers := why_no_stragglers([s for s in result.steps if not s.warmup], config)) is not None:
        result.unmeasured["stragglers"] = no_stragglers
    if summary.diverged_at_step is not None:
        result.warnings.append(divergence_warning(summary.diverged_at_step, result.steps, config))
    settling = still_settling([s.step_time_s for s in result.steps if not s.warmup])
    for warning in (settling, busy_warning(summary) if is_busy(summary) else None, one_unit_warning(summary, config)):
        if warning and warning not in result.warnings:
            result.warnings.append(warning)


def measured_wall_s(reports: list[RankReport]) -> float | None:
    """The measured steps' wall clock: the slowest rank's, as a synchronous step is only done
    when every rank is."""
    walls = [r.measured_wall_s for r in reports]
    return max(walls) if walls and all(w is not None for w in walls) else None


def instrument_overhead(steps: list[StepRecord], reports: list[RankReport],
                        wall_s: float | None) -> InstrumentOverhead:
    """What parakit's own instruments cost this run, measured on it (each figure is described
    on ``InstrumentOverhead``)."""
    measured = [s for s in steps if not s.warmup]
    recorded = {s.step for s in measured if s.rank_compute_time_s is not None}
    after = {s + k for s in recorded for k in (1, 2, 3) if s + 1 not in recorded} - recorded
    others = [s.step_time_s for s in measured if s.step not in recorded]
    plain = [s.step_time_s for s in measured if s.step not in recorded and s.step not in after]
    near = [s.step_time_s for s in measured if s.step in after]
    inside = [s.step_time_s for s in measured if s.step in recorded]

    def slowdown(times: list[float], least: int, against: list[float]) -> float | None:
        ok = len(times) >= least and len(against) >= 3
        return statistics.median(times) / statistics.median(against) - 1 if ok else None

    costs = [r.profiler_cost_s + r.progress_cost_s for r in reports]
    collections = [r.gc_collections for r in reports if r.gc_collections]
    between = max(costs) if costs else None
    extra = sum(t - statistics.median(others) for t in inside) if inside and len(others) >= 3 else 0.0
    return InstrumentOverhead(
        recorded_steps=len(recorded),
        recorded_step_slowdown=slowdown(inside, 1, others),
        after_recorded_slowdown=slowdown(near, 3, plain),
        between_steps_s=between,
        wall_share=(between + max(extra, 0.0)) / wall_s if between is not None and wall_s else None,
        # Counted, not timed: when the profiler was on, and what else ran between the steps.
        profiler_on_steps=sorted({s for r in reports for s in r.profiler_on_steps}),
        progress_messages=max((r.progress_messages for r in reports), default=0),
        gc_collections=[max(c) for c in zip(*collections)] if collections else None,
        activation_count_s=max((r.activation_count_s for r in reports if r.activation_count_s is not None),
                               default=None),
        **checkpoint_cost(reports, measured[0].step if measured else None, wall_s),
        method=("recorded_step_slowdown: median recorded step against the median of the others; "
                "after_recorded_slowdown: the 3 steps after each mid-run window against the steps "
                "neither recorded nor after one; between_steps_s: perf_counter around "
                "the profiler's start, stop and reading and the progress messages, largest rank; "
                "wall_share: between_steps_s plus the recorded steps' time above the others' median, "
                "over the measured steps' wall clock; checkpoint_pause_s and checkpoint_write_s: perf_counter "
                "around each checkpoint's start and until its future was done, median of the slowest rank's; "
                "checkpoint_share: the slowest rank's pauses after measured steps over their wall clock"),
    )


def checkpoint_cost(reports: list[RankReport], first_measured: int | None, wall_s: float | None) -> dict[str, Any]:
    """What the checkpoints taken while training (``checkpoint_every``) cost: InstrumentOverhead's
    checkpoint figures, or {} for a run without them."""
    taken = [r for r in reports if r.checkpoint_steps is not None]
    if not taken:
        return {}
    slowest = [max(p) for p in zip(*(r.checkpoint_pause_s for r in taken))]
    written = [max(w) for w in zip(*(r.checkpoint_write_s for r in taken))]
    steps = taken[0].checkpoint_steps
    # a checkpoint after step k (counted from 1) paused the loop inside the measured wall clock
    # when step k was measured
    inside = [p for k, p in zip(steps, slowest) if first_measured is not None and k - 1 >= first_measured]
    return {
        "checkpoints": len(steps),
        "checkpoint_pause_s": statistics.median(slowest) if slowest else None,
        "checkpoint_write_s": statistics.median(written) if written else None,
        "checkpoint_share": sum(inside) / wall_s if wall_s and first_measured is not None else None,
    }


def diverged_at_step(steps: list[StepRecord]) -> int | None:
    """The first step whose loss is NaN or infinite, or None."""
    return next((s.step for s in steps if s.loss is not None and not math.isfinite(s.loss)), None)


def steps_from_ranks(reports: list[RankReport], warmup_steps: int) -> list[StepRecord]:
    """Merge per-rank step lists (same length on every rank) into one record per step."""
    n = min(min(len(r.step_time_s), len(r.losses)) for r in reports)
    counted = all(r.comm_bytes for r in reports)
    timed = all(r.step_end_s and len(r.step_end_s) >= n for r in reports)
    steps = []
    for i in range(n):
        losses = [r.losses[i] for r in reports if r.losses[i] is not None]
        times = [r.step_time_s[i] for r in reports]
        profiled = all(r.profiled(i) for r in reports)
        split = {f"rank_{k}": [getattr(r, k)[i] for r in reports] for k in BREAKDOWN} if profiled else {}
        steps.append(
            StepRecord(
                step=i,
                loss=sum(losses) / len(losses) if losses else None,
                step_time_s=max(times),
                rank_step_time_s=times,
                warmup=i < warmup_steps,
                rank_comm_bytes=[r.comm_bytes[i] for r in reports] if counted else None,
                rank_uncompressed_bytes=[r.uncompressed_bytes[i] for r in reports] if counted else None,
                time_s=max(r.step_end_s[i] for r in reports) if timed else None,
                **split, **expert_step(reports, i),
            )
        )
    return steps


BREAKDOWN = ("compute_time_s", "comm_time_s", "exposed_comm_time_s", "idle_time_s")
# The helpers below each return some of Summary's fields as keyword arguments, by attribute
# (``Summary(**step_measures(...))``): a bundle for the one constructor, never a record read by key.


def summarize(steps: list[StepRecord], config: RunConfig, ranks: list[RankInfo]) -> Summary:
    """The figures the steps and the ranks' placement give, over the measured (non-warm-up)
    steps; ``measure`` adds what the ranks' reports give (power, FLOPs, the machine's load)."""
    measured = [s for s in steps if not s.warmup] or steps
    losses = [s.loss for s in steps if s.loss is not None]
    peaks = [r.peak_mem_bytes for r in ranks if r.peak_mem_bytes is not None]
    digests = [r.params_digest for r in ranks if r.params_digest]
    bubbles = [r.bubble for r in ranks if r.bubble is not None]
    return Summary(
        **step_measures(timed_steps(measured), config.batch_size),
        measured_steps=len(measured),
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        peak_mem_bytes=max(peaks) if peaks else None,
        # Bit-identical replicas at the end; None where ranks do not each hold a full replica.
        params_in_sync=len(set(digests)) == 1 if digests and len(digests) == len(ranks) else None,
        # The largest rank's share of each part: what decides whether a model fits.
        **memory_summary(ranks),
        bubble=statistics.mean(bubbles) if bubbles else None,
        **wire_summary(measured),
        bubble_ideal=next((r.bubble_ideal for r in ranks if r.bubble_ideal is not None), None),
        **breakdown_summary(measured),
        **rank_figures(measured, config),  # each rank's, and the stragglers (records/stragglers.py)
        **expert_summary(measured),
    )


def timed_steps(measured: list[StepRecord]) -> list[float]:
    """The step times the step-time figures are taken over: the measured steps the profiler did
    not record, where at least 3 are left. Recorded steps run slower (``recorded_step_slowdown``;
    the first window in a fresh engine process pays the profiler's start-up, 1.2 s outside the
    steps and up to 2x inside them), so counting them let the instrument move the figure."""
    plain = [s.step_time_s for s in measured if s.rank_compute_time_s is None]
    return plain if len(plain) >= 3 else [s.step_time_s for s in measured]


def step_measures(times: list[float], batch_size: int) -> dict[str, Any]:
    """Step time and samples/s at the median step, with their 95 % intervals (records/intervals.py)
    and the within-run noise they came with. At the median, so one slow step does not move it."""
    step_time = statistics.median(times)
    noise = within_run_sd(times)
    interval = run_estimate(step_time, noise)
    return {
        "step_time_s": step_time, "step_time_min_s": min(times), "step_time_max_s": max(times),
        "step_time_s_low": interval.low, "step_time_s_high": interval.high,
        "samples_per_s": batch_size / step_time,
        "samples_per_s_low": batch_size / interval.high, "samples_per_s_high": batch_size / interval.low,
        "within_run_sd": noise, "timed_steps": len(times),
    }


def wire_summary(measured: list[StepRecord]) -> dict[str, Any]:
    """Bytes the largest sender gave to gradient collectives per step (mean over measured
    steps), beside the plain fp32 all-reduce bytes of the same buckets."""
    sent = [max(s.rank_comm_bytes) for s in measured if s.rank_comm_bytes]
    full = [max(s.rank_uncompressed_bytes) for s in measured if s.rank_uncompressed_bytes]
    if not sent:
        return {"comm_bytes_per_step": None, "uncompressed_bytes_per_step": None, "compression_ratio": None}
    comm, plain = statistics.mean(sent), statistics.mean(full)
    return {
        "comm_bytes_per_step": comm,
        "uncompressed_bytes_per_step": plain,
        # None, not infinity, when nothing was sent at the median step (local SGD between averages)
        "compression_ratio": plain / comm if comm else None,
    }


def breakdown_summary(measured: list[StepRecord]) -> dict[str, Any]:
    """The time breakdown: per recorded step the mean over ranks, then the median over steps.

    ``breakdown_check`` is compute + exposed communication + idle over the step time the
    timer measured (a separate clock): near 1 when the breakdown accounts for the step.
    (``profiler_overhead``, how much slower recorded steps were, is ``instrument_overhead``'s
    ``recorded_step_slowdown``: see there.)
    """
    recorded = [s for s in measured if s.rank_compute_time_s is not None]
    if not recorded:
        return {k: None for k in (*BREAKDOWN, "breakdown_steps", "breakdown_check")}
    out: dict[str, Any] = {
        k: statistics.median(statistics.mean(getattr(s, f"rank_{k}")) for s in recorded) for k in BREAKDOWN
    }
    accounted = [
        (c + e + i) / t
        for s in recorded
        for c, e, i, t in zip(s.rank_compute_time_s, s.rank_exposed_comm_time_s, s.rank_idle_time_s,
                              s.rank_step_time_s)
        if t > 0
    ]
    out["breakdown_steps"] = len(recorded)
    out["breakdown_check"] = statistics.median(accounted) if accounted else None
    return out


def power_summary(ranks: list[RankInfo], samples_trained: int) -> tuple[dict[str, Any], str | None]:
    """Energy of the run: each device once (engines sharing a GPU, or the CPU ranks of a host,
    read one counter), summed over devices.

    Returns:
        The summary figures by attribute (energy_j, avg_power_w, samples_per_j, power_scope,
        power_sampler_cpu_share) and, when energy is None, the reason.
    """
    devices: dict[str, dict[str, Any]] = {}
    for r in ranks:
        if r.power is not None and r.power_device not in devices:
            devices[r.power_device] = r.power
    energies = [p["energy_j"] for p in devices.values()]
    overheads = [p["overhead_s"] / p["duration_s"] for p in devices.values() if p["samples"] and p["duration_s"] > 0]
    out = {
        "energy_j": None, "avg_power_w": None, "samples_per_j": None,
        "power_scope": next((p["scope"] for p in devices.values()), None),
        # CPU time of the sampler thread over the window: what looking cost the engine.
        "power_sampler_cpu_share": max(overheads) if overheads else None,
    }
    if not devices or any(e is None for e in energies):
        reasons = sorted({p["reason"] for p in devices.values() if p["energy_j"] is None and p["reason"]})
        return out, "; ".join(reasons) or "no rank measured power"
    energy = sum(energies)
    out["energy_j"] = energy
    out["avg_power_w"] = sum(p["avg_power_w"] for p in devices.values())
    out["samples_per_j"] = per_joule(samples_trained, energy)
    return out, None


def flops_summary(rank0: RankReport | None, step_time_s: float,
                  world_size: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Model FLOPs per step, achieved TFLOP/s per device and MFU (nanoGPT's estimate_mfu: model
    FLOPs, not hardware FLOPs, so recomputation and padding do not count), with reasons.

    Args:
        rank0: rank 0's report (the rank that counts the FLOPs), None if it sent none.

    Returns:
        The summary figures and {figure: why it is None}.
    """
    if rank0 is None:
        flops = how = peak = None
        no_peak = "the run did not report a peak"
    else:
        flops, how = rank0.flops_per_step, rank0.flops_method
        peak, no_peak = rank0.peak_flops_per_s, rank0.no_peak_reason
    achieved = achieved_flops_per_s(flops, step_time_s, world_size)
    out = {
        "flops_per_step": flops,
        "tflops_per_device": achieved / TERA if achieved is not None else None,
        "mfu": mfu(flops, step_time_s, world_size, peak),
    }
    why = {}
    if flops is None:
        why["flops_per_step"] = how or "FLOPs were not counted"
        why["mfu"] = why["flops_per_step"]
    elif out["mfu"] is None:
        why["mfu"] = no_peak
    return out, why
