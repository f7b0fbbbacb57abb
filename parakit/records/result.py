"""What a run produced: step records, the per-rank results they come from, and RunResult.

Records are plain data read by attribute, with dicts only at the JSON boundary (``to_dict`` /
``from_dict``). A figure that could not be measured is None, and its reason is kept beside it in
``unmeasured``; it is never a made-up 0.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from parakit.config.layouts import mesh_sizes
from parakit.config.prices import usd_text
from parakit.records.power import PowerMeasurement
from parakit.records.rank_timeline import RankTimeline
from parakit.records.record_view import RecordView
from parakit.records.recovery import Recovery
from parakit.records.summary_fields import Summary

OK, FAILED, STOPPED = "ok", "failed", "stopped"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class StepRecord:
    """One optimizer step, seen across all ranks."""

    step: int
    loss: float | None
    """Mean of the ranks' losses: equal slices of the global batch, so the global-batch loss."""
    step_time_s: float
    """The slowest rank's time: a synchronous step is only done when every rank is."""
    rank_step_time_s: list[float]
    warmup: bool
    rank_comm_bytes: list[int] | None = None
    """Bytes each rank handed to gradient-synchronisation collectives in this step (counted in
    DDP's communication hooks); None where they are not counted."""
    rank_uncompressed_bytes: list[int] | None = None
    """Bytes of the gradient buckets: what plain fp32 all-reduce would have sent."""
    rank_compute_time_s: list[float] | None = None
    """Per rank, from the profiler (recorded steps only, else None): time computing."""
    rank_comm_time_s: list[float] | None = None
    """Per rank: time a collective ran (hidden behind compute or not)."""
    rank_exposed_comm_time_s: list[float] | None = None
    """Per rank: communication time in which no compute ran."""
    rank_idle_time_s: list[float] | None = None
    """Per rank: time in which neither ran (waiting for a peer, a bubble, Python overhead)."""
    time_s: float | None = None
    """When the step ended, in seconds since the run's first step began (the slowest rank's):
    the wall clock its loss is drawn against (``plots.loss_time``). None in older records."""
    expert_tokens: list[int] | None = None
    """A mixture of experts: the tokens routed to each expert in this step, every rank's, summed
    over the blocks (each of a token's top_k choices counted); None for a dense model."""
    expert_imbalance: float | None = None
    """The most tokens an expert took over the mean per expert (1 = even; records/experts.py)."""
    rank_all_to_all_bytes: list[int] | None = None
    """Per rank, the bytes it sent to other ranks in all-to-alls (strategy expert)."""


@dataclass
class RankInfo:
    """Where one rank ran."""

    rank: int
    engine_id: int
    pid: int
    host: str
    device: str
    """torch device of the rank, e.g. 'cpu' or 'cuda:0' (after pinning every engine sees cuda:0)."""
    device_name: str
    gpu_index: int | None = None
    """The physical GPU index the engine was pinned to (None on CPU)."""
    threads: int | None = None
    peak_mem_bytes: int | None = None
    peak_mem_kind: str | None = None
    """'cuda_max_allocated' on GPU; 'process_peak_rss' on CPU."""
    params_digest: str | None = None
    param_bytes: int | None = None
    """Bytes of parameters this rank holds (its shard, under fsdp and tensor parallelism)."""
    optimizer_bytes: int | None = None
    """Bytes of optimizer state this rank holds (AdamW: two moments per local parameter)."""
    gradient_bytes: int | None = None
    """Bytes of gradients this rank held after the last step (its shard under fsdp)."""
    activation_bytes: int | None = None
    """The most bytes saved for backward this rank held at once in one counted step."""
    allocated_peak_bytes: int | None = None
    """GPU: the caching allocator's peak of bytes in tensors; None on CPU."""
    reserved_peak_bytes: int | None = None
    """GPU: the caching allocator's peak of bytes reserved from the device; None on CPU."""
    fragmentation: float | None = None
    """GPU: 1 - allocated / reserved at the peak; None on CPU."""
    bubble: float | None = None
    """Pipeline: share of this rank's step spent waiting, median over measured steps."""
    bubble_ideal: float | None = None
    """Pipeline: the schedule's ideal bubble, (p-1)/(v*m+p-1)."""
    stages: list[int] | None = None
    """Pipeline: the stage indices this rank held."""
    mesh_place: dict[str, int] | None = None
    """Where this rank sat on the run's device mesh, outer dimension first, e.g. {"data": 1,
    "tensor": 0}: ranks that share every other coordinate form that dimension's group."""

    def to_dict(self) -> dict[str, Any]:
        """Its JSON: every field, and ``mesh_place`` only where there was a mesh, so a record
        written before parakit reported it writes back as it was stored."""
        d = asdict(self)
        if d["mesh_place"] is None:
            del d["mesh_place"]
        return d
    power: PowerMeasurement | None = None
    """This rank's power meter over the training loop (records/power.py: energy_j, avg_power_w,
    samples [t_s, watts, util %, memory bytes], scope, reason, ...)."""
    power_device: str | None = None
    """What the meter read: the GPU's UUID, or 'cpu@host' for a host's RAPL package counters."""


def renamed(data: dict[str, Any], record: type) -> dict[str, Any]:
    """A copy of a stored record's JSON with the names an older parakit used (the record's
    ``RENAMED``) read under the field's name now."""
    if not isinstance(data, dict):
        return data  # not a record at all: the store's check says what it is
    out = dict(data)
    for old, new in getattr(record, "RENAMED", {}).items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def ranks_from_dicts(rows: list[dict[str, Any]]) -> list[RankInfo]:
    """A record's ranks from their JSON: the run's own, and each segment's."""
    return [RankInfo(**{**r, "power": PowerMeasurement.from_dict(r["power"])})
            if isinstance(r.get("power"), dict) else RankInfo(**r) for r in rows]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class SegmentRecord(RecordView):
    """One stretch of a switched run's steps with the same settings (records/segments.py). Read
    by attribute; also a read-only Mapping of its fields (``g["first_step"]``,
    ``g["settings"]["strategy"]``), as the dict it used to be."""

    READERS = {"summary": Summary.from_dict, "ranks": ranks_from_dicts, "recovered": Recovery.from_dict}
    ONLY_WHERE_IT_APPLIES = frozenset({"recovered"})

    index: int
    """Its place in the run, from 0."""
    first_step: int
    """The run's step it starts at."""
    last_step: int | None
    """The run's step it ends at; None for a run with no step (``segment_rows``)."""
    status: str
    """'ok', 'failed' or 'stopped': how this segment's launch ended."""
    settings: dict[str, Any]
    """Its RunConfig, described (the run's ``config`` for the first segment)."""
    changed: dict[str, Any] = field(default_factory=dict)
    """The settings that differ from the previous segment's; empty for the first."""
    label: str
    """What changed in a few words ('fsdp', 'workers 1'); 'start' for the first."""
    world_size: int
    """Its workers."""
    switch_s: float | None = None
    """The pause in training before it (the previous segment's last step to its first, slowest
    rank's each); None for the first."""
    state_save_s: float | None = None
    """Of that pause: saving the state at the previous segment's end, slowest rank."""
    state_load_s: float | None = None
    """Of that pause: loading the state and laying the model out again, slowest rank."""
    summary: Summary = field(default_factory=Summary)
    """Its figures over its own measured steps (no ``method``: the run's says it)."""
    unmeasured: dict[str, str] = field(default_factory=dict)
    """Figure name -> why it is None, for this segment."""
    ranks: list[RankInfo] = field(default_factory=list)
    """Where its ranks ran."""
    recovered: Recovery | None = None
    """The engine death it began by recovering from (records/recovery.py); None otherwise."""


@dataclass
class RunResult:
    """Everything a run produced; saved as one JSON file in the run store."""

    RENAMED = {"device": "device_names"}  # stored name before 0.2 -> the field's name now

    run_id: str
    status: str
    config: dict[str, Any]
    world_size: int
    backend: str | None
    device_names: list[str]
    """Each rank's device by its product name ("NVIDIA H100 80GB HBM3", a CPU model), as
    RankInfo.device_name; stored as "device" by parakit before 0.2, which still reads."""
    steps: list[StepRecord] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    """The figures over the measured steps, frozen (records/summary_fields.py); also a read-only
    Mapping, so ``r.summary["samples_per_s"]`` reads as it did. Empty for a run with no step."""
    ranks: list[RankInfo] = field(default_factory=list)
    error: str | None = None
    started_at: str = ""
    ended_at: str = ""
    unmeasured: dict[str, str] = field(default_factory=dict)
    """Figure name -> why it is None."""
    warnings: list[str] = field(default_factory=list)
    network: dict[str, Any] = field(default_factory=dict)
    """Where it ran: the launcher, the hosts, the interface and the (simulated) link."""
    traces: list[str] = field(default_factory=list)
    """With ``trace=True``: paths of the Chrome-trace JSON files of each rank's recorded steps."""
    memory_snapshots: list[str] = field(default_factory=list)
    """With ``memory_snapshot=True`` on GPUs: paths of each rank's torch.cuda.memory snapshot
    (a pickle that pytorch.org/memory_viz opens)."""
    cost_usd: float | None = None
    """What holding the run's devices cost: its whole wall clock x its devices x a price per
    device-hour (records/run_cost.py); None in older records, or with the reason in unmeasured."""
    energy_cost_usd: float | None = None
    """The measured energy x a price per kWh; None where energy was not measured."""
    co2_g: float | None = None
    """The measured energy x the grid's grams of CO2 per kWh; None where energy was not measured."""
    cost_method: dict[str, str] = field(default_factory=dict)
    """How each of cost_usd, energy_cost_usd and co2_g was obtained: the prices and their sources."""
    segments: list[SegmentRecord] = field(default_factory=list)
    """A switched run's stretches of steps with the same settings (records/segments.py): each
    with its settings, what changed, first_step and last_step, its own summary and ranks, and
    switch_s, the time the switch into it took. Empty for a run that never switched."""
    resumed_from: str | None = None
    """The run whose saved state this run started from (``resume=``), or None."""
    state_dir: str | None = None
    """Where this run's final state is saved with DCP (``save_state=True``), or None."""
    timelines: list[RankTimeline] = field(default_factory=list)
    """Per rank that recorded one, in rank order: when, in the profiler's last window, it
    computed, communicated and waited (records/rank_timeline.py, ``plots.timeline``); empty for a
    run with no recorded step, and in older records."""

    def __post_init__(self) -> None:
        # A dict here would save and read back, but fail every reader by attribute later.
        if not isinstance(self.summary, Summary):
            raise TypeError(f"RunResult.summary is a Summary, not {type(self.summary).__name__} "
                            "(Summary.from_dict reads one from a dict)")
        if not all(isinstance(g, SegmentRecord) for g in self.segments):
            raise TypeError("RunResult.segments holds SegmentRecords (SegmentRecord.from_dict reads one from a dict)")

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def recovered(self) -> list[Recovery]:
        """One entry per engine death the run went on after, in order (kept on its segments)."""
        return [g.recovered for g in self.segments if g.recovered is not None]

    def to_dict(self) -> dict[str, Any]:
        """The run as plain JSON data; the summary and segments under their stored names."""
        d = asdict(self)
        d["ranks"] = [r.to_dict() for r in self.ranks]
        d["summary"] = self.summary.to_dict()
        d["segments"] = [g.to_dict() for g in self.segments]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        d = renamed(d, cls)
        d["steps"] = [StepRecord(**s) for s in d.get("steps", [])]
        d["ranks"] = ranks_from_dicts(d.get("ranks", []))
        d["summary"] = Summary.from_dict(d.get("summary", {}))
        d["segments"] = [SegmentRecord.from_dict(g) for g in d.get("segments", [])]
        d["timelines"] = [RankTimeline.from_dict(line) for line in d.get("timelines", [])]
        return cls(**d)

    def __repr__(self) -> str:
        s = self.summary
        c = self.config
        head = f"RunResult({self.run_id}, {self.status}, {c.get('strategy')} x{self.world_size}"
        if self.status != OK:
            return f"{head}, error={self.error!r})"
        return (
            f"{head}, {c.get('model')}, {s.get('samples_per_s', 0):.1f} samples/s, "
            f"loss {s.get('loss_first', float('nan')):.4f} -> {s.get('loss_last', float('nan')):.4f})"
        )


def run_label(settings: dict[str, Any], workers: int | None = None) -> str:
    """A run in a few words, the one label every front end, figure and the advisor use: 'ddp x2
    mlp', plus the levers that are not the plain ones: 'ddp x2 gpt bf16 topk:0.01 diloco:8 no EF
    compiled zero-1 ac:full', 'pipeline x2 gpt 1f1b m8', 'hybrid x8 gpt ddp+tensor 2x4', and a
    16-bit compression as 'bf16 grads' (not to be read as the precision). Settings without a
    model (the advisor's candidates, which share one) name none."""
    workers = workers if workers is not None else settings.get("workers")
    size = f" x{workers}" if workers is not None else ""  # not chosen yet: the engines decide
    model = settings.get("model")
    model = getattr(model, "__name__", model)  # your own model by its name, as describe() has it
    strategy, hybrid, mesh = settings.get("strategy"), settings.get("hybrid"), settings.get("mesh")
    parts = [f"{strategy}{size}" + (f" {model}" if model is not None else "")]
    mesh = "x".join(map(str, mesh)) if isinstance(mesh, (list, tuple)) else mesh
    if strategy == "hybrid":  # the default is fsdp+tensor on a workers/2 x 2 mesh
        parts += [v for v in (hybrid, mesh) if v not in (None, "fsdp+tensor", workers and f"{workers // 2}x2")]
    if strategy == "pipeline" or (strategy == "hybrid" and hybrid == "pipeline+ddp"):
        ranks = workers if strategy == "pipeline" else (mesh_sizes(mesh) or (None,))[0] if mesh else None
        if settings.get("schedule") not in (None, "gpipe"):
            parts.append(settings["schedule"])
        if settings.get("microbatches") not in (None, ranks and 2 * ranks):  # the default: 2 per stage rank
            parts.append(f"m{settings['microbatches']}")
    compression = settings.get("compression")
    parts += [v for v in (settings.get("precision"), f"{compression} grads" if compression in ("fp16", "bf16")
                          else compression, settings.get("sync")) if v not in (None, "fp32", "none", "every-step")]
    if settings.get("compression") not in (None, "none") and settings.get("error_feedback") is False:
        parts.append("no EF")
    if settings.get("compile"):
        parts.append("compiled")
    if settings.get("zero") is not None:
        parts.append(f"zero-{settings['zero']}")
    if settings.get("activation_checkpointing") not in (None, "none"):
        parts.append(f"ac:{settings['activation_checkpointing']}")
    if settings.get("straggler"):
        parts.append(f"straggler {settings['straggler']}")
    return " ".join(parts)


def headline(result: RunResult) -> str:
    """A run in one line, as every front end prints it: throughput (median step and wall
    clock), step time, loss and cost, a divergence where there was one; or the status and the
    first line of the error."""
    s = result.summary
    label = run_label(result.config, result.world_size)
    for segment in result.segments[1:]:  # a switched run: where it went, in order
        label += f" -> {segment.label}"
    if not result.ok or not s:
        first = result.error.splitlines()[0] if result.error else ""
        return f"{label} {result.status}: {first}"
    text = f"{label}: {s['samples_per_s']:.1f} samples/s"
    if s.get("samples_per_s_low") is not None:  # the 95 % interval (records/intervals.py)
        text += f" (95 %: {s['samples_per_s_low']:.1f}-{s['samples_per_s_high']:.1f})"
    if s.get("wall_samples_per_s") is not None:
        text += f" ({s['wall_samples_per_s']:.1f} by the wall clock)"
    text += f", step {s['step_time_s'] * 1e3:.1f} ms"
    if s.get("loss_first") is not None:
        text += f", loss {s['loss_first']:.4f} -> {s['loss_last']:.4f}"
    if result.cost_usd is not None:
        text += f", cost {usd_text(result.cost_usd)}"
    if s.get("diverged_at_step") is not None:
        text += f"; DIVERGED at step {s['diverged_at_step']} (NaN or infinite loss)"
    if s.get("stragglers"):  # records/stragglers.py: compute slower than the others' beyond the noise
        text += f"; straggler: rank {', '.join(map(str, s['stragglers']))}"
    return text
