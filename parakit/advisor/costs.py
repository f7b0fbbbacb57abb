"""The cost model: one configuration's step time, samples/s, memory per rank and bytes handed to
collectives, from the model's shape, a calibration and a hardware description. Standard library
only; docs/advisor.md states every formula and where each input comes from.

Compute of a forward + backward over r rows of some parts of the model, on one rank::

    (pass_fixed_s * their share of layers + per_row_s * r * their share of FLOPs) * contention

Per layout: data parallel ranks take B/n rows; tensor parallelism divides its layers' FLOPs by
t and all-reduces activations; a pipeline step is (m + (p-1)/v) micro-batch times of its slowest
rank (the bubble formula); FSDP gathers each block's weights and reduce-scatters its gradients.
On GPUs DDP's bucket all-reduces overlap the rest of backward and FSDP prefetches the next
block; on CPU engines communication runs on the ranks' own cores and adds to the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from parakit.advisor.comm import (
    buckets,
    collective_time,
    gradient_wire,
    overlapped_exposure,
)
from parakit.advisor.hardware import PRESET_MFU, Hardware, Unpredictable
from parakit.advisor.inputs import Calibration
from parakit.config.shape import ModelShape
from parakit.config.memory_model import HALF, memory_per_rank, state_bytes, tensor_params
from parakit.config.run import Hybrid, RunConfig, Strategy
from parakit.config.layouts import STAGES_PER_RANK
from parakit.config.levers import CompressionKind, Precision
from parakit.config.formulas import ring_bytes_per_step

BACKWARD_SHARE = 2 / 3  # backward computes two matmuls per forward one
# On a preset calibrated elsewhere: one layer's forward + backward kernel launches from Python,
# and the loop's own per-step work (reading a batch, bookkeeping).
GPU_LAYER_PASS_S = 40e-6
PRESET_LOOP_S = 1e-3
ADAMW_BYTES_PER_VALUE = 7  # reads parameter, gradient, two moments; writes parameter, two moments


@dataclass(frozen=True)
class Rates:
    """Compute costs on the target hardware at one precision."""

    pass_fixed_s: float
    per_row_s: float
    step_fixed_s: float
    optimizer_s_per_param: float
    contention: float


def rates(cal: Calibration, shape: ModelShape, hw: Hardware, precision: Precision, ranks: int) -> Rates:
    """Compute rates for ``ranks`` ranks at ``precision``: as measured on the engines, or scaled
    to a preset by the ratio of peaks (by FLOPs at PRESET_MFU of its peak where the
    engines have no peak, as CPUs)."""
    q = precision.value
    source = compute_source(cal, hw)
    if source == "engines":
        scale = _measured_scale(cal, q)
        return Rates(cal.pass_fixed_s, cal.per_row_s * scale * _thread_share(cal, hw, ranks),
                     cal.step_fixed_s, 0.0, _contention(cal, ranks))
    peak = hw.peak_flops(q)
    if peak is None:
        raise Unpredictable(f"{hw.name} has no peak FLOP/s for {q}")
    layers = sum(p.layers for p in shape.parts)
    optimizer = ADAMW_BYTES_PER_VALUE * state_bytes(precision) / hw.memory_bandwidth_bytes_per_s
    if source == "peaks":
        measured = q in cal.precision_scale
        base = cal.peak_tflops[q if measured else "fp32"] * 1e12
        scale = cal.precision_scale[q] if measured else 1.0
        return Rates(cal.pass_fixed_s, cal.per_row_s * scale * base / peak, PRESET_LOOP_S, optimizer, 1.0)
    per_row = shape.flops_per_sample / (peak * PRESET_MFU)
    fixed = layers * GPU_LAYER_PASS_S if hw.device == "gpu" else cal.pass_fixed_s
    return Rates(fixed, per_row, PRESET_LOOP_S, optimizer, 1.0)


def compute_source(cal: Calibration, hw: Hardware) -> str:
    """Where ``rates`` takes compute from (advisor/method.py names what each assumes):
    "engines" (their calibration, as measured), "peaks" (a GPU's calibration scaled to another
    GPU by the ratio of dense peaks) or "flops" (the model's FLOPs at PRESET_MFU of the
    preset's peak: CPU engines have no peak to scale by)."""
    if hw.calibrated:
        return "engines"
    if cal.device == "gpu" and cal.peak_tflops.get("fp32"):
        return "peaks"
    return "flops"


def _measured_scale(cal: Calibration, q: str) -> float:
    if q in cal.precision_scale or q == "fp32":
        return cal.scale(q)
    if f"precision:{q}" in cal.failed:
        raise Unpredictable(f"its calibration run failed: {cal.failed[f'precision:{q}']}")
    if cal.peak_tflops.get(q) and cal.peak_tflops.get("fp32"):
        return cal.peak_tflops["fp32"] / cal.peak_tflops[q]
    raise Unpredictable(f"precision {q} was not measured on these engines (calibrate with it)")


def _contention(cal: Calibration, ranks: int) -> float:
    """Slowdown of compute when ``ranks`` engines compute at once; measured with all of them,
    taken as geometric in between."""
    if ranks <= 1 or cal.engine_count <= 1:
        return 1.0
    return cal.contention ** min(1.0, (ranks - 1) / (cal.engine_count - 1))


def _thread_share(cal: Calibration, hw: Hardware, ranks: int) -> float:
    """CPU: more ranks than engines get fewer threads each (cores // ranks), and share cores
    beyond one rank per core; compute time is taken as inversely proportional to the threads."""
    if hw.device != "cpu" or ranks <= cal.engine_count or not cal.threads_per_rank or not hw.cores:
        return 1.0
    return cal.threads_per_rank / rank_threads(cal, hw, ranks) * max(1.0, ranks / hw.cores)


def rank_threads(cal: Calibration, hw: Hardware, ranks: int) -> int | None:
    """CPU: the threads each of ``ranks`` ranks computes with. On the engines, as calibrated up
    to the engines there were, then their share of the cores (as cluster/engines.py shares
    them out); on a preset, its threads per rank. None where unknown."""
    if not hw.calibrated:
        return hw.threads_per_rank
    if ranks > cal.engine_count and cal.threads_per_rank and hw.cores:
        return max(1, hw.cores // ranks)
    return cal.threads_per_rank


@dataclass(frozen=True)
class Time:
    """A step's time on the slowest rank, split as the profiler splits it."""

    compute_s: float
    comm_s: float = 0.0
    exposed_s: float = 0.0
    idle_s: float = 0.0
    bubble: float | None = None
    sent_bytes: float = 0.0

    @property
    def step_s(self) -> float:
        return self.compute_s + self.exposed_s + self.idle_s


@dataclass
class _Costing:
    """One configuration being costed."""

    config: RunConfig
    shape: ModelShape
    hw: Hardware
    cal: Calibration
    rates: Rates

    @property
    def gpu(self) -> bool:
        return self.hw.device == "gpu"

    def passes(self, parts, rows: float, degree: int = 1) -> float:
        """Forward + backward of ``parts`` over ``rows`` rows, tensor layers split ``degree`` ways."""
        layers = sum(p.layers for p in self.shape.parts) or 1
        flops = self.shape.flops_per_sample or 1.0
        share_layers = sum(p.layers for p in parts) / layers
        share_flops = sum(p.flops_per_sample - p.tensor_flops_per_sample * (1 - 1 / degree) for p in parts) / flops
        r = self.rates
        return (r.pass_fixed_s * share_layers + r.per_row_s * rows * share_flops) * r.contention

    def step_fixed(self, params_held: float) -> float:
        return self.rates.step_fixed_s + self.rates.optimizer_s_per_param * params_held

    def overhead(self, key: str) -> float:
        """What ``key`` (a layout or lever) adds per step on one worker, as the engines measured
        it; 0 on a preset (kernels there are large beside the bookkeeping)."""
        if not self.hw.calibrated:
            return 0.0
        if key in self.cal.failed:
            raise Unpredictable(f"its one-worker calibration run failed: {self.cal.failed[key]}")
        return self.cal.overheads_s.get(key, 0.0)

    def activation_bytes(self) -> int:
        return 2 if self.config.precision in HALF else 4


def _single(run: _Costing) -> Time:
    c = run.config
    return Time(run.step_fixed(run.shape.params) + run.passes(run.shape.parts, c.batch_size))


def _ddp(run: _Costing) -> Time:
    c, shape = run.config, run.shape
    n = c.workers
    compute = run.passes(shape.parts, c.batch_size / n)
    grad_bytes = shape.params * state_bytes(c.precision)
    sizes = buckets(grad_bytes, (c.bucket_mb or 25) * 2**20)
    wire = gradient_wire(c.compression, grad_bytes, shape.params, shape.matrices, n, len(sizes))
    total = wire.time(run.hw, n)
    comm = exposed = total
    if run.gpu:  # buckets are all-reduced on their own stream while backward goes on
        comm, exposed = overlapped_exposure(BACKWARD_SHARE * compute, sizes, lambda s: total * s / grad_bytes)
    extra = run.overhead(f"ddp:{c.compression}")
    return Time(run.step_fixed(shape.params) + compute + extra, comm, exposed, sent_bytes=wire.sent_bytes)


def _fsdp(run: _Costing, data: int, degree: int = 1) -> Time:
    """FSDP over ``data`` ranks, of a model whose tensor layers are split ``degree`` ways."""
    c, shape = run.config, run.shape
    gather = 2 if c.precision in HALF else 4  # parameters are gathered in the compute dtype
    reduce = 2 if c.compression.kind in (CompressionKind.FP16, CompressionKind.BF16) else state_bytes(c.precision)
    blocks = [p for p in shape.parts if p.is_block]
    root = tensor_params([p for p in shape.parts if not p.is_block], degree)
    units = [tensor_params([b], degree) for b in blocks]
    span = c.workers
    t_gather = collective_time(run.hw, "all_gather", root * gather, data, span=span)
    t_gather += collective_time(run.hw, "all_gather", 2 * sum(units) * gather, data, 2 * len(units), span)
    t_reduce = collective_time(run.hw, "reduce_scatter", (root + sum(units)) * reduce, data, len(units) + 1, span)
    comm = t_gather + t_reduce
    compute = run.passes(shape.parts, c.batch_size / data, degree) + run.overhead("fsdp")
    exposed = comm
    if run.gpu:  # each block's gather is prefetched behind the one before it
        exposed = max(comm / (2 * len(units) + 2), comm - compute)
    held = tensor_params(shape.parts, degree) / data
    sent = (root + 2 * sum(units)) * gather / data + (root + sum(units)) * reduce
    return Time(run.step_fixed(held) + compute, comm, exposed, sent_bytes=sent)


def _tensor_comm(run: _Costing, rows: float, degree: int) -> tuple[float, float]:
    """(seconds, bytes) of tensor parallelism's activation all-reduces, forward and backward."""
    parts = run.shape.parts
    nbytes = sum(p.tensor_allreduce_bytes_per_sample for p in parts) * rows * run.activation_bytes() / 4
    calls = sum(p.tensor_allreduces for p in parts)
    return collective_time(run.hw, "all_reduce", nbytes, degree, calls), nbytes


def _tensor(run: _Costing, data: int = 1) -> Time:
    c, shape = run.config, run.shape
    t = c.tensor_degree
    rows = c.batch_size / data
    comm, sent = _tensor_comm(run, rows, t)
    compute = run.passes(shape.parts, rows, t) + run.overhead("tensor")
    return Time(run.step_fixed(tensor_params(shape.parts, t)) + compute, comm, comm, sent_bytes=sent)


def _pipeline(run: _Costing, data: int = 1) -> Time:
    c, shape = run.config, run.shape
    p, v, m = c.pipeline_ranks, STAGES_PER_RANK[c.schedule], c.n_microbatches
    try:
        stages = shape.stages(p * v)
    except KeyError:
        raise Unpredictable(f"no cut of the model into {p * v} stages") from None
    rows = c.batch_size / data / m
    chunk = run.overhead(f"pipeline:{c.schedule}")
    ranks = [sum(run.passes(s, rows) + chunk for s in stages[r::p]) for r in range(p)]
    slowest = max(range(p), key=lambda r: ranks[r])
    boundary = max(s[-1].output_bytes_per_sample for s in stages[:-1]) * rows * run.activation_bytes() / 4
    p2p = collective_time(run.hw, "send_recv", boundary, 2)
    per_microbatch = ranks[slowest] + 2 * v * p2p  # its stages receive activations, then gradients
    step = (m + (p - 1) / v) * per_microbatch  # (1 - bubble) of the step is m micro-batches
    held = sum(part.params for s in stages[slowest::p] for part in s)
    compute, comm = m * ranks[slowest], m * 2 * v * p2p
    sync, sent = 0.0, m * 2 * v * boundary
    if data > 1:  # pipeline+ddp: the stage's gradients averaged over its replicas after the schedule
        sync = collective_time(run.hw, "all_reduce", held * 4, data, span=c.workers)
        sent += held * 4
    return Time(run.step_fixed(held) + compute, comm + sync, comm + sync, step - compute - comm,
                bubble=(p - 1) / (v * m + p - 1), sent_bytes=sent)


def _hybrid(run: _Costing) -> Time:
    c = run.config
    dims = c.dims
    if c.hybrid is Hybrid.PIPELINE_DDP:
        return _pipeline(run, data=dims.data)
    data, inner = dims.data, dims.tensor
    if c.hybrid is Hybrid.FSDP_TENSOR:
        sharded = _fsdp(run, data, degree=inner)
        tp_comm, tp_sent = _tensor_comm(run, c.batch_size / data, inner)
        return Time(sharded.compute_s + run.overhead("tensor"), sharded.comm_s + tp_comm,
                    sharded.exposed_s + tp_comm, sent_bytes=sharded.sent_bytes + tp_sent)
    tensor = _tensor(run, data)  # ddp+tensor: a flat all-reduce of the local gradients after backward
    held = tensor_params(run.shape.parts, inner)
    sync = collective_time(run.hw, "all_reduce", held * 4, data, span=c.workers)
    return Time(tensor.compute_s, tensor.comm_s + sync, tensor.exposed_s + sync,
                sent_bytes=tensor.sent_bytes + held * 4)


def _context(run: _Costing) -> Time:
    """Each rank computes its 1/n of every sequence (its two chunks balance the causal mask, so
    the work splits evenly); per step the keys and values go round the ring (one send_recv
    pass per block, 3n - 2 of them: ``ring_bytes_per_step``), then the gradients are all-reduced
    once after backward. All of it counted exposed: on a CPU each pass waits for its block."""
    c, shape = run.config, run.shape
    n, o = c.workers, c.options
    ring = ring_bytes_per_step(batch_size=c.batch_size, seq_len=o["seq_len"], width=o["width"], depth=o["depth"],
                               ranks=n)  # fp32 at every precision: the ring computes its blocks in fp32
    t_ring = collective_time(run.hw, "send_recv", ring, n, calls=o["depth"] * (3 * n - 2))
    sync = collective_time(run.hw, "all_reduce", shape.params * 4, n)
    compute = run.passes(shape.parts, c.batch_size / n)
    return Time(run.step_fixed(shape.params) + compute, t_ring + sync, t_ring + sync,
                sent_bytes=ring + shape.params * 4)


def _expert(run: _Costing) -> Time:
    """Each rank runs its 1/n of the batch through the replicated parts, and through its experts
    the tokens routed to them: an even share, as the shape (measured on meta, where routing has
    no values) splits them. Per block, a token's activations go to its experts' rank and back in
    forward (two all-to-alls) and their gradients likewise in backward: 4 calls per block, each
    moving the (n-1)/n of its rows x top_k that leave the rank (no all-to-all benchmark: a
    point-to-point send's latency and bandwidth per call). The replicated parameters' gradients
    are all-reduced once after backward. All exposed: each all-to-all waits for its tokens."""
    c, shape = run.config, run.shape
    n, o = c.workers, c.options
    experts = sum(p.expert_params for p in shape.parts)
    rest = shape.params - experts
    rows = c.batch_size / n * o["seq_len"] * o.get("top_k", 1)
    a2a_bytes = 4 * o["depth"] * rows * o["width"] * run.activation_bytes() * (n - 1) / n
    t_a2a = collective_time(run.hw, "send_recv", a2a_bytes, n, calls=4 * o["depth"])
    sync = collective_time(run.hw, "all_reduce", rest * 4, n)
    compute = run.passes(shape.parts, c.batch_size / n) + run.overhead("expert")
    return Time(run.step_fixed(rest + experts / n) + compute, t_a2a + sync, t_a2a + sync,
                sent_bytes=a2a_bytes + rest * 4)


LAYOUTS: dict[Strategy, Callable[[_Costing], Time]] = {
    Strategy.SINGLE: _single,
    Strategy.DDP: _ddp,
    Strategy.FSDP: lambda run: _fsdp(run, run.config.workers),
    Strategy.TENSOR: _tensor,
    Strategy.PIPELINE: _pipeline,
    Strategy.HYBRID: _hybrid,
    Strategy.CONTEXT: _context,
    Strategy.EXPERT: _expert,
}


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """What the cost model predicts for one configuration (None where it cannot say, with why)."""

    settings: dict
    step_time_s: float | None = None
    samples_per_s: float | None = None
    compute_time_s: float | None = None
    comm_time_s: float | None = None
    exposed_comm_time_s: float | None = None
    bubble: float | None = None
    collective_bytes_per_step: float | None = None
    """Bytes each rank hands to collectives per step (what parakit's counters count)."""
    memory_bytes: float | None = None
    """Peak memory of the fullest rank."""
    memory: dict | None = None
    """memory_bytes by kind: params, gradients, optimizer, activations, buffers, runtime."""
    fits: bool = True
    reason: str | None = None
    """Why it does not fit in memory, or why there is no estimate."""
    cost_per_1k_samples_usd: float | None = None
    """What the devices it holds cost while it trains 1000 samples (advisor/pricing.py); None
    where a device has no price (the advice's ``cost_method`` says why)."""


def estimate(config: RunConfig, shape: ModelShape, cal: Calibration, hw: Hardware, settings: dict) -> Estimate:
    """The cost model's figures for ``config`` on ``hw``.

    Args:
        config: the checked run settings.
        shape: the model's shape (``engine.shape.model_shape``).
        cal: what the engines measured.
        hw: the hardware predicted for.
        settings: the run settings as the user would pass them, kept in the estimate.
    """
    try:
        run = _Costing(config, shape, hw, cal, rates(cal, shape, hw, config.precision, config.workers))
        time = LAYOUTS[config.strategy](run)
    except Unpredictable as e:
        return Estimate(settings=settings, fits=False, reason=str(e))
    runtime = cal.memory_baseline_bytes if hw.calibrated else 0.0
    memory = memory_per_rank(config, shape, runtime)
    total = sum(memory.values())
    reason = None
    if total > hw.memory_bytes:
        reason = (f"needs {total / 2**30:.2f} GiB per rank ({_kinds(memory)}); a rank has "
                  f"{hw.memory_bytes / 2**30:.2f} GiB")
    step = time.step_s
    return Estimate(
        settings=settings, step_time_s=step, samples_per_s=config.batch_size / step,
        compute_time_s=time.compute_s, comm_time_s=time.comm_s, exposed_comm_time_s=time.exposed_s,
        bubble=time.bubble, collective_bytes_per_step=time.sent_bytes if config.workers > 1 else 0.0,
        memory_bytes=total, memory=memory, fits=reason is None, reason=reason,
    )


def _kinds(memory: dict) -> str:
    big = sorted(memory.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / 2**30:.2f}" for k, v in big if v > 0)


def ratio_error(predicted: float, measured: float) -> float:
    """|predicted - measured| / measured."""
    return abs(predicted - measured) / measured if measured else math.inf
