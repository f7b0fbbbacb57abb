"""What one rank of a training run sends back to the notebook: ``RankReport``.

It is built on the engine at the end of ``engine.train`` and travels back through
ipyparallel (pickled: plain values only, no tensors). ``records.summary`` merges the ranks'
reports into the run's steps and summary, and ``Session`` keeps where each rank ran in
``RankInfo``. A rank whose engine died sends nothing: its place holds None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parakit.records.power import PowerMeasurement
from parakit.records.rank_timeline import RankTimeline
from parakit.records.result import RankInfo


@dataclass(frozen=True, kw_only=True)
class RankReport:
    """One rank's measurements of one training run, per step and in total."""

    rank: int
    """This rank's place in the run (0 for a single worker)."""
    error: str | None
    """The failure that ended this rank's run, as text (traceback, and for a GPU out of memory
    its figures and advice); None when every planned step ran or the run was stopped."""
    stopped_early: bool
    """Fewer steps ran than planned: a stop asked for, a divergence, or an error."""
    stop_reason: str | None
    """Why the run was asked to stop early (e.g. the loss diverged); None when nobody asked."""

    # -- per step: one entry per completed step -------------------------------------------
    losses: list[float | None]
    """The step's loss on this rank's slice of the batch; None where this rank computes no loss
    (a pipeline's early stages)."""
    step_time_s: list[float]
    """Each completed step's time (CUDA events on a GPU, the wall clock on a CPU)."""
    comm_bytes: list[int] | None
    """Bytes this rank handed to gradient collectives in each step; None where they are not
    counted (strategies other than DDP's hooks, a single worker)."""
    uncompressed_bytes: list[int] | None
    """Bytes of the same gradient buckets in plain fp32: what all-reduce would have sent."""
    compute_time_s: list[float | None] | None = None
    """From the profiler: time computing in each step (None on steps it did not record); None
    as a whole when it recorded no step."""
    comm_time_s: list[float | None] | None = None
    """From the profiler: time a collective ran in each recorded step, hidden or not."""
    exposed_comm_time_s: list[float | None] | None = None
    """From the profiler: communication time in which no compute ran, per recorded step."""
    idle_time_s: list[float | None] | None = None
    """From the profiler: time neither ran, per recorded step (waiting for a peer, a bubble)."""

    # -- memory and the model -------------------------------------------------------------
    peak_mem_bytes: int | None
    """The run's peak memory on this rank; None where it could not be read."""
    peak_mem_kind: str | None
    """'cuda_max_allocated' on a GPU, 'process_peak_rss' on a CPU."""
    peak_mem_reason: str | None
    """Why ``peak_mem_bytes`` is None, or what it covers."""
    param_bytes: int
    """Bytes of parameters this rank holds (its shard under fsdp and tensor parallelism)."""
    optimizer_bytes: int
    """Bytes of optimizer state this rank holds."""
    gradient_bytes: int | None = None
    """Bytes of gradients this rank held after the last step (its shard under fsdp)."""
    activation_bytes: int | None = None
    """The most bytes saved for backward held at once in one step (``activation_step``), each
    storage once, parameters left out (engine.memory)."""
    activation_step: int | None = None
    """The step whose activations were counted (the last warm-up step)."""
    activation_count_s: float | None = None
    """Time the counting hooks took inside that step."""
    allocated_peak_bytes: int | None = None
    """GPU: the caching allocator's peak of bytes handed to tensors (max_memory_allocated)."""
    reserved_peak_bytes: int | None = None
    """GPU: its peak of bytes reserved from the device (max_memory_reserved)."""
    fragmentation: float | None = None
    """GPU: 1 - allocated / reserved at the peak: the share reserved but not in use."""
    memory_snapshot: bytes | None = None
    """With ``memory_snapshot=True`` on a GPU: the torch.cuda.memory snapshot pickle's bytes."""
    memory_unmeasured: dict[str, str] | None = None
    """Memory figure -> why this rank could not measure it."""
    params_digest: str | None
    """A hash of the final parameters; equal on every rank means bit-identical replicas. None
    where a rank does not hold a whole replica."""
    math_flags: dict[str, bool]
    """The math settings the run set explicitly (TF32 for matmuls and cuDNN)."""
    fp8_layers: list[str] | None = None
    """Under precision fp8, the linear layers torchao converted to float8, by name (the rest ran
    in bf16); None at other precisions."""
    sharded_units: list[str] | None = None
    """Under fsdp, the modules sharded as units of their own (engine/blocks.py's blocks), by
    name; ["(the whole model)"] where none were found; None under other layouts."""
    checkpointed_units: list[str] | None = None
    """With activation checkpointing, the modules recomputed in backward, by name; ["(the whole
    model)"] where no blocks were found; None without checkpointing."""

    # -- FLOPs (counted on rank 0 only) ---------------------------------------------------
    flops_per_step: float | None
    """Model FLOPs of one step over the global batch; None on other ranks, or uncounted."""
    flops_method: str | None
    """How ``flops_per_step`` was found, or why it was not."""
    peak_flops_per_s: float | None
    """This device's dense peak FLOP/s at the run's precision; None on CPUs and GPUs parakit's
    table does not hold (``no_peak_reason`` says which)."""
    no_peak_reason: str | None
    """Why ``peak_flops_per_s`` is None."""

    # -- the measured window and energy ---------------------------------------------------
    measured_wall_s: float | None
    """The wall clock from the first measured step's start to the last step's end, everything
    between steps included; None when no step after the warm-up began."""
    power: PowerMeasurement | None
    """The power meter over the measured steps; None when no measured step began. (Given as
    ``PowerMeasurement.to_dict()``'s dict, it is read back into the measurement.)"""
    power_device: str
    """What the meter read: the GPU's UUID, or 'cpu@host' for a host's RAPL counters. Ranks
    sharing it share one counter, so the summary counts each device once."""

    # -- what parakit's own instruments cost ----------------------------------------------
    profiler_cost_s: float
    """Time between steps spent starting, stopping and reading the profiler."""
    progress_cost_s: float
    """Time between steps spent sending progress messages (rank 0)."""
    profiler_on_steps: list[int]
    """The steps the profiler was on."""
    progress_messages: int
    """Progress messages sent (rank 0; 0 on the others)."""
    progress_failures: int = 0
    """Progress messages that could not be sent: the notebook's live view missed them, the run
    did not."""
    gc_collections: list[int] | None
    """Cyclic-GC collections per generation during the measured steps; None when none began."""
    machine_load: dict[str, Any] | None = None
    """How busy this rank's host was during the measured steps (engine.timing.MachineLoad as a
    dict: host, cpus, busy_cpu_s, own_cpu_s, window_s); None when psutil could not read it or
    no measured step began."""
    traces: list[tuple[list[int], str]] | None = None
    """With ``trace=True``: (steps, Chrome-trace JSON) per profiler window; else None."""
    timeline: RankTimeline | None = None
    """The last profiler window as spans in time (records/rank_timeline.py); None where none was read."""
    step_end_s: list[float] | None = None
    """When each step ended, seconds since the first began (the timer's clock)."""

    # -- pipelines only -------------------------------------------------------------------
    bubble: float | None = None
    """Share of this rank's step spent not computing, median over measured steps; None off a
    pipeline, or with no measured step."""
    bubble_ideal: float | None = None
    """The schedule's ideal bubble, (p-1)/(v*m+p-1); None off a pipeline."""
    stages: list[int] | None = None
    """The stage indices this rank held; None off a pipeline."""
    mesh_place: dict[str, int] | None = None
    """Where this rank sat on the run's device mesh, outer dimension first, as the mesh gave it
    (``DeviceMesh.get_coordinate``), e.g. {"data": 1, "tensor": 0}; None for a single worker."""

    # -- a mixture of experts only (engine/experts.py) -------------------------------------
    expert_tokens: list[list[int]] | None = None
    """Per step, the tokens this rank's slice sent to each expert, summed over the blocks (each
    of a token's top_k choices counted); None for a dense model."""
    all_to_all_bytes: list[int] | None = None
    """Per step, the bytes this rank sent to other ranks in all-to-alls (expert's dispatch and
    combine, forward and backward, and their counts); 0 where the experts are all here."""

    # -- context parallelism only (engine/strategies/context.py) --------------------------
    context_path: str | None = None
    """How attention went round the context ranks: "ring (point-to-point)", parakit's ring, or
    "torch context_parallel"; None off context."""
    ring_bytes: list[int] | None = None
    """Per step, the bytes this rank sent round the ring: keys and values forward, keys and values
    with their gradients backward; None off context."""

    state_save_s: float | None = None
    """Seconds this rank spent saving the run's state with DCP at its end (None: not saved)."""
    state_load_s: float | None = None
    """Seconds from reading a saved state to the model laid out with it and its optimizer
    loaded (None: the run started from its seed)."""
    switching: bool = False
    """The run was ended for a switch of settings (SIGUSR2), not stopped: it goes on."""
    loop_started_at: float | None = None
    """When the training loop began, epoch seconds (this host's clock)."""
    loop_ended_at: float | None = None
    """When it ended, before any state was saved, epoch seconds: between one segment's end and
    the next one's start training paused (``records.segments``)."""

    # -- checkpoints while training (checkpoint_every): engine/background_save.py ----------
    checkpoint_steps: list[int] | None = None
    """The steps after which a checkpoint was started, counted from this launch's first (as
    ``losses`` are); None without checkpoint_every."""
    checkpoint_pause_s: list[float] | None = None
    """Per checkpoint, the loop's pause: waiting for the one before, copying the state to CPU."""
    checkpoint_write_s: list[float] | None = None
    """Per checkpoint written, from its start until it was whole on disk (behind the training)."""
    checkpoint_error: str | None = None
    """Why a checkpoint failed, if one did (the run went on; the one before stayed whole)."""

    def __post_init__(self) -> None:
        # A report rebuilt from JSON (a test's, or an old pickle) may hold the measurement as
        # its dict; the report carries the measurement itself, read by attribute downstream.
        if isinstance(self.power, dict):
            object.__setattr__(self, "power", PowerMeasurement.from_dict(self.power))

    def profiled(self, step: int) -> bool:
        """The profiler recorded this step on this rank."""
        return self.compute_time_s is not None and self.compute_time_s[step] is not None


def rank_info(report: RankReport | None, **where: Any) -> RankInfo:
    """One rank's entry in the run record: where it ran (``where``: RankInfo's rank, engine_id,
    pid, host, device, device_name, gpu_index, threads) and what its report measured of its
    memory, its share of the model and its power (the PowerMeasurement itself, read by
    attribute); those are None where no report came back."""
    if report is None:
        return RankInfo(**where)
    return RankInfo(
        **where, peak_mem_bytes=report.peak_mem_bytes, peak_mem_kind=report.peak_mem_kind,
        params_digest=report.params_digest, param_bytes=report.param_bytes,
        optimizer_bytes=report.optimizer_bytes, gradient_bytes=report.gradient_bytes,
        activation_bytes=report.activation_bytes, allocated_peak_bytes=report.allocated_peak_bytes,
        reserved_peak_bytes=report.reserved_peak_bytes, fragmentation=report.fragmentation,
        bubble=report.bubble, bubble_ideal=report.bubble_ideal,
        stages=report.stages, mesh_place=report.mesh_place, power=report.power, power_device=report.power_device,
    )
