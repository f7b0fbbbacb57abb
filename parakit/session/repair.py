"""What a session does with its engines after a run that did not end well: form the group
afresh, and replace engines that died, did not stop, or lost their controller.

Kept apart from the facade (session.py) because it is the one place that decides how engines
are repaired: every run, benchmark and cell ends through ``after_run``.
"""

from __future__ import annotations

from typing import Any

from parakit.cluster.controller import controller_alive
from parakit.records.result import OK
from parakit.session.progress import note


def after_run(session: Any, outcome) -> str | None:
    """After a failure or stop: form the group afresh (a rank may have left mid-collective),
    and replace engines that died or did not stop. Returns what was done, or None."""
    if outcome.status == OK:
        return None
    engines = session._engines
    engines.group = None
    dead = engines.dead()
    if not dead and not outcome.engines_unusable:
        return None
    order = engines.ranks(engines.size)
    ranks = sorted(order.index(engines.engines[p]) for p in dead)
    which = f"engine(s) of rank(s) {ranks} died" if dead else "some ranks did not stop"
    if not controller_alive(engines):
        which = "the controller ended"  # its engines were ended with it: they could serve no one
    if not session.auto_restart and not outcome.engines_unusable:
        session._broken = f"{which}; call session.restart() (or %parakit restart) to replace them"
        return session._broken
    before = engines.pids()
    restart_engines(session)
    message = f"{which}; every engine was restarted (pids {before} -> {session._engines.pids()})"
    note(message)
    return message


def restart_engines(session: Any) -> None:
    """Replace every engine: new engines under the same controller where the session started
    it and it still runs (half the time), else a new controller and new engines."""
    engines = session._engines
    if controller_alive(engines) and engines.replace_all():
        return
    n = engines.size
    engines.close(kill=True)  # they are being replaced: no need to wait for them
    session._engines = session._new_engines()
    session._engines.start(n)
