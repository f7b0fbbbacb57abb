"""``parakit.advise``: predict, then measure. Rank every configuration of a model on a worker
count and a hardware (the current engines, or a preset), from a calibration on the engines and
the cost model of ``advisor/costs.py``; optionally run the top ones and compare.

Every input is checked before an engine is touched (``check_request``), so the CLI and the
magic refuse mistakes in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from parakit.advisor.calibrate import STATISTICS, Plan, calibrate, engines_hardware, model_text, plan_for
from parakit.advisor.candidates import COMPRESSIONS, PRECISIONS, STRATEGIES, candidates, rank, worker_counts
from parakit.advisor.costs import estimate
from parakit.advisor.hardware import Hardware, hardware_from
from parakit.advisor.inputs import Calibration
from parakit.advisor.method import method_text
from parakit.advisor.pricing import priced
from parakit.advisor.verify import projections, verify
from parakit.config.choices import check_int
from parakit.config.prices import Prices, check_prices
from parakit.config.run import RunConfig, Strategy
from parakit.config.levers import Compression, Precision, check_cpu_precision
from parakit.records.advice import Advice, save_advice
from parakit.records.result import new_run_id, now_iso
from parakit.records.store import DEFAULT_RUNS_DIR
from parakit.session.preflight import RUN_SETTINGS, EngineFacts, check_config, engines_here
from parakit.config.hosts import usable_cores

ENGINES = ("engines", "current", "current engines")
# What the advisor varies itself: given as settings, they would fix what it is asked to choose.
VARIED = {"strategy": "strategies", "precision": "precisions", "compression": "compressions",
          "schedule": "strategies", "microbatches": "strategies", "hybrid": "strategies", "mesh": "strategies",
          "sync": None, "workers": None, "steps": None}
MAX_WORKERS = 1024


@dataclass(frozen=True)
class Request:
    """The checked inputs of one ``advise`` call."""

    workers: int
    hardware: Hardware | None
    """None: the current engines."""
    base: dict[str, Any]
    """The settings every run shares: model, its options, data, batch, steps, ..."""
    precisions: list[str] | None
    """None: every precision the device has."""
    compressions: list[str]
    strategies: list[str]
    verify: bool
    top: int
    project_to: int
    statistic: str
    """Which step of a run stands for it: "median" or "min" (STATISTICS)."""
    rank_by: str = "time"
    """"time" (fastest first) or "cost" (cheapest per sample first)."""
    prices: Prices | None = None
    """What a device-hour costs; None: the session's, else the shipped table's."""


def check_request(model: Any = "mlp", *, workers: Any = 2, hardware: Any = "engines", verify: Any = False,
                  top: Any = 3, project_to: Any = 64, precisions=None, compressions=None, strategies=None,
                  steps: Any = 10, statistic: Any = "median", rank_by: Any = "time", prices: Any = None,
                  **settings: Any) -> Request:
    """Check ``advise``'s inputs without touching an engine.

    Raises:
        ValueError: one line naming what is wrong and what to give instead.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be an integer from 1 to {MAX_WORKERS} (got {workers!r})")
    chosen = None if hardware is None or (isinstance(hardware, str) and hardware.strip().lower() in ENGINES) \
        else hardware_from(hardware)
    if not isinstance(verify, bool):
        raise ValueError(f"verify must be True or False (got {verify!r})")
    if verify and chosen is not None:
        raise ValueError(f"verify runs the top configurations on the current engines, not on {chosen.name}; "
                         "use hardware='engines' to verify (or leave verify out)")
    check_int("top", top, 1)
    check_int("project_to", project_to, 1)
    if project_to > MAX_WORKERS:
        raise ValueError(f"project_to must be at most {MAX_WORKERS} (got {project_to})")
    check_int("steps", steps, 2)
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)} (got {statistic!r})")
    if rank_by not in ("time", "cost"):
        raise ValueError(f"rank_by must be time or cost (got {rank_by!r})")
    for name in sorted(settings):
        if name in VARIED:
            instead = VARIED[name]
            raise ValueError(f"advise chooses {name} itself" + (f"; narrow it with {instead}=[...]" if instead else
                             f"; give {name} as advise's own argument" if name != "sync" else ""))
        if name not in RUN_SETTINGS:
            raise ValueError(f"unknown setting {name!r}; the settings are: {', '.join(sorted(RUN_SETTINGS - set(VARIED)))}")
    base = {"model": model, **settings, "steps": steps}
    base.setdefault("warmup_steps", min(2, steps - 1))
    RunConfig(**base, strategy="single", workers=1)  # the model, its options, data and batch
    return Request(
        workers=workers, hardware=chosen, base=base,
        precisions=None if precisions is None else [Precision.parse(p, "precision").value for p in _list(precisions)],
        compressions=[str(Compression.parse(c)) for c in _list(compressions or COMPRESSIONS)],
        strategies=[Strategy.parse(s, "strategy").value for s in _list(strategies or STRATEGIES)],
        verify=verify, top=top, project_to=project_to, statistic=statistic, rank_by=rank_by,
        prices=None if prices is None else check_prices(prices),
    )


def advise(model: Any = "mlp", *, workers: int = 2, hardware: Any = "engines", session=None,
           verify: bool = False, top: int = 3, project_to: int = 64, precisions=None, compressions=None,
           strategies=None, device: str | None = None, gpus: list[int] | None = None,
           runs_dir: str | os.PathLike | None = None,
           steps: int = 10, statistic: str = "median", progress: bool | None = None,
           calibration: Calibration | dict | None = None, engines: str | None = None, profile: str | None = None,
           cluster_id: str | None = None, ifname: str | None = None, link: str | None = None,
           rank_by: str = "time", prices: Prices | None = None, **settings: Any) -> Advice:
    """Rank every configuration of ``model`` on ``workers`` workers by predicted step time, or
    by predicted cost per 1000 samples.

    Example:
        >>> with parakit.Session(workers=2, device="cpu") as s:
        ...     advice = parakit.advise("gpt", workers=2, session=s, verify=True)
        >>> advice.frame().head()

    Args:
        model: "mlp", "cnn", "gpt" or a zero-argument callable returning an nn.Module.
        workers: the worker count to advise for (1 to 1024).
        hardware: "engines" (the current engines, measured), a preset ("h100-nvlink", "h100-ib",
            "a100-pcie", "cpu-ethernet") or a dict: peak_tflops, memory_gib, alpha_s,
            beta_bytes_per_s (and ranks_per_node, network_alpha_s, network_beta_bytes_per_s).
        session: the Session whose engines calibrate (and verify), and whose run store keeps
            the runs and the advice; default: one started for this call (``workers`` engines
            for "engines", else 1) and stopped after it. With a session, the arguments that
            say how engines start (device, gpus, engines, profile, cluster_id, ifname, link,
            progress) are the session's: giving one is refused (ValueError), not ignored, and
            so is a ``runs_dir`` other than the session's own.
        verify: run the ``top`` configurations the engines can run and compare.
        top: configurations verified, and projected.
        project_to: the largest worker count of the projection (powers of 2 up to it).
        precisions, compressions, strategies: what to try (default: all the device has).
        device, gpus: the engines' device and GPUs when this call starts them (as Session;
            default "auto" and every GPU).
        runs_dir: the run store; calibration and verification runs and the advice go there
            (default ./parakit-runs; with a session, its own).
        steps: steps of every calibration and verification run (2 are warm-up).
        statistic: which step time of a run counts, in calibration and verification alike:
            "median" (the runs' step_time_s) or "min" (their fastest step: on a machine shared
            with other work, the step no other process slowed down).
        progress: print each run's progress (when this call starts the engines; default True).
        calibration: a Calibration (or its dict, from a saved advice) to predict from instead
            of calibrating again; then no engine is needed unless ``verify``.
        engines, profile, cluster_id, ifname, link: how the engines start when this call starts
            them, as Session takes them (default "local"; mpi, slurm, ssh, attach; a simulated link).
        rank_by: "time" (fastest first) or "cost" (cheapest per 1000 samples first: the
            devices a configuration holds for that long, at a price per device-hour). By cost
            it weighs 1, 2, 4 ... up to ``workers`` workers: on one count every configuration
            holds the same devices, so cost would only follow time.
        prices: a parakit.Prices to cost configurations (and verifying runs) with; default
            the session's, else the price table shipped with parakit.
        **settings: what every run shares: model_options, batch_size, data, loss, lr, seed, ...

    Returns:
        The Advice (also saved in ``runs_dir/advice/``); its ``method`` names every constant
        the cost model assumed for these predictions.

    Raises:
        ValueError: if an input is wrong, or an engine argument is given with ``session``
            (before any engine is touched).
    """
    request = check_request(model, workers=workers, hardware=hardware, verify=verify, top=top,
                            project_to=project_to, precisions=precisions, compressions=compressions,
                            strategies=strategies, steps=steps, statistic=statistic, rank_by=rank_by,
                            prices=prices, **settings)
    where = _engine_arguments(session, device=device, gpus=gpus, runs_dir=runs_dir, engines=engines,
                              profile=profile, cluster_id=cluster_id, ifname=ifname, link=link, progress=progress)
    calibration = _checked_calibration(calibration, request)
    own = session is None and (calibration is None or request.verify)
    progress = where.pop("progress", True)
    size = request.workers if request.hardware is None else 1
    # Without engines of its own (a saved calibration) the advice needs only this machine's devices.
    here = session.preflight() if session is not None else engines_here(workers=size if own else 1, **where)
    # Engines started elsewhere (mpi, slurm, ssh, attach) say which device they have only once
    # they are up; local ones are known from this machine, so their checks come first.
    remote = own and not here.local
    # Only now, and only here: building the model's shape needs torch, which the checks above
    # (and ``import parakit.advisor``) do not.
    from parakit.engine.shape import model_shape

    shape = model_shape(RunConfig(**request.base, strategy="single", workers=1))
    if not remote:
        precisions, found, refused = _candidates(request, calibration, here)
    if own:
        from parakit.session.session import Session  # only now: the checks above need no engine

        session = Session(size, progress=progress, **where)
    try:
        if remote:
            precisions, found, refused = _candidates(request, calibration, session.preflight())
        return _advise(request, session, shape, found, refused, precisions, calibration, where["runs_dir"])
    finally:
        if own:
            session.close()


def _engine_arguments(session, **given: Any) -> dict[str, Any]:
    """The engine arguments to start engines with (those left out at Session's defaults, the
    run store at ./parakit-runs). With a session they are the session's: one given anyway would
    be ignored, so it is refused in one line (a ``runs_dir`` that is the session's own is not).

    Raises:
        ValueError: naming the arguments the session makes moot.
    """
    given = {name: value for name, value in given.items() if value is not None}
    if session is None:
        return {"runs_dir": DEFAULT_RUNS_DIR, **given}
    if "runs_dir" in given and os.path.abspath(given["runs_dir"]) == os.path.abspath(session.runs_dir):
        given.pop("runs_dir")
    if given:
        raise ValueError(f"session= brings its own engines and run store, so {', '.join(sorted(given))} would be "
                         "ignored; give them to the Session, or leave session out")
    return {"runs_dir": session.runs_dir}


def _candidates(request: Request, calibration, engines: EngineFacts):
    """(precisions, the candidates, those refused with why); ValueError when none is left."""
    precisions = _precisions(request, calibration, engines)
    found, refused = [], []
    for workers in worker_counts(request.workers, request.rank_by):
        more, why = candidates(workers, request.base, precisions, request.compressions, request.strategies)
        found, refused = found + more, refused + why
    if request.hardware is None:  # what these engines cannot run (a pipeline on a shared GPU)
        found, refused = _runnable_here(found, refused, engines)
    if not found:
        raise ValueError(f"no configuration of {request.workers} worker(s) fits these settings, e.g. "
                         f"{refused[0][1] if refused else 'none to try'}")
    return precisions, found, refused


def _runnable_here(found, refused, engines: EngineFacts):
    keep = []
    for c in found:
        try:
            check_config(engines, c.config)
        except ValueError as e:
            refused.append((c.settings, str(e)))
        else:
            keep.append(c)
    return keep, refused


def _advise(request: Request, session, shape, found, refused, precisions, cal, runs_dir) -> Advice:
    engines = request.hardware is None
    if cal is None:
        plan = plan_for([c.config for c in found]) if engines else \
            Plan(precisions=["fp32"] if not session.gpus else precisions)
        cal = calibrate(session, request.base, shape, plan, measure_links=engines, statistic=request.statistic)
    hw = engines_hardware(cal, usable_cores()) if engines else request.hardware
    prices = request.prices or (session.prices if session is not None else Prices())
    # On the engines, ranks share their GPUs as the engines do (engine i on GPU i % G).
    gpus = len(session.gpus) if engines and session is not None and session.gpus else None
    estimates, cost_method = priced([estimate(c.config, shape, cal, hw, c.settings) for c in found], hw, cal,
                                    prices, gpus)
    estimates = rank(estimates, request.rank_by)
    advice = Advice(advice_id=f"advice-{new_run_id()}", created_at=now_iso(), workers=request.workers,
                    hardware=hw, shape=shape, calibration=cal, estimates=estimates, refused=refused,
                    rank_by=request.rank_by, cost_method=cost_method,
                    method=method_text(cal, hw, [c.config for c in found]))
    if request.verify:
        advice.verified = verify(session, request.base, estimates, request.top, request.statistic, prices)
    advice.projections = projections(request.base, request.top, request.project_to, shape, cal, hw, estimates,
                                     advice.verified)
    save_advice(advice, runs_dir)
    return advice


def _checked_calibration(calibration: Any, request: Request) -> Calibration | None:
    if isinstance(calibration, dict):
        calibration = Calibration.from_dict(calibration)
    elif calibration is not None and not isinstance(calibration, Calibration):
        raise ValueError(f"calibration must be a Calibration or its dict (got {type(calibration).__name__})")
    if calibration is None:
        return None
    if calibration.statistic != request.statistic:
        raise ValueError(f"this calibration reads each run's {calibration.statistic} step; "
                         f"use statistic='{calibration.statistic}' with it")
    # Its compute figures are its model's; only a preset predicted from a CPU calibration
    # (by FLOPs at the preset's peak) does not use them.
    own = request.hardware is None or calibration.device == "gpu"
    if own and calibration.model != model_text(request.base):
        raise ValueError(f"this calibration measured {calibration.model!r}, not {model_text(request.base)!r}; "
                         "calibrate again for this model (leave calibration out)")
    return calibration


def _precisions(request: Request, calibration, engines: EngineFacts) -> list[str]:
    """The precisions to try: those asked for, else all the device has; CPU engines refuse the
    GPU-only ones (as runs would)."""
    if request.hardware is not None:
        kind = request.hardware.device
    elif calibration is not None:
        kind = calibration.device
    else:
        kind = "gpu" if engines.gpus else "cpu"
    precisions = request.precisions or list(PRECISIONS[kind])
    if request.hardware is None and kind == "cpu":
        for q in precisions:
            check_cpu_precision(Precision(q))
    return precisions


def _list(value: Any) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"expected a list, e.g. ['fp32', 'bf16'] (got {value!r})")
