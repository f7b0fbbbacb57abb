"""The one check before a launch: whether a request fits the engines that run it (running ones,
or those a session would start) and what to start or refuse.

Session, the ``parakit`` command, the magics, the panel and the advisor all call these
functions, so a request is refused with the same one line whichever front end it came from,
and before any engine is started or touched. Nothing here imports torch or ipyparallel, but a
run of a model of your own that names its modules (tp_plan, split, blocks) builds the model
on the meta device to check them (engine/model_check.py), which imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from parakit.cluster import netns, placement
from parakit.config.bench import bench_settings
from parakit.config.hosts import EngineLaunch, Launcher
from parakit.config.levers import (
    FP8_NEEDS_TORCHAO, Precision, check_cpu_precision, check_fp8_capability, default_workers,
)
from parakit.config.recovery import FailurePolicy, OnFailure
from parakit.config.run import Device, RunConfig, Strategy
from parakit.config.switch import CARRIED, STATE_FACTS, check_switches, segment_settings, with_switch
from parakit.records.result import run_label
from parakit.records.store import state_folder

RUN_SETTINGS = frozenset(f.name for f in dataclasses.fields(RunConfig))
_DEFAULTS = {f.name: getattr(f.default, "value", f.default) for f in dataclasses.fields(RunConfig)
             if f.name in ("strategy", "model", "precision")}


@dataclass(frozen=True)
class EngineFacts:
    """What a request is checked against."""

    facts: placement.HostFacts
    """This machine: cores, memory and visible GPUs."""
    gpus: list = field(default_factory=list)
    """The GPUs the engines are pinned to, round robin ([]: CPU engines, or engines on other
    hosts, whose GPUs this machine cannot see)."""
    workers: int = 2
    """Engines there are, or that a session would start."""
    launch: EngineLaunch = EngineLaunch()
    """How they start: local engines are held to this machine's size and devices."""

    @property
    def local(self) -> bool:
        return self.launch.launcher is Launcher.LOCAL


def engines_here(*, workers: Any = None, device: Any = "auto", gpus: Any = None, runs_dir: Any = None,
                 engines: str = "local", profile: str | None = None, cluster_id: str | None = None,
                 ifname: str | None = None, link: str | None = None) -> EngineFacts:
    """The engines a Session given these arguments would start, checked against this machine.

    Args:
        workers, device, gpus, runs_dir, engines, profile, cluster_id, ifname, link: as
            ``Session`` takes them (``runs_dir`` None: not checked).

    Returns:
        The EngineFacts a request is then checked against (``check_run``).

    Raises:
        ValueError: naming what does not fit (a GPU that is not there, too many engines for
            this machine, a link that cannot be made, a run store that cannot be written).
    """
    device = Device.parse(device, "device")
    launch = EngineLaunch(engines, profile, cluster_id, ifname, link)
    if launch.link is not None:
        reason = netns.why_not(launch.link)
        if reason:
            raise ValueError(f"link={link!r} cannot be made here: {reason}")
    if gpus is not None and not (isinstance(gpus, list) and all(type(g) is int for g in gpus)):
        raise ValueError(f"gpus must be a list of GPU indices, e.g. [0, 1] (got {gpus!r})")
    facts = placement.host_facts()
    local = launch.launcher is Launcher.LOCAL
    # Engines on other hosts choose among their own GPUs; the notebook's host may have none.
    chosen = placement.choose_gpus(device, gpus, facts) if local else []
    # Attached: wait for ``workers`` engines if given, else take the ones registered.
    if workers is None:
        workers = 1 if launch.launcher is Launcher.ATTACH else len(chosen) or 2
    here = EngineFacts(facts, chosen, workers, launch)
    check_count(here, workers)
    if runs_dir is not None:
        check_runs_dir(runs_dir)
    return here


def check_count(engines: EngineFacts, workers: Any) -> int:
    """An engine count: a whole number >= 1 that (for local engines) this machine can hold."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (got {workers!r})")
    if engines.local:
        placement.check_workers(workers, engines.facts)
    return workers


def check_run(engines: EngineFacts, **settings: Any) -> RunConfig:
    """A run's settings, checked and completed for these engines.

    Args:
        engines: what the run would go on (``engines_here``, or a Session's).
        **settings: RunConfig fields; None means "the default".

    Returns:
        The RunConfig (workers default as ``levers.default_workers`` for the engines).

    Raises:
        ValueError: naming the first thing that does not fit.
    """
    unknown = sorted(set(settings) - RUN_SETTINGS)
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}; the settings are: {', '.join(sorted(RUN_SETTINGS))}")
    settings = {k: v for k, v in settings.items() if v is not None}
    strategy = Strategy.parse(settings.get("strategy", Strategy.DDP), "strategy")
    settings.setdefault("workers", default_workers(strategy, settings.get("mesh"), engines.workers))
    workers = settings["workers"]
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1 and engines.local:
        placement.check_workers(workers, engines.facts)  # first: clearer than the batch's message
    if not engines.gpus and str(settings.get("precision", "")).strip().lower() == Precision.FP8.value:
        # first too: on CPU engines fp8 is refused whatever else is set, before it asks for compile
        check_cpu_precision(Precision.FP8)
    return check_config(engines, RunConfig(**settings))


def check_config(engines: EngineFacts, config: RunConfig) -> RunConfig:
    """What a RunConfig, sound in itself, needs of the engines: a precision their device has,
    and no pipeline over ranks that share a GPU. Returns the config; ValueError otherwise."""
    if not engines.gpus:
        check_cpu_precision(config.precision)
    elif config.precision is Precision.FP8:
        check_fp8_gpus(engines)
    if engines.local:
        placement.check_gpu_sharing(config, engines.gpus)
    if config.sync_batchnorm and not engines.gpus:
        raise ValueError("sync_batchnorm needs GPU engines (torch's SyncBatchNorm syncs CUDA tensors only); "
                         "on CPU engines each rank normalises its own slice: drop sync_batchnorm")
    check_own_model(config)
    return config


def check_own_model(config: RunConfig) -> None:
    """A model of your own's tp_plan, split and blocks against the model itself, built on the
    meta device here (engine/model_check.py); what ``tp_plan="auto"`` left out is said as a
    warning. Only runs that set one of them pay for the build (and a pipeline's trace)."""
    if isinstance(config.model, str):
        return
    from parakit.engine.model_check import check_model_settings  # torch: only for a model of your own

    for note in check_model_settings(config):
        warnings.warn(f"parakit: {note}", stacklevel=4)


def check_fp8_gpus(engines: EngineFacts) -> None:
    """fp8 on local GPU engines: torchao importable (they run this Python) and every GPU of
    compute capability 8.9 or later, as NVML reports it. Engines on other hosts, and GPUs NVML
    cannot describe, are checked on the engine when the run starts (engine/fp8.py)."""
    if not engines.local:
        return
    if not torchao_installed():
        raise ValueError(FP8_NEEDS_TORCHAO)
    for name, capability in gpu_capabilities(engines.gpus):
        check_fp8_capability(capability, name)


def torchao_installed() -> bool:
    """Whether torchao can be imported here, found without importing it (it imports torch)."""
    return importlib.util.find_spec("torchao") is not None


def gpu_capabilities(gpus: list) -> list[tuple[str, tuple[int, int]]]:
    """Each GPU's name and compute capability from NVML, which creates no CUDA context in the
    notebook; [] where NVML cannot say."""
    from parakit.engine.gpus import NVML

    try:
        with NVML.opened() as nvml:
            found = []
            for gpu in gpus:
                handle = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
                name = nvml.nvmlDeviceGetName(handle)
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                found.append((name.decode() if isinstance(name, bytes) else str(name), (int(major), int(minor))))
            return found
    except Exception:  # noqa: BLE001 - no NVML or an old driver: the engine's own check still runs
        return []


def check_runs(engines: EngineFacts, runs: list[dict[str, Any]], label=None) -> list[RunConfig]:
    """Every run of a list (a sweep) checked before the first starts.

    Raises:
        ValueError: for one run, its own message; for several, how many do not fit and the
            first of them (by ``label(settings)``), so the user can drop them from the lists.
    """
    configs, bad = [], []
    for settings in runs:
        try:
            configs.append(check_run(engines, **settings))
        except ValueError as e:
            bad.append((settings, e))
    if not bad:
        return configs
    if len(runs) == 1:
        raise bad[0][1]
    settings, error = bad[0]
    name = (label or _label)(settings)
    raise ValueError(f"{len(bad)} of {len(runs)} combinations do not fit, e.g. {name}: {error}; "
                     "drop them from the lists")


def _label(settings: dict[str, Any]) -> str:
    """A request's label, with RunConfig's defaults for what it leaves out."""
    given = {k: v for k, v in settings.items() if v is not None}
    return run_label({**_DEFAULTS, **given}, given.get("workers"))


def check_bench(engines: EngineFacts, workers: Any = None, *, sizes=None, collectives=None, repeats: Any = 10,
                warmup: Any = 3, max_size=None, dtype: str = "float32") -> dict[str, Any]:
    """A communication benchmark's settings for these engines; returns the engine function's
    keyword arguments (``config.bench.bench_settings``) with ``workers`` filled in."""
    world = engines.workers if workers is None else workers
    kwargs = bench_settings(world, sizes, collectives, repeats, warmup, max_size, dtype, engines.gpus)
    check_count(engines, world)
    return {"workers": world, **kwargs}


def check_runs_dir(runs_dir: str | os.PathLike) -> None:
    """The run store must be a folder we can write (or can make), found out before any engine
    starts rather than when the first result is saved. Nothing is created here."""
    path = os.path.abspath(os.fspath(runs_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"runs_dir {os.fspath(runs_dir)!r} is a file; give a folder for the run store")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"runs_dir {os.fspath(runs_dir)!r} cannot be written ({existing} is not a writable "
                         "folder); give a folder you can write")


@dataclass(frozen=True)
class Continuation:
    """How a run goes on (``check_continuation``): its segments' plan and where it starts."""

    plan: list
    """[(step, settings changed)] of the scheduled switches, by step."""
    settings: dict[str, Any]
    """The first segment's settings, with its strategy and workers resolved."""
    state_in: str | None = None
    """The saved state it starts from (``resume``)."""
    first_step: int = 0
    """The global step it starts at: the resumed run's steps done."""
    failures: FailurePolicy = FailurePolicy()
    """Its checkpoints and what it does about a lost worker (config/recovery.py)."""


def check_continuation(engines: EngineFacts, config: RunConfig, settings: dict[str, Any], *, switch: Any = None,
                       save_state: Any = False, resume: Any = None, runs_dir: Any = None,
                       checkpoint_every: Any = None, on_failure: Any = "fail", max_failures: Any = 3,
                       fault: Any = None) -> Continuation:
    """A run's switches, save and resume, checkpoints and what it does about a lost worker,
    checked before the first step: every segment as a fresh run of its settings would be, the
    saved state present, whole and of the same training, a shrink that fits. ValueError in one
    line otherwise."""
    if not isinstance(save_state, bool):
        raise ValueError(f"save_state must be True or False (got {save_state!r})")
    failures = FailurePolicy(checkpoint_every=checkpoint_every, on_failure=on_failure, max_failures=max_failures,
                             fault=fault)
    failures.check_run(config)
    plan = check_switches(switch, config.steps) if switch is not None else []
    settings = {**settings, "strategy": config.strategy.value, "workers": config.workers}
    chain = [settings]
    for _, change in plan:
        chain.append(with_switch(chain[-1], change))
    starts = [0] + [step for step, _ in plan]
    ends = starts[1:] + [config.steps]
    for segment, start, end in zip(chain, starts, ends):
        if not plan:
            break  # one segment: the run itself, checked as a run
        # every layout moves its state by name: what can fail is the settings, as run_segments makes them
        try:
            check_run(engines, **segment_settings(segment, end - start, config.warmup_steps))
        except ValueError as e:
            raise ValueError(f"the segment from step {start} ({end - start} step(s)): {e}") from None
    if failures.on_failure is OnFailure.SHRINK:
        check_shrink(engines, chain, config, failures.max_failures)
    state_in, first = check_resume(runs_dir, resume, config) if resume is not None else (None, 0)
    return Continuation(plan, settings, state_in, first, failures)


def check_shrink(engines: EngineFacts, chain: list[dict[str, Any]], config: RunConfig, max_failures: int) -> None:
    """``on_failure="shrink"``: every segment's layout must go on with each worker count a
    death may leave it (one fewer per death, down to 1), with the same global batch."""
    if config.workers < 2:
        raise ValueError("on_failure='shrink' needs 2 workers or more: use on_failure='resume' on 1")
    for settings in chain:
        workers = settings.get("workers", config.workers)
        for left in range(workers - 1, max(workers - 1 - max_failures, 0), -1):
            try:
                check_run(engines, **{**with_switch(settings, {"workers": left}), "steps": 2, "warmup_steps": 1})
            except ValueError as e:
                raise ValueError(f"on_failure='shrink' cannot go on with {left} worker(s) of "
                                 f"{run_label(settings, workers)}: {e}") from None


def check_resume(runs_dir: Any, run_id: Any, config: RunConfig) -> tuple[str, int]:
    """The saved state a run continues from: its folder and the steps it had made. ValueError
    in one line when it is missing, damaged or of another training (model, batch, lr, seed)."""
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"resume takes the id of a run saved with save_state=True (got {run_id!r})")
    folder = state_folder(runs_dir, run_id)
    if not folder.is_dir():
        raise ValueError(f"run {run_id} has no saved state in {runs_dir} (a run saves it with save_state=True)")
    try:
        facts = json.loads((folder / STATE_FACTS).read_text())
        steps_done, saved = int(facts["steps_done"]), dict(facts["settings"])
        if not (folder / ".metadata").is_file():
            raise ValueError("DCP's .metadata is missing")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"the saved state of run {run_id} is damaged or incomplete ({' '.join(str(e).split())}); "
                         "it cannot be resumed") from None
    asked = config.describe()
    for key in CARRIED:
        if saved.get(key) != asked.get(key):
            raise ValueError(f"resume goes on with run {run_id}'s training, so {key} must be its "
                             f"{saved.get(key)!r} (got {asked.get(key)!r})")
    return str(folder), steps_done
