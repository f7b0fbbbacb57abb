"""Stopping a run on request (a panel's Stop button, Ctrl-C in the notebook) so that every
rank ends after the same step and the steps made so far are kept.

A KeyboardInterrupt raised wherever SIGINT lands can stop one rank mid-step while a peer is
inside backward, waiting for its gradients; DDP's reducer then waits forever (seen with
py-spy: ``Reducer::finalize_backward`` in a condition wait), which only a restart of the
engines undoes. So during training the signal only marks the stop; the loop asks
``StopRequest.should_stop`` after each optimizer step, and the ranks agree on the step to end
after through the process group's store (the first proposal wins). Before the first step
there is nothing to keep, and the signal raises at once.

A rank can also ask for the stop itself (a loss that diverged: only the ranks that compute a
loss see it). Its peers were not signalled, so while a run may be stopped that way every rank
looks at the agreement in the store every ``CHECK_EVERY`` steps, and the proposal is far enough
ahead (a check and a margin) that every rank has looked before the step it names.

SIGUSR2 asks for the same end, for a switch of settings (``Session.switch``): the ranks agree
on the step the same way, and the run ends there with its state saved, to go on in the new
layout. Before the first step it waits for that step instead of raising. Outside a run the
signal is ignored: SIGUSR2's default action would end the engine.
"""

from __future__ import annotations

import signal
from types import TracebackType

from parakit.engine.divergence import CHECK_EVERY, is_check_step

STOP_MARGIN_STEPS = 2  # a stop ends every rank this many steps after the first to see it


class StopRequest:
    """Installs the SIGINT handler for one run (a context manager) and answers, after each step,
    whether this rank should end the run now.

    Args:
        token: unique per launch; names this run's agreement in the (reused) store.
    """

    def __init__(self, token: str | None, *, watch_peers: bool = False):
        self.key = f"parakit/stop-after/{token}"
        self.enabled = token is not None
        self.watch_peers = watch_peers and self.enabled
        """Look for a stop that a peer asked for (``ask``) every CHECK_EVERY steps."""
        self.reason: str | None = None
        self.steps_done = 0
        self.requested = False
        self.stop_after: int | None = None
        self.switching = False
        """The end was asked for a switch (SIGUSR2): the state is saved and training goes on."""
        self._previous = self._previous_switch = None

    def __enter__(self) -> StopRequest:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
            self._previous_switch = signal.signal(signal.SIGUSR2, self._on_switch)
        return self

    def __exit__(self, kind: type[BaseException] | None, value, tb: TracebackType | None) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
            # a switch asked as the run ended must not find SIGUSR2's default (the engine's end)
            previous = self._previous_switch
            signal.signal(signal.SIGUSR2, signal.SIG_IGN if previous in (None, signal.SIG_DFL) else previous)

    def _on_interrupt(self, signum, frame) -> None:
        if self.steps_done == 0:
            raise KeyboardInterrupt  # still setting up: no step to finish, nothing to keep
        self.requested = True

    def _on_switch(self, signum, frame) -> None:
        self.requested = self.switching = True  # agreed after the next step, even the first

    def ask(self, steps_done: int, reason: str) -> int:
        """This rank asks every rank to stop (its peers see it at their next look). Returns the
        agreed step count to end after."""
        self.reason = self.reason or reason
        if self.stop_after is None:
            self.stop_after = self._agree(steps_done + CHECK_EVERY + STOP_MARGIN_STEPS)
        return self.stop_after

    def should_stop(self, steps_done: int) -> bool:
        """Call after each step, with the number of steps done so far."""
        self.steps_done = steps_done
        if self.stop_after is None and self.requested:
            self.stop_after = self._agree(steps_done + STOP_MARGIN_STEPS)
        if self.stop_after is None and self.watch_peers and is_check_step(steps_done):
            self.stop_after = self._look()
        return self.stop_after is not None and steps_done >= self.stop_after

    def _store(self):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return None  # one rank, no group: nobody to agree with
        return dist.distributed_c10d._get_default_store()  # private: torch has no public getter

    def _look(self) -> int | None:
        """A stop a peer asked for, if any (one round trip to the store)."""
        store = self._store()
        if store is None or not store.check([self.key]):
            return None
        return int(store.get(self.key))

    def _agree(self, proposal: int) -> int:
        """Ranks run within a step of each other, and every rank is signalled at once, so a
        stop a margin ahead of the first rank to see it is ahead of every rank."""
        store = self._store()
        if store is None:
            return proposal
        return int(store.compare_set(self.key, "", str(proposal)))
