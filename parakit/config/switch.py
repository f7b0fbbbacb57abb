"""Switching settings while a run trains, and carrying a run's state over to a later one.

A switched run is a chain of segments: stretches of steps with the same settings. At each
switch every rank saves the model, optimizer and RNG state with torch.distributed.checkpoint
(DCP), the next segment lays the model out its own way (strategy, workers, precision, ...) and
loads that state resharded, and training goes on at the same global step, on the same global
batch. A resumed run is a chain whose first segment starts from a state saved by an earlier run.

What a segment starts afresh, by design (each named in the docs):
- compression's error-feedback residuals and PowerSGD's low-rank state (they belong to the
  hooks of one layout);
- the sync modes' own state: local SGD's and DiLoCo's anchor (the loaded parameters), DiLoCo's
  outer momentum, delayed averaging's corrections in flight (dropped, as at a run's end);
- fp16's loss scale.

This module is stdlib only: the request is checked here, before any engine is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parakit.config.recovery import Fault
SWITCHABLE = ("strategy", "workers", "precision", "compression", "error_feedback", "sync",
              "outer_lr", "outer_momentum", "schedule", "microbatches", "split", "tp_plan", "mesh", "hybrid",
              "bucket_mb", "zero", "activation_checkpointing")
"""Settings a switch may change. The model, data, batch, lr and seed define the training
itself: changing them would not be the same run going on."""

CARRIED = ("model", "model_options", "data", "loss", "batch_size", "lr", "seed")
"""Settings a resumed run must share with the run it continues."""

STATE_FACTS = "parakit-state.json"
"""Written by rank 0 beside DCP's files once a save is complete: the steps done and the
settings. A state folder without it did not finish saving."""

# Every layout's parameters keep the model's names: a pipeline's stages, traced by
# torch.distributed.pipelining, too ("blocks.1.attn.q.weight" on the stage that holds block 1),
# so each rank saves and loads its share by name (an interleaved rank's two stages as one:
# engine/saved_state.py); the hybrids hold DTensors on a 2-D mesh, or pipeline stages
# replicated, under the same names; ZeRO-1's ranks each write their share of the optimizer
# state under those names too (engine/zero_state.py).


def parse_switch(text: str) -> tuple[int, dict[str, str]]:
    """One ``--switch`` option: "STEP:key=value[,key=value]", e.g. "8:strategy=fsdp,precision=bf16".

    A value that itself has commas (``streaming-diloco:8,2``) is kept whole: a part without
    "=" belongs to the value before it.
    """
    step_text, sep, rest = text.partition(":")
    if not sep or not step_text.strip().isdigit() or not rest.strip():
        raise ValueError(f"a switch is STEP:key=value[,key=value], e.g. 8:strategy=fsdp (got {text!r})")
    settings: dict[str, str] = {}
    last = None
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        if eq:
            last = key.strip()
            settings[last] = value.strip()
        elif last is not None:
            settings[last] += "," + part.strip()
        else:
            raise ValueError(f"a switch is STEP:key=value[,key=value], e.g. 8:strategy=fsdp (got {text!r})")
    return int(step_text), {key: _typed(key, value) for key, value in settings.items()}


def _typed(key: str, text: str) -> Any:
    """A switch's value as the setting takes it: text from a command line made a number or a
    flag where the setting is one (RunConfig checks the value itself)."""
    try:
        if key in ("workers", "microbatches", "zero"):
            return int(text)
        if key in ("outer_lr", "outer_momentum", "bucket_mb"):
            return float(text)
    except ValueError:
        raise ValueError(f"{key} in a switch must be a number (got {text!r})") from None
    if key == "split":  # split points: the commas separate modules here
        return tuple(part.strip() for part in text.split(","))
    if key == "error_feedback":
        if text.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            raise ValueError(f"error_feedback in a switch is true or false (got {text!r})")
        return text.lower() in ("true", "yes", "1", "on")
    return text


def check_switches(switch: Any, steps: int) -> list[tuple[int, dict[str, Any]]]:
    """A switch schedule, {step: {setting: value}}, checked: steps inside the run, in order, and
    only switchable settings. Returns [(step, settings)] sorted by step."""
    if not isinstance(switch, Mapping) or not switch:
        raise ValueError("switch must be a dict {step: {setting: value}}, e.g. {8: {'strategy': 'fsdp'}}")
    plan = []
    for step, settings in switch.items():
        if isinstance(step, str) and step.strip().isdigit():
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int) or not 0 < step < steps:
            raise ValueError(f"a switch's step must be between 1 and {steps - 1}, the run's steps "
                             f"(got {step!r})")
        plan.append((step, check_settings(settings)))
    return sorted(plan, key=lambda p: p[0])


def check_settings(settings: Any) -> dict[str, Any]:
    """What one switch changes: a non-empty dict of switchable settings."""
    if not isinstance(settings, Mapping) or not settings:
        raise ValueError("a switch changes settings given as a dict, e.g. {'precision': 'bf16'}")
    fixed = sorted(set(settings) - set(SWITCHABLE))
    if fixed:
        raise ValueError(f"{fixed[0]} cannot be switched during a run (it would not be the same training); "
                         f"switchable: {', '.join(SWITCHABLE)}")
    return dict(settings)


def segment_settings(settings: dict[str, Any], steps: int, warmup_steps: int) -> dict[str, Any]:
    """A segment's run settings: its own step count, and the run's warm-up where the segment
    has room for it (one step fewer than the segment at most). The one rule the preflight
    checks every segment with and ``run_segments`` launches it with, so a segment that would
    be refused is refused before the first step, never after training."""
    return {**settings, "steps": steps, "warmup_steps": min(warmup_steps, steps - 1)}


def with_switch(settings: dict[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """A segment's settings: the previous segment's with the switch applied. Going to one
    worker means strategy single unless the switch names one; leaving single for more workers
    means ddp; the layout's own settings that no longer apply are dropped."""
    new = {**settings, **change}
    if "strategy" not in change:
        if new.get("workers") == 1 and str(new.get("strategy")) != "single":
            new["strategy"] = "single"
        elif str(new.get("strategy")) == "single" and (new.get("workers") or 1) > 1:
            new["strategy"] = "ddp"
    strategy = str(new.get("strategy"))
    if strategy == "single":  # one worker sends nothing: what synchronised workers goes, unless asked for
        if "compression" not in change:
            new.pop("compression", None), new.pop("error_feedback", None)
        if "sync" not in change and not str(new.get("sync", "every-step")).startswith("accumulate"):
            new.pop("sync", None), new.pop("outer_lr", None), new.pop("outer_momentum", None)
    if strategy != "hybrid":
        new.pop("mesh", None), new.pop("hybrid", None)
    if strategy not in ("pipeline", "hybrid"):
        for key in ("schedule", "microbatches", "split"):
            new.pop(key, None)
    if strategy != "tensor" and strategy != "hybrid":
        new.pop("tp_plan", None)
    if strategy not in ("ddp", "fsdp"):  # SyncBatchNorm syncs a data-parallel layout's slices
        new.pop("sync_batchnorm", None)
    if strategy != "ddp":
        new.pop("bucket_mb", None)
        if new.get("zero") == 1 and "zero" not in change:  # ZeRO-1 is ddp's; fsdp shards by itself
            new.pop("zero")
    return new


PRIMARY = ("strategy", "workers", "precision", "compression", "error_feedback", "sync")
"""What a switch's label always names when it changes; a layout's own settings (a diloco's
outer lr, a pipeline's micro-batches) only where they changed from a value set before."""


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The described settings a switch changed: what a marker on a figure is labelled with."""
    keys = [k for k in after if k not in ("steps", "warmup_steps") and before.get(k) != after.get(k)
            and (k in PRIMARY or k in before)]
    return {k: after[k] for k in keys}


def change_text(change: Mapping[str, Any]) -> str:
    """'fsdp, bf16' or 'workers 1': a switch in a few words, for markers and progress."""
    words = []
    for key, value in change.items():
        words.append(f"{key} {value}" if key in ("workers", "error_feedback", "outer_lr", "outer_momentum")
                     else str(value))
    return ", ".join(words)


@dataclass(frozen=True, kw_only=True)
class Segment:
    """Where one launch sits in a longer training: what the engines need beyond the RunConfig."""

    first_step: int = 0
    """The global step this segment starts at: its batches are the global batches from here."""
    state_in: str | None = None
    """A DCP checkpoint folder to start from (the previous segment's, or a saved run's)."""
    state_out: str | None = None
    """Where to save the state: always when the segment ends for a live switch, and as the
    two flags below say otherwise."""
    save_at_end: bool = False
    """Save after the segment's last step (the run goes on in another layout, or save_state)."""
    save_on_stop: bool = False
    """Save also when the run is stopped on request (``save_state=True``: a stopped run can
    be resumed)."""
    checkpoint_every: int | None = None
    """Save the state in the background after every global step that is a multiple of this
    (config/recovery.py), into ``checkpoints``; None: no checkpoints."""
    checkpoints: tuple[str, ...] = ()
    """The two folders checkpoints take turns in (by the checkpoint's number), so a save cut
    short by a death never spoils the complete one before it."""
    fault: Fault | None = None
    """A rank's engine to kill at a global step (its ``step`` counted from the run's start
    here), or None."""

    def __post_init__(self) -> None:
        if isinstance(self.first_step, bool) or not isinstance(self.first_step, int) or self.first_step < 0:
            raise ValueError(f"first_step must be a whole number >= 0 (got {self.first_step!r})")
        if self.checkpoint_every is not None and len(self.checkpoints) != 2:
            raise ValueError("checkpoint_every needs two checkpoint folders to take turns in")
