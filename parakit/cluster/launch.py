"""Ship a run to the engines, follow its progress, and bring back what each rank measured."""

from __future__ import annotations

import re
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
from ipyparallel import error as ipp_error

from parakit.cluster.engines import EngineSet
from parakit.config import RunConfig
from parakit.engine.train import train
from parakit.records import FAILED, OK, STOPPED

POLL_S = 0.2
STOP_GRACE_S = 10.0  # after a failure or interrupt, how long the other ranks get to stop


@dataclass
class Outcome:
    status: str
    rank_results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    engines_unusable: bool = False
    """True when some rank did not stop: its engine may be stuck in a collective."""


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({paths["stdlib"], paths["purelib"], paths["platlib"]})


def pack(config: RunConfig) -> bytes:
    """cloudpickle the config. A user's callables from a module the engines may not be able to
    import (a test file, a script beside the notebook) travel by value; notebook cells do anyway."""
    roots = _installed_roots()
    by_value = {}
    for obj in (config.model, config.data, config.loss):
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        path = getattr(module, "__file__", None) or ""
        if module and module.__name__ != "__main__" and path and not path.startswith(roots):
            by_value[module.__name__] = module
    # Only modules registered here are unregistered after: a user's own registration stays.
    ours = [m for name, m in by_value.items() if name not in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES]
    for module in ours:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(config)
    finally:
        for module in ours:
            cloudpickle.unregister_pickle_by_value(module)


ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def describe_error(rank: int, engine_id: int, exc: BaseException) -> str:
    if isinstance(exc, ipp_error.RemoteError):
        # Engine tracebacks come coloured for a terminal; a saved run and a notebook want text.
        text = f"rank {rank} (engine {engine_id}): {exc.ename}: {exc.evalue}\n{exc.traceback or ''}"
        return ANSI_COLOURS.sub("", text).rstrip()
    return f"rank {rank} (engine {engine_id}): {type(exc).__name__}: {exc}"


def launch(
    engines: EngineSet,
    config: RunConfig,
    on_progress: Callable[[dict], None] | None = None,
) -> Outcome:
    """Run ``config`` on the first ``config.workers`` engines; one AsyncResult per rank, so a
    failure on one rank is seen while the others still run."""
    payload = pack(config)
    ids = engines.ids(config.workers)
    pending = {rank: engines.client[e].apply_async(train, payload) for rank, e in enumerate(ids)}
    try:
        while not all(ar.ready() for ar in pending.values()):
            failed = [r for r, ar in pending.items() if ar.ready() and not ar.successful()]
            if failed:
                return _stop_others(engines, ids, pending, FAILED)
            # Wait on a rank still running, so the loop ends as soon as the run does.
            next(ar for ar in pending.values() if not ar.ready()).wait(POLL_S)
            if on_progress is not None and isinstance(pending[0].data, dict) and pending[0].data:
                on_progress(dict(pending[0].data))
    except KeyboardInterrupt:
        return _stop_others(engines, ids, pending, STOPPED)
    failed = [r for r, ar in pending.items() if not ar.successful()]
    if failed:
        return _stop_others(engines, ids, pending, FAILED)
    return Outcome(OK, [pending[r].get() for r in sorted(pending)])


def _stop_others(engines: EngineSet, ids: list[int], pending: dict, status: str) -> Outcome:
    """Interrupt the ranks still running and collect what went wrong."""
    for rank, ar in pending.items():
        if not ar.ready():
            engines.interrupt(ids[rank])
    deadline = time.monotonic() + STOP_GRACE_S
    for ar in pending.values():
        ar.wait(max(0.0, deadline - time.monotonic()))
    errors = []
    for rank, ar in sorted(pending.items()):
        if ar.ready() and not ar.successful():
            try:
                ar.get(0)
            except Exception as e:  # noqa: BLE001 - each rank's error is reported, whatever it is
                if status == FAILED and _is_interrupt(e):
                    continue  # a rank we stopped ourselves is not news
                errors.append(describe_error(rank, ids[rank], e))
    stuck = [rank for rank, ar in pending.items() if not ar.ready()]
    if stuck:
        errors.append(f"ranks {stuck} did not stop within {STOP_GRACE_S:.0f} s; their engines are restarted")
    if status == STOPPED and not errors:
        errors.append("interrupted by the user")
    return Outcome(status, error="\n".join(errors) or None, engines_unusable=bool(stuck))


def _is_interrupt(e: BaseException) -> bool:
    return isinstance(e, ipp_error.RemoteError) and e.ename == "KeyboardInterrupt"

