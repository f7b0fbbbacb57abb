"""A run that survives a lost worker: what it asks for, checked before any engine is touched.

``checkpoint_every=K`` saves the run's state (parameters, optimizer, RNG; the data position is
the step) every K steps in the background; ``on_failure`` says what happens when a rank's
engine dies: the run fails as before ("fail"), goes on from the last complete checkpoint on
the same worker count ("resume"), or on the workers that remain ("shrink"), at most
``max_failures`` times. ``fault="kill:RANK@STEP"`` kills that rank's engine with SIGKILL at
that step of the run: the lever the tests and the notebook use to try it.

Standard library only: session/recovery.py acts on it, engine/background_save.py saves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from parakit.config.choices import Choice, check_int
from parakit.config.levers import CompressionKind, Precision, SyncKind


class OnFailure(Choice):
    FAIL = "fail"  # the run is saved as failed with its steps (and its last checkpoint, to resume=)
    RESUME = "resume"  # the dead engine is replaced; the run goes on from the last checkpoint
    SHRINK = "shrink"  # the run goes on from the last checkpoint on the workers that remain


FAULT = re.compile(r"^\s*kill\s*:\s*(\d+)\s*@\s*(\d+)\s*$")


@dataclass(frozen=True, kw_only=True)
class Fault:
    """A rank's engine killed (SIGKILL, by itself) just before it trains a step of the run."""

    rank: int
    """The rank whose engine dies."""
    step: int
    """The run's step it dies at (counted from the run's first step, as ``steps`` is)."""

    @classmethod
    def parse(cls, text: Any) -> "Fault":
        """'kill:RANK@STEP', e.g. 'kill:1@30'."""
        found = FAULT.match(text) if isinstance(text, str) else None
        if found is None:
            raise ValueError(f"fault must be 'kill:RANK@STEP', e.g. 'kill:1@30' (got {text!r})")
        return cls(rank=int(found.group(1)), step=int(found.group(2)))

    def __str__(self) -> str:
        return f"kill:{self.rank}@{self.step}"


@dataclass(frozen=True, kw_only=True)
class FailurePolicy:
    """What a run does about a lost worker (``Session.run``'s arguments of the same names)."""

    checkpoint_every: int | None = None
    """Save the state every this many steps, in the background; None: no checkpoints (the
    default: a checkpoint costs time and disk in proportion to the model's state)."""
    on_failure: OnFailure = OnFailure.FAIL
    """fail, resume or shrink (see the module's docstring)."""
    max_failures: int = 3
    """At most this many engine deaths are recovered from in one run; the next one fails it."""
    fault: Fault | None = None
    """A kill to inject ('kill:RANK@STEP'), or None."""

    def __post_init__(self) -> None:
        if self.checkpoint_every is not None:
            check_int("checkpoint_every", self.checkpoint_every, 1)
        object.__setattr__(self, "on_failure", OnFailure.parse(self.on_failure, "on_failure"))
        check_int("max_failures", self.max_failures, 1)
        if self.fault is not None and not isinstance(self.fault, Fault):
            object.__setattr__(self, "fault", Fault.parse(self.fault))
        if self.recovers and self.checkpoint_every is None:
            raise ValueError(f"on_failure={self.on_failure.value!r} goes on from the last checkpoint: "
                             "give checkpoint_every=K (steps) too")

    @property
    def recovers(self) -> bool:
        """A death is recovered from (resume or shrink), not the run's end."""
        return self.on_failure is not OnFailure.FAIL

    def check_run(self, config: Any) -> None:
        """This policy against the run's RunConfig: the fault inside the run, and a state the
        checkpoints can hold whole (else a resumed run would not be the same training)."""
        if self.fault is not None:
            if self.fault.rank >= config.workers:
                raise ValueError(f"fault kills rank {self.fault.rank}, but the run has ranks 0-{config.workers - 1}")
            if self.fault.step >= config.steps:
                raise ValueError(f"fault kills at step {self.fault.step}, but the run has steps 0-{config.steps - 1}")
        if self.checkpoint_every is not None:
            unsaved = unsaved_state(config)
            if unsaved:
                raise ValueError(f"checkpoint_every cannot save {unsaved} (a segment starts it afresh), so a "
                                 "run resumed from it would not be the same training; drop checkpoint_every")


def unsaved_state(config: Any) -> str | None:
    """The training state of this run that a DCP checkpoint does not hold, in words, or None.
    config/switch.py lists what a segment starts afresh; these are the ones that change a
    run's result when it restarts mid-run."""
    sync = config.sync.kind
    if sync in (SyncKind.LOCAL_SGD, SyncKind.DILOCO, SyncKind.STREAMING_DILOCO):
        return f"sync {config.sync}'s per-rank parameters and anchor"
    if sync is SyncKind.DELAYED:
        return f"sync {config.sync}'s corrections in flight"
    kind = config.compression.kind
    if kind is CompressionKind.POWERSGD or (kind in (CompressionKind.TOPK, CompressionKind.RANDOMK)
                                           and config.error_feedback):
        return f"compression {config.compression}'s error-feedback residuals"
    if config.precision is Precision.FP16:
        return "fp16's loss scale"
    return None
