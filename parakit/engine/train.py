"""The training loop that runs on every engine of a run, in the spirit of nanoGPT's train.py:
linear, top to bottom, one global batch per step, every host-device sync marked."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import math
import platform
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from parakit.config.memory import Checkpointing
from parakit.config.run import RunConfig, Strategy
from parakit.config.switch import Segment
from parakit.engine import devices, precision, process_group, saved_state
from parakit.engine.background_save import BackgroundSaver, measures
from parakit.engine.batches import make_batches, slice_rows, to_device
from parakit.engine.step_profiler import StepProfiler, per_step
from parakit.engine.compose import Setup, compose
from parakit.engine.divergence import DivergenceWatch, is_check_step
from parakit.engine.faults import kill_if_asked
from parakit.config.formulas import peak_flops
from parakit.engine.flops import step_flops
from parakit.engine.losses import cross_entropy, loss_function  # noqa: F401 - cross_entropy: read from here too
from parakit.engine.memory import SELECTIVE_UNCOUNTABLE, MemoryCount
from parakit.engine.optimizer import local_bytes, make_optimizer, optimizer_state_bytes
from parakit.engine.power import PowerMeter
from parakit.engine.payload import unpack
from parakit.engine.publish import Publisher, progress
from parakit.engine.state import STATE
from parakit.engine.stopping import StopRequest
from parakit.engine.strategies.base import Parallel, unscaled
from parakit.engine.strategies.measures import strategy_measures
from parakit.engine.timing import MeasuredWindow, StepTimer
from parakit.engine.workloads import build_model
from parakit.config.levers import SyncKind
from parakit.records.rank import RankReport

PUBLISH_EVERY_S = 0.2
HEARTBEAT_EVERY_S = 5.0  # live=False: the step count only, so the hang watch still sees the run move


def params_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: equal digests mean bit-identical replicas."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())  # note: device-to-host copy, once per run
    return h.hexdigest()[:16]


def train(payload: bytes, stop_token: str | None = None, segment: Segment | None = None) -> RankReport:
    """Run one training run on this engine and return this rank's measurements.

    Args:
        payload: a cloudpickled RunConfig (callables defined in a notebook travel inside it).
        stop_token: unique per launch. Given, a SIGINT during training ends the run on every
            rank after the same step, and the steps made so far are returned with
            ``stopped_early`` set (see ``stopping``); without it, SIGINT raises as usual.
            SIGUSR2 ends it the same way, for a switch of settings: the state is saved.
        segment: where this launch sits in a longer training (a switched or resumed run):
            its first global step, and the saved state to start from and to save to.
    """
    # Everything the engine holds before the run (torch's modules: ~300k objects) goes out of
    # the cyclic GC's sight until the run ends, so the full collection below scans only what
    # the run made: it took 0.3-0.5 s of every run's end on a 2-core CPU, a few ms now. The
    # GC's own collections during the run skip them too: no 0.3 s pause in a timed step.
    gc.freeze()
    try:
        config: RunConfig = unpack(payload)
        return _train_and_leave(config, stop_token, segment or Segment())
    finally:
        # FSDP2 and DTensor leave reference cycles (module, state, hooks) that hold the model,
        # its optimizer state and old process groups (threads, sockets) until the cyclic GC
        # happens to run: over 50 runs engine memory grew 30 % without this, 6 % with it.
        gc.collect()
        gc.unfreeze()  # older garbage (a replaced group) is collected where it dies: leave()


def _train_and_leave(config: RunConfig, stop_token: str | None, segment: Segment) -> RankReport:
    try:
        watch_peers = config.stop_on_divergence and config.strategy is not Strategy.SINGLE
        with StopRequest(stop_token, watch_peers=watch_peers) as stop:
            result = _train(config, stop, segment)
        if result.error is not None and config.strategy is not Strategy.SINGLE:
            leave_group()  # peers waiting for this rank fail at once
        return result
    except BaseException as e:
        # Leaving the group closes this rank's connections (where gloo lets it), so peers
        # blocked in a collective with it can fail instead of waiting out the group's timeout.
        if config.strategy is not Strategy.SINGLE:
            leave_group()
        if isinstance(e, torch.OutOfMemoryError):  # while building: the same advice as in a step
            raise RuntimeError(failure_text(e, devices.device()).split("\n")[0]) from e
        raise


def leave_group() -> None:
    """Leave the process group at once, after a failure. The group predates the run, so it is
    frozen (see ``train``): unfrozen first, leave()'s collection frees its threads and sockets."""
    gc.unfreeze()
    process_group.leave(abort=True)


def failure_text(e: BaseException, device: torch.device) -> str:
    """The error of a failed step, as text: the traceback, and for a GPU out of memory the
    memory figures and what to change."""
    text = "".join(traceback.format_exception(e)).rstrip()
    if isinstance(e, torch.OutOfMemoryError) and device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        text = (f"GPU out of memory on {torch.cuda.get_device_name(device)}: "
                f"{torch.cuda.memory_allocated(device) / 2**30:.2f} GiB allocated by this run "
                f"(peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB), "
                f"{free / 2**30:.2f} of {total / 2**30:.2f} GiB free on the device. "
                "Try a smaller batch_size, strategy='fsdp' (shards parameters, gradients and "
                "optimizer state), or precision='bf16'.\n" + text)
    return text


@dataclass
class Training:
    """What ``set_up`` builds for one run on this rank and the loop uses: the model laid out
    over the ranks, its optimizer and data, and the instruments that measure it."""

    config: RunConfig
    rank: int
    world: int
    device: torch.device
    parallel: Parallel
    optimizer: torch.optim.Optimizer
    scaler: Any
    """fp16's GradScaler, else None."""
    batches: Any
    rows: tuple[int, int]
    """This rank's slice [lo, hi) of each global batch."""
    micro_steps: int
    math_flags: dict[str, bool]
    flops: tuple[float | None, str | None]
    """FLOPs of a step over the global batch and how they were found (rank 0), or why not."""
    memory: tuple[str | None, str | None]
    """How the peak memory is read on this device, and why it cannot be, if it cannot."""
    timer: StepTimer
    profiler: StepProfiler
    meter: PowerMeter
    window: MeasuredWindow
    divergence: DivergenceWatch
    memory_count: MemoryCount
    """Gradients, activations and the allocator's figures (engine.memory)."""
    first_step: int = 0
    """The global step this launch starts at (a switched or resumed run's later segment)."""
    state_load_s: float | None = None
    """Seconds spent loading a saved state (both phases), None when none was loaded."""
    saver: BackgroundSaver | None = None
    """Checkpoints every ``checkpoint_every`` steps, in the background; None without."""
    fault: Any = None
    """A kill to inject (config/recovery.Fault, its step global), or None."""
    publisher: Publisher = field(default_factory=Publisher)


@dataclass
class Steps:
    """What the loop made: per completed step, the loss (still on the device: reading it
    syncs) and the bytes sent; and the error that ended the loop, if one did."""

    losses: list[torch.Tensor | None] = field(default_factory=list)
    comm_bytes: list[int] = field(default_factory=list)
    uncompressed_bytes: list[int] = field(default_factory=list)
    error: str | None = None
    loop_s: tuple[float, float] = (0.0, 0.0)
    """The loop's start and end, epoch seconds: where a switched run's pause between segments is."""


def _train(config: RunConfig, stop: StopRequest | None = None, segment: Segment | None = None) -> RankReport:
    """One run on this rank, as every rank runs it: set up, train, save the state, report."""
    stop = stop or StopRequest(None)  # no stop token: nothing can ask this run to stop early
    segment = segment or Segment()
    training = set_up(config, segment)
    made = train_steps(training, stop)
    if training.saver is not None:  # the checkpoint in flight is whole before the segment's own save
        training.saver.finish(failed=made.error is not None)
    save_s = None
    ended = len(made.losses) == config.steps
    wanted = stop.switching or (segment.save_at_end if ended else segment.save_on_stop)
    if segment.state_out and made.error is None and wanted:
        try:
            save_s = saved_state.save(training.parallel, training.optimizer, segment.state_out, rank=training.rank,
                                      step=segment.first_step + len(made.losses), settings=config.describe(),
                                      alone=config.strategy is Strategy.SINGLE)
        except Exception as e:  # noqa: BLE001 - the steps made are kept; the state is what failed
            made.error = "saving the state failed: " + failure_text(e, training.device)
    return dataclasses.replace(report(training, made, stop), state_save_s=save_s, state_load_s=training.state_load_s,
                               switching=stop.switching, loop_started_at=made.loop_s[0],
                               loop_ended_at=made.loop_s[1], **measures(training.saver))


def set_up(config: RunConfig, segment: Segment | None = None) -> Training:
    """Build the model (the same on every rank), lay it out over the ranks with the run's
    strategy (engine/compose.py), and make its optimizer, its data and the instruments."""
    single = config.strategy is Strategy.SINGLE
    rank, world = (0, 1) if single else (STATE.rank, STATE.world_size)
    device = devices.device()
    loss_fn = loss_function(config.loss)
    math_flags = precision.set_math_flags(config.precision)  # explicit, and recorded
    scaler = precision.grad_scaler(config.precision, device)

    # The same seed on every rank gives the same initial weights without a broadcast.
    torch.manual_seed(config.seed)
    model = build_model(config.model, dict(config.model_options)) if isinstance(config.model, str) else config.model()
    segment, loading = segment or Segment(), time.perf_counter()
    if segment.state_in:  # the saved values replace the seeded ones, in full, before any layout
        saved_state.load_model(model, segment.state_in)
    model = precision.cast_model(model.to(device), config.precision)
    flops = model_flops(config, model, loss_fn) if rank == 0 else (None, None)  # before wrapping
    # Which rows a rank reads depends on the layout, so a pipeline, which traces the model
    # with real inputs, gets the first step's rows before its own data source exists.
    sample = None
    if config.uses_pipeline:
        first = make_batches(config, 0, config.data_parallel_size)
        # on the model's device: torch.export refuses a trace that mixes devices
        sample = to_device(first.rows(0, config.batch_size, 0, config.per_rank_batch_size)[0], device)
    parallel = compose(model, Setup(config=config, device=device, rank=rank, loss_fn=loss_fn, sample_inputs=sample,
                                    scale_loss=scaler.scale if scaler else unscaled))
    optimizer = make_optimizer(parallel.parameters(), config.lr, device, zero=config.zero)
    if segment.state_in:  # the optimizer's state, resharded for this layout
        saved_state.load_optimizer(parallel, optimizer, segment.state_in, alone=single)
    load_s = time.perf_counter() - loading if segment.state_in else None
    batches = make_batches(config, parallel.data_rank, parallel.data_size)
    per = config.per_rank_batch_size
    memory = devices.reset_peak_memory()
    devices.limit_memory(config.memory_limit)
    meter = PowerMeter(device)  # this engine's GPU, matched by UUID; RAPL on a CPU
    return Training(
        config=config, rank=rank, world=world, device=device, parallel=parallel, optimizer=optimizer,
        scaler=scaler, batches=batches, rows=(parallel.data_rank * per, (parallel.data_rank + 1) * per),
        micro_steps=config.sync.every if config.sync.kind is SyncKind.ACCUMULATE else 1,
        math_flags=math_flags, flops=flops, memory=memory, timer=StepTimer(device),
        profiler=StepProfiler(device, config.warmup_steps, config.profile_every, config.steps, world=world,
                              trace=config.trace, rank=rank, strategy=config.strategy),
        meter=meter, first_step=segment.first_step, state_load_s=load_s, fault=segment.fault,
        saver=BackgroundSaver(segment, rank, single, config.describe()) if segment.checkpoint_every else None,
        window=MeasuredWindow(device, meter),  # wall clock and energy over the measured steps alone
        divergence=DivergenceWatch(device),
        # last: with memory_snapshot, the allocator's history is recorded from here on
        memory_count=MemoryCount(
            device, config.steps, config.warmup_steps, snapshot=config.memory_snapshot,
            uncountable=SELECTIVE_UNCOUNTABLE if config.activation_checkpointing is Checkpointing.SELECTIVE else None),
    )


def train_steps(training: Training, stop: StopRequest) -> Steps:
    """The loop: one global batch per step, until the last step or a stop agreed by every
    rank. A failed step ends it; the steps made so far are kept, with the error."""
    config, made = training.config, Steps()
    started = time.time()
    last_publish = -math.inf  # the first step is always published
    publish_every_s = PUBLISH_EVERY_S if config.live else HEARTBEAT_EVERY_S
    try:
        for step in range(config.steps):
            kill_if_asked(training.fault, training.rank, training.first_step + step)
            if step == config.warmup_steps:
                training.window.begin()
            with training.profiler.step(step):  # records the planned steps, outside the step's own timing
                loss = one_step(training, step)
            made.losses.append(None if loss is None else loss.detach())
            if training.parallel.wire is not None:
                sent = training.parallel.wire.take_step()  # plain ints counted in the hooks: no device sync
                made.comm_bytes.append(sent.comm_bytes)
                made.uncompressed_bytes.append(sent.uncompressed_bytes)
            # Progress at most every PUBLISH_EVERY_S (the rate the notebook reads it) and at the end:
            # each message costs ~2.6 ms of CPU across engine, controller and client, which per step
            # took ~14% off a small model's throughput on 2 cores.
            now = time.perf_counter()
            if training.rank == 0 and (now - last_publish >= publish_every_s or step + 1 == config.steps):
                last_publish = now
                training.publisher.send(progress(config, step, loss, training.device, training.meter, training.profiler))
                training.window.cost_s += time.perf_counter() - now
                training.window.messages += 1
            if config.stop_on_divergence and is_check_step(step + 1) and training.divergence.check(made.losses) is not None:
                stop.ask(step + 1, f"the loss diverged at step {training.divergence.first_step}")
            done = training.first_step + step + 1
            if training.saver is not None and training.saver.due(done) and step + 1 < config.steps:
                training.saver.save(training.parallel, training.optimizer, done, made.losses)  # the pause: a copy to CPU
            if stop.should_stop(step + 1):
                break
    except Exception as e:  # noqa: BLE001 - the steps made so far are returned with the error
        # A failed step (this rank's code, or a collective a peer broke) ends the run here;
        # what the completed steps measured goes back with the error instead of being lost.
        made.error = failure_text(e, training.device)
    made.loop_s = (started, time.time())
    return made


def one_step(training: Training, step: int) -> torch.Tensor | None:
    """One timed optimizer step on this rank's rows of global batch ``step``. Returns the
    loss, left on the device, or None where this rank computes none."""
    config, optimizer, scaler = training.config, training.optimizer, training.scaler
    training.timer.start()
    inputs, targets = training.batches.rows(training.first_step + step, config.batch_size, *training.rows)
    inputs, targets = to_device(inputs, training.device), to_device(targets, training.device)
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast(config.precision, training.device), training.memory_count.counting(step):
        loss = forward_backward(training.parallel, inputs, targets, training.micro_steps, config.per_rank_batch_size)
    training.parallel.before_step()
    if scaler is not None:
        scaler.unscale_(optimizer)
        agree_on_overflow(scaler, optimizer, training.world)
        # Skipped, on every rank alike, when a gradient overflowed. note: a host-device sync
        # (GradScaler reads the overflow flag) unless the optimizer is fused (make_optimizer).
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    training.parallel.after_step()
    training.timer.stop()
    return loss


def report(training: Training, made: Steps, stop: StopRequest) -> RankReport:
    """Stop the instruments and read them: this rank's RankReport of the steps it made."""
    config, parallel = training.config, training.parallel
    measured_wall_s, power = training.window.end(failed=made.error is not None)  # stops before the profiler's
    training.profiler.finish(failed=made.error is not None)  # reading the last window costs the run's end, not its steps
    memory = training.memory_count.measures(parallel.parameters(), failed=made.error is not None)
    step_times = training.timer.step_times_s() if made.error is None else training.timer.completed_times_s(len(made.losses))
    # This GPU's dense peak at this precision (None on CPUs and GPUs not in the table)
    peak, no_peak = peak_flops(devices.device_name(), config.precision.value)
    mem_kind, mem_reason = training.memory
    return RankReport(
        rank=training.rank, error=made.error, stopped_early=len(made.losses) < config.steps, stop_reason=stop.reason,
        # note: one device-to-host copy; None where this rank computes no loss (early stages)
        losses=[None if l is None else l.float().item() for l in made.losses],
        step_time_s=step_times, step_end_s=training.timer.since_start_s(len(step_times)),
        comm_bytes=made.comm_bytes or None, uncompressed_bytes=made.uncompressed_bytes or None,
        peak_mem_bytes=devices.peak_memory_bytes(mem_kind), peak_mem_kind=mem_kind, peak_mem_reason=mem_reason,
        param_bytes=local_bytes(parallel.parameters()), optimizer_bytes=optimizer_state_bytes(training.optimizer),
        **memory, params_digest=params_digest(parallel.modules[0]) if parallel.replicated else None,
        math_flags=training.math_flags, fp8_layers=training.parallel.fp8_layers,
        sharded_units=parallel.sharded_units, checkpointed_units=parallel.checkpointed_units,
        flops_per_step=training.flops[0], flops_method=training.flops[1], peak_flops_per_s=peak, no_peak_reason=no_peak,
        # The measured steps' wall clock, everything between them included: what a user waits.
        measured_wall_s=measured_wall_s,
        power=power,
        # Ranks that share a device (engines on one GPU, every CPU rank on a host) measure the
        # same counter: the session counts each device once.
        power_device=STATE.gpu_uuid or f"cpu@{platform.node()}",
        # parakit's own instruments outside the steps' timers (profiler, progress messages)
        profiler_cost_s=training.profiler.cost_s, progress_cost_s=training.window.cost_s,
        profiler_on_steps=training.profiler.enabled_steps, progress_messages=training.window.messages,
        machine_load=training.window.load.measures,
        progress_failures=training.publisher.failures, gc_collections=training.window.gc_collections,
        traces=training.profiler.traces or None,
        **strategy_measures(parallel.stats(), step_times, config.warmup_steps),
        **per_step(training.profiler, len(step_times), parallel.stats()),
    )


def model_flops(config: RunConfig, model: torch.nn.Module, loss_fn) -> tuple[float | None, str]:
    """FLOPs of one step over the global batch, from the formula for gpt or counted once on a
    meta-device copy (an extra forward + backward, once per run), on a few sample rows."""
    rows = min(config.batch_size, 4)
    inputs, targets = make_batches(config, 0, 1).rows(0, config.batch_size, 0, rows)
    return step_flops(config, model, inputs, targets, loss_fn)


def forward_backward(parallel, inputs, targets, micro_steps: int, rows: int):
    """One step's forward and backward: in one go, or accumulated over equal micro-steps with
    gradient synchronisation only in the last one (DDP's no_sync, FSDP2's equivalent)."""
    if micro_steps == 1:
        return parallel.forward_backward(inputs, targets)
    size = rows // micro_steps  # RunConfig checked that it divides
    total = 0.0
    for i in range(micro_steps):
        x, y = slice_rows(inputs, i * size, (i + 1) * size), slice_rows(targets, i * size, (i + 1) * size)
        sync = contextlib.nullcontext() if i == micro_steps - 1 else parallel.no_sync()
        with sync:
            total = total + parallel.forward_backward(x, y, weight=1 / micro_steps).detach()
    return total / micro_steps


def agree_on_overflow(scaler, optimizer, world: int) -> None:
    """Make every rank skip the step when any rank saw inf/nan in its gradients. Under DDP all
    ranks hold the same gradients, but sharded layouts (fsdp, tensor) each check only their
    own shard, and ranks that disagreed would step apart. Reads GradScaler's per-optimizer
    record (private): torch has no public hook for this yet."""
    if world == 1:
        return
    import torch.distributed as dist

    state = scaler._per_optimizer_states[id(optimizer)]
    for found in state["found_inf_per_device"].values():
        dist.all_reduce(found, op=dist.ReduceOp.MAX)
