"""Calibration: what the cost model needs, measured on the session's engines.

All but one run are one-worker runs, at the engines' own thread count (a CPU's cores are
shared out by engine, ``cores // engines`` threads each), saved in the run store like any run:

- single at fp32 over the batch B, B/2, and B in K micro-steps (``accumulate:K``): three
  equations for the per-pass fixed cost a, the per-row cost b and the rest of the step H
  (``T = H + calls * a + b * rows``); the first is the profiled run;
- single at every other precision asked for: its compute over fp32's;
- one worker of each layout and lever the candidates use (ddp with each compression, fsdp,
  tensor, pipeline per schedule): what it adds to single's step (its bookkeeping, DTensor's
  dispatch, compression's own compute) — on one worker nothing is sent;
- with 2 or more engines, ddp on all of them with ``local-sgd`` longer than the run (so nothing
  is sent either): how much slower a rank computes when every engine computes at once;
- the communication benchmark on all engines (small sizes on CPUs): alpha and beta per collective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from parakit.advisor.hardware import Hardware, Link
from parakit.advisor.inputs import Calibration
from parakit.config.shape import ModelShape
from parakit.config.memory_model import memory_per_rank
from parakit.config.formulas import bus_factor, peak_flops
from parakit.config.run import Hybrid, RunConfig, Strategy

# Which step time a run stands for: its median step (what runs report as step_time_s), or its
# fastest (step_time_min_s): the step no other process on the machine slowed down.
STATISTICS = {"median": "step_time_s", "min": "step_time_min_s"}
BENCH_SIZES = {"cpu": ["4KB", "64KB", "512KB", "2MB", "8MB"], "gpu": ["64KB", "1MB", "16MB", "128MB"]}
BENCH_COLLECTIVES = ["all_reduce", "all_gather", "reduce_scatter", "send_recv"]
PRECISION_ORDER = ("fp32", "tf32", "fp16", "bf16", "bf16-pure")


@dataclass
class Plan:
    """What to measure, from the candidates' settings."""

    precisions: list[str]
    compressions: list[str] = field(default_factory=list)
    fsdp: bool = False
    tensor: bool = False
    schedules: list[str] = field(default_factory=list)
    accumulate: int = 2
    """Micro-steps of the accumulate run: the candidates' smallest micro-batches, where they
    can be had."""


def plan_for(configs: list[RunConfig]) -> Plan:
    """What to measure for these candidates: the precisions they use, the one-worker overhead
    of each layout and lever in them, and micro-batches down to their smallest."""
    layouts = {c.hybrid if c.strategy is Strategy.HYBRID else c.strategy for c in configs}
    batch = configs[0].batch_size
    most = max([c.n_microbatches for c in configs if c.uses_pipeline] + [2])
    return Plan(
        precisions=sorted({c.precision.value for c in configs} | {"fp32"}, key=PRECISION_ORDER.index),
        compressions=sorted({str(c.compression) for c in configs if c.strategy is Strategy.DDP}),
        fsdp=bool(layouts & {Strategy.FSDP, Hybrid.FSDP_TENSOR}),
        tensor=bool(layouts & {Strategy.TENSOR, Hybrid.FSDP_TENSOR, Hybrid.DDP_TENSOR}),
        schedules=sorted({c.schedule.value for c in configs if c.uses_pipeline}),
        accumulate=max((k for k in range(2, most + 1) if batch % k == 0), default=1),
    )


def calibrate(session, base: dict[str, Any], shape: ModelShape, plan: Plan, *, measure_links: bool = True,
              statistic: str = "median") -> Calibration:
    """Measure the cost model's inputs on ``session``'s engines (``measure``, then ``derive``).

    Args:
        session: a started Session; its engines are used as they are.
        base: the settings every run shares (model, model_options, data, loss, batch_size,
            steps, warmup_steps, seed, ...).
        shape: the model's shape (for the memory baseline).
        plan: what to measure (``plan_for``).
        measure_links: measure what ranks on these engines cost each other: the contention
            run and the communication benchmark (needs 2 or more engines); not for presets.
        statistic: each run's median step ("median") or fastest step ("min", STATISTICS).

    Raises:
        RuntimeError: if the single fp32 run fails: nothing can be predicted without it.
    """
    return derive(measure(session, base, plan, measure_links), base, shape, statistic)


def roles(plan: Plan, base: dict[str, Any], engine_count: int, measure_links: bool) -> dict[str, dict[str, Any]]:
    """The calibration runs, by what each is for, as run settings (with ``base``)."""
    b, k = base["batch_size"], plan.accumulate
    runs = {"single": {"strategy": "single"}}
    if b >= 2:
        runs["half"] = {"strategy": "single", "batch_size": b // 2}
    if k > 1:
        runs["accumulate"] = {"strategy": "single", "sync": f"accumulate:{k}"}
    runs.update({f"precision:{q}": {"strategy": "single", "precision": q} for q in plan.precisions if q != "fp32"})
    runs.update({f"ddp:{c}": {"strategy": "ddp", "workers": 1, "compression": c} for c in plan.compressions})
    runs.update({name: {"strategy": name, "workers": 1} for name in ("fsdp", "tensor") if getattr(plan, name)})
    runs.update({f"pipeline:{s}": {"strategy": "pipeline", "workers": 1, "schedule": s, "microbatches": max(k, 2)}
                 for s in plan.schedules})
    if measure_links and engine_count >= 2:  # every engine computing, nothing sent: what ranks cost each other
        runs["contention"] = {"strategy": "ddp", "workers": engine_count, "sync": f"local-sgd:{base.get('steps', 10) + 1}"}
    return runs


@dataclass
class Measured:
    """What the calibration runs and the benchmark returned; ``derive`` turns it into figures
    (for either statistic, without running again)."""

    results: dict[str, Any]
    """Role -> RunResult, or the text of why it could not run."""
    fits: dict[str, dict[str, float]]
    bench_id: str | None
    engine: dict[str, Any]
    """The first engine's description: device, device_name, threads."""
    engine_count: int
    memory_bytes: float | None


def measure(session, base: dict[str, Any], plan: Plan, measure_links: bool) -> Measured:
    """Run every calibration run (and the communication benchmark) on the engines."""
    results: dict[str, Any] = {}
    for role, settings in roles(plan, base, session.workers, measure_links).items():
        try:
            results[role] = session.run(**{**base, "workers": 1, **settings})
        except ValueError as e:  # a layout this model or machine cannot take
            results[role] = str(e)
    fits, bench_id = {}, None
    if measure_links and session.workers >= 2:
        fits, bench_id = _bench(session, session.workers)
    first = session.engines[0]  # an EngineInfo, read by attribute
    device = "cpu" if first.device == "cpu" else "gpu"
    engine = {"device": first.device, "device_name": first.device_name, "threads": first.threads}
    return Measured(results, fits, bench_id, engine, session.workers, _memory_per_rank(session, device))


def derive(measured: Measured, base: dict[str, Any], shape: ModelShape, statistic: str = "median") -> Calibration:
    """The calibration's figures from the runs: ``T = H + calls * a + b * rows`` solved over
    single at B, B/2 and B in K micro-steps, then each other run against single's step.

    Raises:
        RuntimeError: if the single fp32 run failed.
    """
    figure, results = STATISTICS[statistic], measured.results
    failed = {role: _why(r) for role, r in results.items() if _why(r) is not None}
    time = {role: r.summary[figure] for role, r in results.items() if role not in failed}
    if "single" not in time:
        raise RuntimeError(f"the one-worker calibration run failed: {failed['single']}")
    b, full = base["batch_size"], time["single"]
    k = _micro_steps(results.get("accumulate"))
    a = max(0.0, (time["accumulate"] - full) / (k - 1)) if "accumulate" in time else 0.0
    per_row = max(0.0, 2 * (full - time["half"]) / b) if "half" in time else (full - a) / b
    fixed = full - a - per_row * b
    if fixed < 0:  # noise (or rows that cost more than linearly): keep single's step exact
        fixed, per_row = 0.0, max(0.0, (full - a) / b)
    compute = per_row * b
    scales, singles, overheads = {"fp32": 1.0}, {"fp32": full}, {}
    for role, t in time.items():
        kind, _, name = role.partition(":")
        if kind == "precision" and compute > 0:  # a precision changes the arithmetic, not the dispatch
            scales[name], singles[name] = max(0.05, (t - fixed - a) / compute), t
        elif kind == "pipeline":  # per stage-chunk: the step less H, K passes' fixed cost and the compute
            m, stages = results[role].config["microbatches"], 2 if name == "interleaved" else 1
            overheads[role] = max(0.0, (t - fixed - m * a - compute) / (m * stages))
        elif kind in ("ddp", "fsdp", "tensor"):  # no layout runs faster than single on one worker
            overheads[role] = max(0.0, t - full)
    contention = 1.0
    if "contention" in time and a + compute > 0:
        contention = max(0.5, (time["contention"] - fixed) / (a + compute / measured.engine_count))
    info = measured.engine
    return Calibration(
        device="cpu" if info["device"] == "cpu" else "gpu", model=model_text(base), device_name=info["device_name"],
        engine_count=measured.engine_count, threads_per_rank=info.get("threads"), batch_size=b, statistic=statistic,
        pass_fixed_s=a, per_row_s=per_row, step_fixed_s=fixed, precision_scale=scales, single_step_s=singles,
        peak_tflops=_peaks(info["device_name"]), contention=contention, overheads_s=overheads,
        collectives=measured.fits, comm_world=measured.engine_count,
        memory_baseline_bytes=_baseline(results["single"], base, shape), memory_bytes=measured.memory_bytes,
        failed=failed, runs={role: r.run_id for role, r in results.items() if not isinstance(r, str)},
        bench_id=measured.bench_id,
    )


def model_text(base: dict[str, Any]) -> str:
    """'gpt depth=4 width=64', or a model of your own by its name."""
    model = base["model"] if isinstance(base["model"], str) else getattr(base["model"], "__name__", "model")
    options = " ".join(f"{k}={v}" for k, v in sorted(dict(base.get("model_options") or {}).items()))
    return f"{model} {options}".strip()


def measured_again(cal: Calibration, runs_dir) -> Measured:
    """A calibration's runs read back from the run store, to ``derive`` them again (with the
    other statistic, or changed rules) without running anything."""
    from parakit.records.store import read_runs

    stored = {r.run_id: r for r in read_runs(runs_dir)}
    results = {role: stored[run_id] for role, run_id in cal.runs.items()}
    results.update({role: why for role, why in cal.failed.items() if role not in results})
    return Measured(results, dict(cal.collectives), cal.bench_id,
                    {"device": cal.device, "device_name": cal.device_name, "threads": cal.threads_per_rank},
                    cal.engine_count, cal.memory_bytes)


def _why(result) -> str | None:
    """Why a calibration run gave no figure, or None."""
    if isinstance(result, str):
        return result
    if not result.ok:
        return f"{result.status}: {(result.error or '').strip().splitlines()[-1:]}"
    return None


def _micro_steps(result) -> int:
    sync = result.config.get("sync", "") if result is not None and not isinstance(result, str) else ""
    return int(sync.partition(":")[2] or 1)


def _bench(session, engine_count: int) -> tuple[dict[str, dict[str, float]], str]:
    device = "cpu" if session.engines[0].device == "cpu" else "gpu"
    bench = session.bench_comm(engine_count, sizes=BENCH_SIZES[device], collectives=BENCH_COLLECTIVES,
                               repeats=10, warmup=2)
    fits = {name: {"alpha_s": fit["alpha_s"], "beta_bytes_per_s": fit["beta_bytes_per_s"]}
            for name, fit in bench.fits.items() if fit.get("alpha_s") is not None}
    return fits, bench.bench_id


def _peaks(device_name: str) -> dict[str, float]:
    found = {q: peak_flops(device_name, q)[0] for q in PRECISION_ORDER}
    return {q: v / 1e12 for q, v in found.items() if v}


def _baseline(single, base: dict[str, Any], shape: ModelShape) -> float:
    """The process's own memory: single's measured peak less what the model accounts for."""
    peak = single.summary.get("peak_mem_bytes") if not isinstance(single, str) and single.ok else None
    if peak is None:
        return 0.0
    model = memory_per_rank(RunConfig(**{**base, "strategy": "single", "workers": 1}), shape, 0.0)
    return max(0.0, peak - sum(model.values()))


def _memory_per_rank(session, device: str) -> float | None:
    """Memory a rank may use: the GPU's, or the host's available memory shared by the engines."""
    if device == "gpu":
        out = session.execute("import torch; print(torch.cuda.mem_get_info()[1])", workers=1)
        return float(out[0]["stdout"].strip()) if out and not out[0]["error"] else None
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return fields["MemAvailable"] / session.workers
    except (OSError, KeyError, ValueError, IndexError):
        return None


def engines_hardware(cal: Calibration, cores: int | None) -> Hardware:
    """The current engines as a Hardware: their measured links (bus bandwidth from each fit's
    beta at the benchmark's world size), memory and peaks; compute as calibrated."""
    links = {name: Link(alpha_s=f["alpha_s"], bandwidth_bytes_per_s=f["beta_bytes_per_s"] * bus_factor(name, cal.comm_world))
             for name, f in cal.collectives.items()}
    if "reduce_scatter" not in links and "all_reduce" in links:
        # gloo runs a reduce-scatter as a whole all-reduce (engine/commbench.py CANNOT_MEASURE):
        # half the bus bandwidth gives it the all-reduce's time for the same buffer.
        ar = links["all_reduce"]
        links["reduce_scatter"] = Link(alpha_s=ar.alpha_s, bandwidth_bytes_per_s=ar.bandwidth_bytes_per_s / 2)
    memory = cal.memory_bytes if cal.memory_bytes and cal.memory_bytes > 0 else math.inf
    return Hardware(name="current engines", device=cal.device, peak_tflops=cal.peak_tflops,
                    memory_bytes=memory, link=links.get("all_reduce"), collectives=links,
                    measured_world=cal.comm_world, ranks_per_node=1024, threads_per_rank=cal.threads_per_rank,
                    cores=cores, calibrated=True, device_name=cal.device_name)
