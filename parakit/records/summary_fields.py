"""What a run's summary holds: ``Summary``, one typed field per figure, frozen, with units in the
names (records/summary.py computes it). A figure that could not be measured is None, and where
the run knows why, the reason is in ``RunResult.unmeasured`` under the same name.

It is also a read-only Mapping under the names the figures are stored by (records/record_view.py),
so ``r.summary["samples_per_s"]``, ``r.summary.get("mfu")``, ``"x" in r.summary`` and
``dict(r.summary)`` read as they did when it was a dict; a new summary is made with
``dataclasses.replace``, never by assigning into it. ``to_dict`` / ``from_dict`` are the JSON
boundary (records/store.py); a key an older or newer parakit wrote that this one does not know is
kept in ``extra``, a key missing reads as None.

Names that carry no unit, and why they stay: ``bubble``, ``bubble_ideal`` and ``fragmentation``
(shares, 0-1) are the names RankInfo, RankReport and the engine use for the same figure;
``within_run_sd`` (log scale) is the name records/intervals.py and the runs frame use;
``profiler_overhead``, ``compression_ratio``, ``breakdown_check`` and ``mfu`` are ratios. One
renamed: ``power_sampler_cpu_share`` is stored and read as ``power_sampler_overhead``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parakit.records.record_view import RecordView


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class InstrumentOverhead(RecordView):
    """What parakit's own instruments cost a run, measured on it (``summary.instrument_overhead``).
    None where a run could not tell, or is older than the figure."""

    # Only a run with checkpoint_every has checkpoints to cost: elsewhere no key, as before them.
    ONLY_WHERE_IT_APPLIES = frozenset({"checkpoints", "checkpoint_pause_s", "checkpoint_write_s", "checkpoint_share"})

    recorded_steps: int | None = None
    """How many measured steps the profiler recorded."""
    recorded_step_slowdown: float | None = None
    """The recorded steps' median time over the others', minus 1: the profiler's price inside the
    steps it records (0.1 = 10 % slower); None without a recorded step or 3 others."""
    after_recorded_slowdown: float | None = None
    """The same for the 3 steps after each profiler window against the steps neither recorded
    nor after one: work the profiler left behind; None with too few of either."""
    between_steps_s: float | None = None
    """Time the instruments took between steps (starting, stopping and reading the profiler;
    progress messages), largest rank, counted directly."""
    wall_share: float | None = None
    """``between_steps_s`` plus the recorded steps' time above the others' median, as a share
    of the measured steps' wall clock; None without that wall clock."""
    profiler_on_steps: list[int] | None = None
    """The steps the profiler was on, on any rank (counted, not timed)."""
    progress_messages: int | None = None
    """Progress messages sent, most on one rank."""
    gc_collections: list[int] | None = None
    """Garbage collections per generation during the measured steps, most on one rank; None
    where not counted."""
    activation_count_s: float | None = None
    """The saved-tensor hooks' time inside the one step they count activations in
    (engine/memory.py), largest rank; None where none counted."""
    checkpoints: int | None = None
    """Checkpoints started during the run (``checkpoint_every``); None without them."""
    checkpoint_pause_s: float | None = None
    """The loop's pause per checkpoint (the state copied to CPU memory), median, slowest rank."""
    checkpoint_write_s: float | None = None
    """Per checkpoint, the time until it was whole on disk, behind the training; median, slowest rank."""
    checkpoint_share: float | None = None
    """The pauses of the checkpoints among the measured steps over their wall clock."""
    method: str | None = None
    """How each of the above was obtained, in words."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What a record held that this parakit does not know, kept as read."""


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Summary(RecordView):
    """A run's figures over its measured (non-warm-up) steps. Empty (every figure None, false,
    no keys) for a run that measured no step."""

    STORED_AS = {"power_sampler_cpu_share": "power_sampler_overhead"}
    # Only a run under fp8 has layers to name, only a switched run switches, only a mixture of
    # experts routes, and a segment's summary leaves the words to its run's: elsewhere the dict
    # had no such key, nor has the view.
    ONLY_WHERE_IT_APPLIES = frozenset({"fp8_layers", "sharded_units", "checkpointed_units", "switches", "switch_s",
                                       "method", "expert_imbalance", "all_to_all_bytes_per_step", "context_path",
                                       "ring_bytes_per_step", "rank_step_time_s", "rank_compute_time_s",
                                       "rank_idle_time_s", "stragglers"})
    READERS = {"instrument_overhead": InstrumentOverhead.from_dict}

    # -- step time and throughput: at the median timed step (records/intervals.py) ----------
    step_time_s: float | None = None
    """The median step's time, a step being as long as its slowest rank (CUDA events on a GPU,
    the wall clock on a CPU), over ``timed_steps``."""
    step_time_min_s: float | None = None
    """The fastest timed step."""
    step_time_max_s: float | None = None
    """The slowest timed step."""
    step_time_s_low: float | None = None
    """Lower end of ``step_time_s``'s 95 % interval; None in a record older than intervals."""
    step_time_s_high: float | None = None
    """Upper end of ``step_time_s``'s 95 % interval."""
    samples_per_s: float | None = None
    """Throughput at the median step: global batch size / ``step_time_s``."""
    samples_per_s_low: float | None = None
    """Lower end of ``samples_per_s``'s 95 % interval (batch size / ``step_time_s_high``)."""
    samples_per_s_high: float | None = None
    """Upper end of ``samples_per_s``'s 95 % interval."""
    within_run_sd: float | None = None
    """The standard deviation of log(median step time) within the run (moving-block bootstrap):
    on the log scale, so 0.05 is about 5 %."""
    timed_steps: int | None = None
    """The steps the step-time figures are taken over: the measured steps the profiler did not
    record, where 3 or more are left, else every measured step."""
    measured_steps: int | None = None
    """The steps after the warm-up steps: what every per-step and per-sample figure covers."""
    wall_samples_per_s: float | None = None
    """Samples of the measured steps over their wall clock, everything between steps included,
    slowest rank; reason in ``unmeasured`` when None."""

    # -- the loss ------------------------------------------------------------------------
    loss_first: float | None = None
    """The first step's loss (mean over the ranks that compute one), warm-up included."""
    loss_last: float | None = None
    """The last step's loss."""
    diverged_at_step: int | None = None
    """The first step whose loss was NaN or infinite; None when none was."""
    params_in_sync: bool | None = None
    """The ranks' parameters were bit-identical at the end; None where ranks do not each hold a
    full replica (fsdp, tensor, pipeline)."""

    # -- memory: each part the largest rank's (records/memory.py) ------------------------
    peak_mem_bytes: int | None = None
    """Largest rank's peak: torch.cuda.max_memory_allocated on GPU, peak resident set on CPU."""
    param_bytes: int | None = None
    """Largest rank's bytes of parameters (its shard under fsdp and tensor parallelism)."""
    gradient_bytes: int | None = None
    """Largest rank's bytes of gradients after the last step."""
    optimizer_bytes: int | None = None
    """Largest rank's bytes of optimizer state."""
    activation_bytes: int | None = None
    """Largest rank's most bytes saved for backward at once, in the one step they are counted in."""
    allocated_peak_bytes: int | None = None
    """GPU: the caching allocator's peak of bytes in tensors, largest rank; None on CPU."""
    reserved_peak_bytes: int | None = None
    """GPU: the caching allocator's peak of bytes reserved, largest rank; None on CPU."""
    fragmentation: float | None = None
    """GPU: 1 - allocated / reserved at the peak (a share, 0-1), largest rank; None on CPU."""

    # -- pipeline ------------------------------------------------------------------------
    bubble: float | None = None
    """Share of a step (0-1) the pipeline's ranks spent waiting, mean over ranks."""
    bubble_ideal: float | None = None
    """The schedule's ideal bubble share, (p-1)/(v*m+p-1)."""

    # -- communication -------------------------------------------------------------------
    comm_bytes_per_step: float | None = None
    """Bytes the largest sender gave to gradient collectives per step, mean over the measured
    steps; reason in ``unmeasured`` when None (not counted for this strategy)."""
    uncompressed_bytes_per_step: float | None = None
    """The same buckets' bytes in plain fp32: what all-reduce would have sent."""
    compression_ratio: float | None = None
    """``uncompressed_bytes_per_step`` / ``comm_bytes_per_step``; None when nothing was sent."""

    # -- a mixture of experts (records/experts.py); no key for a dense model -------------
    expert_imbalance: float | None = None
    """The most tokens one expert took over the mean per expert (1 = even), each step's over
    every rank's tokens, mean over the measured steps."""
    all_to_all_bytes_per_step: float | None = None
    """Bytes the largest sender sent to other ranks in all-to-alls per step (expert's dispatch
    and combine, forward and backward), mean over the measured steps; 0 with every expert on one rank."""

    # -- context parallelism (records/context.py); no key off context -------------------
    context_path: str | None = None
    """How attention went round the context ranks: "ring (point-to-point)" or "torch context_parallel"."""
    ring_bytes_per_step: float | None = None
    """Bytes the largest sender sent round the ring per step (forward and backward), mean over the
    measured steps; part of ``comm_bytes_per_step``, which adds the gradients' all-reduce."""

    # -- the time breakdown, from the profiler's recorded steps --------------------------
    compute_time_s: float | None = None
    """Time computing per step (mean over ranks, median over recorded steps); reason in
    ``unmeasured`` when None (profiler off, or no step recorded after the warm-up)."""
    comm_time_s: float | None = None
    """Time a collective ran per step, hidden behind compute or not."""
    exposed_comm_time_s: float | None = None
    """Communication time per step in which no compute ran."""
    idle_time_s: float | None = None
    """Time per step in which neither ran (waiting for a peer, a bubble, Python)."""
    breakdown_steps: int | None = None
    """How many recorded steps the breakdown is taken over."""
    breakdown_check: float | None = None
    """(compute + exposed communication + idle) / the timer's step time, median: near 1 when the
    breakdown accounts for the step."""

    # -- each rank's figures, and the stragglers (records/stragglers.py); no key where None --
    rank_step_time_s: list[float] | None = None
    """Each rank's own step time (its timer), median over the measured steps: a synchronous step
    ends on every rank together, so these differ little; where a rank spent it is below."""
    rank_compute_time_s: list[float] | None = None
    """Each rank's compute per step, median over the recorded steps; None without one."""
    rank_idle_time_s: list[float] | None = None
    """Each rank's idle time per step (a wait for a late peer inside a collective included),
    median over the recorded steps: a straggler's peers' rises."""
    stragglers: list[int] | None = None
    """Ranks whose compute was slower than the other ranks' in every recorded step, beyond the
    steps' noise (the rule and its margin: records/stragglers.py, ``method["stragglers"]``);
    [] when none was; None where it cannot be told, reason in ``unmeasured``."""

    # -- what the instruments cost, and who else used the machine ------------------------
    instrument_overhead: InstrumentOverhead | None = None
    """What parakit's own instruments cost this run, measured on it."""
    profiler_overhead: float | None = None
    """``instrument_overhead.recorded_step_slowdown``, kept where the first readers look."""
    other_cpu_s: float | None = None
    """CPU seconds processes other than the run's engines used on the busiest host during the
    measured steps; None where a rank could not read it."""
    other_cpu_share: float | None = None
    """``other_cpu_s`` over that host's cores x the measured window (0-1)."""
    busiest_host: str | None = None
    """The host ``other_cpu_s`` is of."""

    # -- energy, over the measured steps' window -----------------------------------------
    energy_j: float | None = None
    """Energy of the measured steps, each device's counter once, summed; reason in
    ``unmeasured`` when None."""
    avg_power_w: float | None = None
    """Average power over that window, summed over devices."""
    samples_per_j: float | None = None
    """Samples of the measured steps / ``energy_j``."""
    power_scope: str | None = None
    """What the meters read: a GPU each, or a whole CPU package."""
    power_sampler_cpu_share: float | None = None
    """CPU time of the power sampler thread over its window, most on one device: what looking
    cost the engine. Stored and read as ``power_sampler_overhead``."""

    # -- FLOPs ---------------------------------------------------------------------------
    flops_per_step: float | None = None
    """Model FLOPs of one step (nanoGPT's estimate: recomputation and padding do not count);
    reason in ``unmeasured`` when None."""
    tflops_per_device: float | None = None
    """Achieved model TFLOP/s per device at the median step."""
    mfu: float | None = None
    """Model FLOPs utilisation (0-1): achieved FLOP/s per device over the device's dense peak at
    this precision; reason in ``unmeasured`` when None."""
    flops_method: str | None = None
    """How ``flops_per_step`` was found, or why it was not."""

    # -- how the run computed ------------------------------------------------------------
    math_flags: dict[str, Any] | None = None
    """Rank 0's math settings (TF32 for matmuls and cuDNN, ...), so a figure reads with them."""
    fp8_layers: list[str] | None = None
    """Under fp8: the layers converted to float8; no key elsewhere."""
    sharded_units: list[str] | None = None
    """Under fsdp: the modules sharded as units of their own, each gathered alone (the rest of
    the model is one more unit); ["(the whole model)"] where no blocks were found; no key elsewhere."""
    checkpointed_units: list[str] | None = None
    """With activation checkpointing: the modules recomputed in backward; ["(the whole model)"]
    where no blocks were found; no key elsewhere."""

    # -- a switched run (records/segments.py) --------------------------------------------
    switches: int | None = None
    """How many times the run switched settings; no key for a run that never did."""
    switch_s: float | None = None
    """The switches' pauses in training, summed."""

    method: dict[str, str] | None = None
    """Figure name -> how it was obtained, in words; no key in a segment's summary."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Figures a record held that this parakit does not know, kept as read (``from_dict``)."""
