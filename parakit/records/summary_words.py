"""A run's summary in words: how each figure was obtained (``Summary.method``), why a figure is
None (``RunResult.unmeasured``), and the warnings ``measure`` adds (records/summary.py, which
computes the figures). Kept apart so the wording changes without touching the arithmetic."""

from __future__ import annotations

from parakit.config.own_model import WHOLE_MODEL
from parakit.config.run import RunConfig, Strategy
from parakit.records.intervals import METHOD as INTERVAL_METHOD
from parakit.records.memory import memory_unmeasured
from parakit.records.rank import RankReport
from parakit.records.result import StepRecord
from parakit.records.stragglers import METHOD as STRAGGLER_METHOD
from parakit.records.summary_fields import Summary


def unmeasured_reasons(summary: Summary, config: RunConfig, reports: list[RankReport], no_energy: str | None,
                       no_flops: dict[str, str]) -> dict[str, str]:
    """Why figures of ``summary`` are None, by stored name, where the run can tell
    (``RunResult.unmeasured``)."""
    why = {}
    if summary.peak_mem_bytes is None and reports[0].peak_mem_reason:
        why["peak_mem_bytes"] = reports[0].peak_mem_reason
    why.update(memory_unmeasured(summary, reports))
    if summary.comm_bytes_per_step is None:
        why["comm_bytes_per_step"] = unmeasured_wire(config)
    if summary.compute_time_s is None:
        why["compute_time_s"] = unrecorded_breakdown(config)
    if summary.wall_samples_per_s is None:
        why["wall_samples_per_s"] = "no step after the warm-up was timed by the wall clock"
    if no_energy:
        why["energy_j"] = no_energy
    return why | no_flops


def progress_warning(reports: list[RankReport]) -> str | None:
    """One warning for the progress messages that could not be sent, on any rank, or None."""
    failed = [r for r in reports if r.progress_failures]
    if not failed:
        return None
    times = sum(r.progress_failures for r in failed)
    return (f"progress messages failed {times} time(s) on rank(s) {', '.join(str(r.rank) for r in failed)}; "
            "the live progress missed them, the run itself is unaffected")


def divergence_warning(step: int, steps: list[StepRecord], config: RunConfig) -> str:
    last = steps[-1].step + 1
    ended = (f"the run stopped after step {last} of {config.steps} (stop_on_divergence)"
             if last < config.steps and config.stop_on_divergence else f"it ran all {last} steps")
    return (f"the loss diverged at step {step} (NaN or infinite); {ended}. "
            f"Try a smaller lr (it was {config.lr:g}), precision='fp32' or bf16 instead of fp16.")


def unmeasured_wire(config: RunConfig) -> str:
    if config.strategy is Strategy.SINGLE:
        return "a single worker sends nothing"
    return (f"bytes are counted in DDP's communication hooks; {config.strategy}'s collectives "
            "(all-gather, reduce-scatter, send/recv) are not counted yet")


def unrecorded_breakdown(config: RunConfig) -> str:
    if config.profile_every == 0:
        return "the profiler was off (profile_every=0)"
    return (f"no step after the {config.warmup_steps} warm-up steps was recorded "
            f"(steps={config.steps}, profile_every={config.profile_every})")


def methods(config: RunConfig, summary: Summary) -> dict[str, str]:
    """How each summary figure was obtained, in words, kept in the record beside it."""
    n, w = summary.measured_steps, config.warmup_steps
    window = f"median over {summary.timed_steps} of the {n} steps after {w} warm-up steps"
    if summary.timed_steps < n:
        window += " (the profiler's recorded steps left out: they run slower)"
    if config.compile:
        window += " (torch.compile compiles in the first, a warm-up step)"
    out = {
        "step_time_s": f"slowest rank per step, {window} (min {summary.step_time_min_s:.4g} s, "
                       f"max {summary.step_time_max_s:.4g} s); CUDA events on GPU, wall clock on CPU",
        "samples_per_s": "global batch size / step_time_s",
        "samples_per_s_low": INTERVAL_METHOD,
        "step_time_s_low": INTERVAL_METHOD,
        "other_cpu_share": ("CPU time other processes used during the measured steps (psutil: the host's busy "
                            "CPU time less this run's engines' own), over the host's CPU capacity in that window; "
                            "the busiest host"),
        "wall_samples_per_s": (f"global batch size x {n} measured steps / their wall clock, from the first "
                               "measured step's start to the last one's end, everything between steps "
                               "included; slowest rank"),
        "peak_mem_bytes": "largest rank: torch.cuda.max_memory_allocated on GPU, peak resident set on CPU",
    }
    if summary.stragglers is not None:
        out["stragglers"] = STRAGGLER_METHOD
    if summary.compute_time_s is not None:
        which = (f"every {config.profile_every}th after the warm-up" if config.profile_every
                 else "one window, the run's last steps")
        out["compute_time_s"] = (
            f"torch.profiler on {summary.breakdown_steps} steps ({which}): union of compute intervals (GPU kernels; CPU operators of the training "
            "thread), mean over ranks, median over recorded steps; comm_time_s the same for "
            "collectives (gloo threads, NCCL kernels) from when the last rank entered them (ddp, fsdp, tensor: the "
            "wait before is idle), exposed_comm_time_s the part with no compute, idle_time_s the rest of the step"
        )
    if summary.energy_j is not None:
        out["energy_j"] = ("energy counter read at the start and end of the measured steps "
                           "(NVML nvmlDeviceGetTotalEnergyConsumption on GPU, RAPL package counters on CPU), "
                           "each device once, summed, over the measured steps' window (warm-up left out, as in "
                           "wall_samples_per_s); samples_per_j = samples of the measured steps / energy_j")
    if summary.flops_per_step is not None:
        out["flops_per_step"] = summary.flops_method or ""
        out["mfu"] = "flops_per_step / step_time_s / workers / the device's dense peak at this precision"
    if summary.comm_bytes_per_step is not None:
        out["comm_bytes_per_step"] = "counted in DDP's communication hooks, largest sender, mean over measured steps"
    return out


def one_unit_warning(summary: Summary, config: RunConfig) -> str | None:
    """One warning where fsdp or activation checkpointing found no repeated blocks and took
    the whole model as one unit: what that costs, and how to name the blocks; None otherwise."""
    costs = []
    if summary.sharded_units == [WHOLE_MODEL]:
        full = summary.param_bytes * config.data_parallel_size if summary.param_bytes else None
        held = f" (about {full / 2**20:.1f} MiB)" if full else ""
        costs.append(f"fsdp gathers every weight at once{held}, so each rank's peak holds a whole replica, "
                     "and no gathering overlaps compute")
    if summary.checkpointed_units == [WHOLE_MODEL]:
        costs.append("checkpointing recomputes the whole forward in backward at once, so backward's peak "
                     "still holds every activation")
    if not costs:
        return None
    return (f"no repeated blocks found in the model, so it is one unit: {'; '.join(costs)}. "
            "Name them with blocks='model.layers' (a list of blocks) or blocks=[MyBlock]")
