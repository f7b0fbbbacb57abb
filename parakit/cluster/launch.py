"""Ship a run to the engines, follow its progress, and bring back what each rank measured."""

from __future__ import annotations

import re
import signal
from concurrent import futures
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipyparallel import error as ipp_error

from parakit.cluster.controller import end_if_controller_lost
from parakit.cluster.engines import EngineSet
from parakit.cluster.hangs import diagnose, name_a_death
from parakit.cluster.placement import EngineInfo
from parakit.config.run import RunConfig
from parakit.config.switch import Segment
from parakit.engine import preload, process_group
from parakit.engine.payload import pack
from parakit.records.commbench import CommBenchFigures
from parakit.records.rank import RankReport
from parakit.records.result import FAILED, OK, STOPPED

POLL_S = 0.2
PEER_GRACE_S = 2.0  # after a rank fails, how long its peers get to fail by themselves
STOP_GRACE_S = 5.0  # after a failure or interrupt, how long the other ranks get to stop
STARTUP_S = 60.0  # the least a run gets to send its first progress (see _allowed)
ABORT_WAIT_S = 1.0  # how long a stop waits for the engines to drop tasks not yet started


@dataclass
class Outcome:
    status: str
    rank_results: list[Any] = field(default_factory=list)
    """Per rank, what it returned: a training run's RankReport, a benchmark's figures, a cell's
    output (see ``run_code``); None where a rank returned nothing (it raised, or its engine died).
    Empty when no rank returned anything."""
    error: str | None = None
    engines_unusable: bool = False
    """True when some rank did not stop: its engine may be stuck in a collective."""
    engines: list[EngineInfo] = field(default_factory=list)
    """The run's engines in rank order, as they were when it started."""


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
    stop: threading.Event | None = None,
    hang_timeout_s: float | None = None,
    segment: Segment | None = None,
    switch: threading.Event | None = None,
) -> Outcome:
    """Run ``config`` on the first ``config.workers`` engines; one AsyncResult per rank, so a
    failure on one rank is seen while the others still run. Setting ``stop`` (from another
    thread) stops every rank within a poll and a few seconds, as Ctrl-C does; setting
    ``switch`` ends the run the same way, with its state saved to ``segment.state_out``."""
    token = uuid.uuid4().hex  # names this run's stop agreement in the process group's store
    # preload.train, not engine.train.train: shipping it needs no torch here (see engine/preload.py)
    return run_on_ranks(engines, config.workers, preload.train, (pack(config), token, segment), on_progress,
                        stop, hang_timeout_s, switch)


def run_on_ranks(
    engines: EngineSet,
    world: int,
    fn: Callable[..., Any],
    args: tuple,
    on_progress: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    hang_timeout_s: float | None = None,
    switch: threading.Event | None = None,
) -> Outcome:
    """Call ``fn(*args)`` on the first ``world`` engines (ranks 0..world-1) and follow it: rank
    0's published progress goes to ``on_progress``; a rank that fails, Ctrl-C, or ``stop``
    stops the others, and so does no progress for ``hang_timeout_s`` (a hang: the error says
    where each rank is). Returns every rank's result when all succeed."""
    if stop is not None and stop.is_set():
        return Outcome(STOPPED, error="stopped on request before it started")
    ranked = engines.ranks(world)  # as they are now: the set may change under a run (an engine dies)
    ids = [e.engine_id for e in ranked]
    pending = {rank: engines.client[e].apply_async(fn, *args) for rank, e in enumerate(ids)}
    try:
        outcome = _follow(engines, ranked, pending, on_progress, stop, hang_timeout_s, switch)
    except KeyboardInterrupt:
        outcome = _stop_others(engines, ids, pending, STOPPED)
    except Exception as e:  # noqa: BLE001 - a run returns what it made, whatever broke around it
        # The controller gone, an engine's record changed under us: whatever the watch itself
        # hit, the ranks' results so far are kept and the run is reported as failed.
        outcome = _watch_failed(engines, ids, pending, e)
    outcome.engines = ranked
    if outcome.status == FAILED and (named := name_a_death(engines, ranked)):  # gloo ended a rank: say why first
        outcome.error = "\n".join(filter(None, [named, outcome.error]))
    return outcome


def _follow(engines: EngineSet, ranked: list[EngineInfo], pending: dict, on_progress, stop, hang_timeout_s,
            switch=None) -> Outcome:
    """The watch over a launched run; see ``run_on_ranks``. Only this decides the run's end:
    engines are replaced after it returns (``Session._after``), never while it watches."""
    ids, world = [e.engine_id for e in ranked], len(ranked)
    seen, moved, switch_sent = None, time.monotonic(), False
    while not all(ar.ready() for ar in pending.values()):
        if (lost := end_if_controller_lost(engines, ranked, seen)) is not None:  # nothing can come back
            return Outcome(FAILED, error=lost, engines_unusable=True)
        if stop is not None and stop.is_set():
            return _stop_on_request(engines, ids, pending)
        # A switch is signalled once rank 0 has made a step: every rank is then inside the run,
        # where SIGUSR2 asks for the agreed end (and not yet between tasks, where it is ignored).
        if switch is not None and switch.is_set() and not switch_sent and (seen or {}).get("step"):
            for engine_id in ids:
                engines.interrupt(engine_id, signal.SIGUSR2)
            switch_sent = True
        progress = pending[0].data if isinstance(pending[0].data, dict) else None
        if progress != seen:
            seen, moved = dict(progress or {}), time.monotonic()
        elif hang_timeout_s is not None and time.monotonic() - moved > _allowed(hang_timeout_s, seen) and world > 1:
            dead = engines.dead_ids(ids)
            if dead:  # not a hang: a rank's engine died, and its peers wait for it
                return _stop_others(engines, ids, pending, FAILED, first=ids.index(dead[0]),
                                    cause=f"rank {ids.index(dead[0])} (engine {dead[0]}): EngineError: its "
                                          f"engine died during the run (the process ended)")
            hung = diagnose(engines, ranked, time.monotonic() - moved)
            outcome = _stop_others(engines, ids, pending, FAILED)
            outcome.error = "\n".join(filter(None, [hung, outcome.error]))
            return outcome
        failed = [r for r, ar in pending.items() if ar.ready() and _failed(ar)]
        if failed:
            return _stop_others(engines, ids, pending, FAILED, first=failed[0])
        # Wait on a rank still running, so the loop ends as soon as the run does (all may be done by now).
        next((ar for ar in pending.values() if not ar.ready()), pending[0]).wait(POLL_S)
        if on_progress is not None and isinstance(pending[0].data, dict) and pending[0].data:
            on_progress(dict(pending[0].data))
    failed = [r for r, ar in pending.items() if _failed(ar)]
    if failed:
        return _stop_others(engines, ids, pending, FAILED, first=failed[0])
    return Outcome(OK, [pending[r].get() for r in sorted(pending)])


def _allowed(hang_timeout_s: float, seen: dict | None) -> float:
    """How long progress may stand still. Before rank 0's first message the ranks import torch,
    build the model and form the group: on a loaded machine, or with engines just replaced,
    that alone can take longer than a short hang timeout, so it gets at least STARTUP_S (a
    group that never forms is also caught by the process group's own timeout)."""
    return hang_timeout_s if seen else max(hang_timeout_s, STARTUP_S)


def _watch_failed(engines: EngineSet, ids: list[int], pending: dict, error: BaseException) -> Outcome:
    """The run's end when watching it failed: stop what still runs, keep what came back."""
    cause = f"the run's watch failed: {type(error).__name__}: {error}"
    try:
        outcome = _stop_others(engines, ids, pending, FAILED)
        outcome.error = "\n".join(filter(None, [cause, outcome.error]))
        return outcome
    except Exception:  # noqa: BLE001 - even stopping failed: keep what is there, say so
        kept = [_returned(ar) for _, ar in sorted(pending.items())]
        return Outcome(FAILED, kept if any(kept) else [], error=cause, engines_unusable=True)


def _failed(ar) -> bool:
    """A rank failed: it raised, or it returned what it measured with the error that ended it."""
    return not ar.successful() or _error_of(ar.get(0)) is not None


def _returned(ar) -> Any:
    """What a finished rank returned (a RankReport, a benchmark's CommBenchFigures), or None."""
    if not (ar.ready() and ar.successful()):
        return None
    result = ar.get(0)
    return result if isinstance(result, (RankReport, CommBenchFigures)) else None


def _error_of(result: Any) -> str | None:
    """The error a rank returned beside its measurements (only a training run's report has one)."""
    return result.error if isinstance(result, RankReport) else None


def _steps_made(result: Any) -> int:
    return len(result.step_time_s) if isinstance(result, RankReport) else 0


def _stop_others(engines: EngineSet, ids: list[int], pending: dict, status: str, first: int | None = None,
                 cause: str | None = None) -> Outcome:
    """Interrupt the ranks still running and collect what went wrong, and what every rank that
    returned had measured (a failed rank returns its completed steps with its error). ``cause``
    leads the error text when the watch already knows it (an engine that died)."""
    # A rank whose engine process is gone returns nothing: waiting for ipyparallel to say so
    # (its heartbeat: seconds) would only delay the run's end, and a recovery (session/recovery.py).
    gone = {r for r in pending if ids[r] in set(engines.dead_ids(ids))} if status == FAILED else set()
    if status == FAILED:
        # Peers of a failed rank usually fail by themselves within moments (their collective
        # broke) and return their own steps and error; interrupting them at once would turn
        # those into a bare KeyboardInterrupt.
        deadline = time.monotonic() + PEER_GRACE_S
        for rank, ar in pending.items():
            if rank not in gone:
                ar.wait(max(0.0, deadline - time.monotonic()))
    for rank, ar in pending.items():
        if not ar.ready() and rank not in gone:
            engines.interrupt(ids[rank])
    deadline = time.monotonic() + STOP_GRACE_S
    for rank, ar in pending.items():
        if rank not in gone:
            ar.wait(max(0.0, deadline - time.monotonic()))
    errors = [cause] if cause else []
    # A rank whose engine died is the cause; else the rank that failed first. The others'
    # errors are mostly their echo (a collective broken by the peer that left).
    unreported = {r for r in gone if not pending[r].ready()}
    died = {r for r, ar in pending.items() if ar.ready() and not ar.successful() and _engine_died(ar)} | unreported
    echoes = {r for r, ar in pending.items() if ar.ready() and _broken_by_peer(ar)}
    order = sorted(pending, key=lambda r: (r not in died, r in echoes, r != first, r))
    for rank in order:
        ar = pending[rank]
        if rank in unreported and not (cause and rank == first):
            errors.append(f"rank {rank} (engine {ids[rank]}): EngineError: its engine died during the run "
                          "(the process ended)")
        if not ar.ready() or (cause and rank == first):
            continue
        try:
            result = ar.get(0)
        except Exception as e:  # noqa: BLE001 - each rank's error is reported, whatever it is
            if status == FAILED and _is_interrupt(e):
                continue  # a rank we stopped ourselves is not news
            errors.append(describe_error(rank, ids[rank], e))
            continue
        if _error_of(result):
            errors.append(f"rank {rank} (engine {ids[rank]}): {_error_of(result)}")
    kept = [_returned(pending[rank]) for rank in sorted(pending)]
    stuck = [rank for rank, ar in pending.items() if not ar.ready() and rank not in gone]
    if stuck:
        errors.append(f"ranks {stuck} did not stop within {STOP_GRACE_S:.0f} s; their engines are restarted")
    # A stop that every rank honoured after the same step (see engine.stopping) leaves each
    # rank's measurements of the steps it made: they are kept, not thrown away.
    if status == STOPPED and not all(kept):
        kept = []
    if status == STOPPED and not errors:
        steps = _steps_made(kept[0]) if kept else 0
        errors.append(f"interrupted by the user after {steps} steps" if kept else "interrupted by the user")
    return Outcome(status, kept if any(kept) else [], error="\n".join(errors) or None, engines_unusable=bool(stuck))


PEER_GONE = ("Connection closed by peer", "Connection reset by peer")  # gloo, when a peer left


def _broken_by_peer(ar) -> bool:
    """The rank failed only because a peer left the collective: an echo, not the cause."""
    try:
        text = _error_of(ar.get(0))
    except ipp_error.RemoteError as e:
        text = f"{e.evalue}"
    except Exception:  # noqa: BLE001 - not an echo we can tell
        return False
    return bool(text) and any(p in text for p in PEER_GONE)


def _engine_died(ar) -> bool:
    try:
        ar.get(0)
    except ipp_error.EngineError:
        return True
    except ipp_error.RemoteError as e:  # how the client reports a task whose engine died
        return e.ename == "EngineError"
    except Exception:  # noqa: BLE001 - any other error is the rank's own
        return False
    return False


def _is_interrupt(e: BaseException) -> bool:
    return isinstance(e, ipp_error.RemoteError) and e.ename == "KeyboardInterrupt"


def _stop_on_request(engines: EngineSet, ids: list[int], pending: dict) -> Outcome:
    """Stop asked for from another thread (``Session.stop``, a panel's Stop button).

    An engine ignores SIGINT while it is idle, so a task that has not started yet would run
    on regardless: such tasks are aborted first, then the running ones are interrupted.
    """
    progress = pending[0].data if isinstance(pending[0].data, dict) else {}
    waiting = [ar for ar in pending.values() if not ar.ready()]
    if waiting:  # not block=True: an engine whose nanny (its control channel) is gone never answers
        futures.wait([engines.client.abort(waiting, targets=ids, block=False)], timeout=ABORT_WAIT_S)
    outcome = _stop_others(engines, ids, pending, STOPPED)
    where = f" (last progress seen: step {progress['step']} of {progress['steps']})" if progress.get("step") else ""
    # What the ranks raised is the stop itself: an interrupt, an aborted task, or a collective
    # cut short by a peer that stopped first. Only ranks that did not stop are news.
    kept = outcome.rank_results
    errors = [f"stopped on request after {_steps_made(kept[0])} steps" if kept else f"stopped on request{where}"]
    if outcome.engines_unusable:
        errors.append(outcome.error.splitlines()[-1])  # which ranks did not stop
    outcome.error = "\n".join(errors)
    return outcome


# -- code from a notebook cell --------------------------------------------------------------
CODE_GRACE_S = 5.0  # after one rank fails, how long the others get before they are interrupted


def run_code(engines: EngineSet, code: str, world: int, names: dict[str, Any] | None = None) -> Outcome:
    """Run a cell's code on the first ``world`` engines, each in its own namespace with
    ``rank``, ``world_size`` and ``device`` defined (the process group is the caller's), and
    ``names``: objects packed as a run's own model is (payload.pack), so that a class defined
    in a notebook cell travels by value and its tracebacks name the cell.

    Returns:
        An Outcome whose ``rank_results`` hold, per rank: rank, engine_id, stdout, stderr,
        result (the text of the last expression's value, or None) and error (a RemoteError or
        None). A rank that fails leaves the process group at once, so ranks waiting for it in
        a collective fail too instead of waiting out the group's timeout; any still running
        CODE_GRACE_S later are interrupted. Status is then FAILED, and the group must be formed
        afresh.
    """
    import torch  # each rank's ``device``: a cell needs torch here, a run does not (see ``launch``)

    ids = engines.ids(world)
    packed = pack(names) if names else None
    for rank, info in enumerate(engines.ranks(world)):
        given = {"rank": rank, "world_size": world, "device": torch.device(info.device)}
        engines.client[info.engine_id].push(given, block=False)
        if packed is not None:
            engines.client[info.engine_id].apply_sync(_define, packed)
    pending = {rank: engines.client[e].execute(code, silent=False, block=False) for rank, e in enumerate(ids)}
    status, failed_at, left = OK, None, set()
    try:
        while not all(ar.ready() for ar in pending.values()):
            for rank, ar in pending.items():
                if rank not in left and ar.ready() and not ar.successful():
                    left.add(rank)
                    engines.client[ids[rank]].apply_async(process_group.leave, True)
                    failed_at = failed_at or time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > CODE_GRACE_S:
                status = FAILED
                break
            next(ar for ar in pending.values() if not ar.ready()).wait(POLL_S)
    except KeyboardInterrupt:
        status = STOPPED
    stuck = []
    if status != OK:
        outcome = _stop_others(engines, ids, pending, status)
        stuck = [rank for rank, ar in pending.items() if not ar.ready()]
    ranks = [_cell_output(rank, ids[rank], pending[rank]) for rank in sorted(pending)]
    if status == OK and any(r["error"] is not None for r in ranks):
        status = FAILED
    error = outcome.error if stuck else None
    return Outcome(status, ranks, error=error, engines_unusable=bool(stuck))


def _define(packed: bytes) -> None:
    """On an engine: the names a cell was given, in its namespace (as ``push`` puts them)."""
    from IPython import get_ipython

    from parakit.engine.payload import unpack

    get_ipython().user_ns.update(unpack(packed))


def _cell_output(rank: int, engine_id: int, ar) -> dict[str, Any]:
    out = {"rank": rank, "engine_id": engine_id, "stdout": "", "stderr": "", "result": None, "error": None}
    if not ar.ready():
        out["error"] = RuntimeError("did not stop")
        return out
    try:
        ar.wait_for_output(timeout=2)  # streams can trail the reply by a moment
    except Exception:  # noqa: BLE001 - output is best effort; the reply itself has arrived
        pass
    out["stdout"], out["stderr"] = ar.stdout or "", ar.stderr or ""
    try:
        reply = ar.get(0)
        value = (reply.execute_result or {}).get("data", {}).get("text/plain")
        out["result"] = value
    except Exception as e:  # noqa: BLE001 - the rank's own error, shown under its rank
        out["error"] = e
    return out
