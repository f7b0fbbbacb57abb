"""THE speed-up rule: speed-up against one worker, and strong- and weak-scaling efficiency,
for runs that differ only in their worker count. The runs frame (``load_runs()``,
``Session.runs()``), the speed-up table and figure, the demo's table and the report all take
their speed-up from here, so a run has one speed-up wherever it is shown.

Two kinds of group, from the runs frame (``store.runs_frame``), ok runs only:

- strong scaling: the same settings and the same global ``batch_size`` at every worker count
  (the same work, split finer). ``strong_efficiency = speedup / workers``.
- weak scaling: the same settings and the same batch per worker (``batch_size / workers``),
  so the global batch grows with the workers. ``weak_efficiency = (samples_per_s / workers)
  / samples_per_s at 1 worker``.

``speedup = samples_per_s / samples_per_s of the group's 1-worker baseline``.

The baseline is a 1-worker run of the same strategy: the same code path (DDP's buckets and
all-reduce calls, FSDP's gathers), so the speed-up shows what more workers bring and nothing
else. Only where a group has no such run does a ``single`` run stand in, matched on every
setting except those of the layout (``LAYOUT_COLUMNS``), which a single run does not have.
Every other setting that changes the work or its speed must match: model, its options, data
and loss, batch, precision, sync, compile, the device kind and the number of hosts, so a bf16
run is never compared with an fp32 baseline. How long a run ran, its seed and learning rate
and parakit's instruments (``_NOT_COMPARED``) do not split groups.
Runs of the same settings and worker count are repeats of one configuration: its throughput
is their median, and every figure carries a 95 % interval from records/intervals.py (each
run's own noise and the run-to-run spread, or the repeats' own): ``speedup_low`` /
``speedup_high``, the same for both efficiencies, and a ``verdict`` against the baseline
("faster", "slower", "no measurable difference"). Where a group has no baseline the speed-up
is NaN and ``missing_baseline`` says which run would give it one.

Standard library and pandas over the records layer's frame; no plotting here.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from typing import Any

import pandas

from parakit.config.run import RunConfig, Strategy
from parakit.records.intervals import SAME, Comparison, Estimate, combine, compare, ratio
from parakit.records.result import OK

THROUGHPUT = "samples_per_s"
NEW_COLUMNS = ("speedup", "speedup_low", "speedup_high", "strong_efficiency", "strong_efficiency_low",
               "strong_efficiency_high", "weak_efficiency", "weak_efficiency_low", "weak_efficiency_high",
               "verdict", "repeats", "scaling_group", "baseline", "missing_baseline")
_TEXT_COLUMNS = ("verdict", "scaling_group", "baseline", "missing_baseline")
# Settings parakit derives from the worker count unless told otherwise (a hybrid's mesh, a
# pipeline's micro-batches, twice its ranks): compared, they would split every group apart.
_FOLLOW_WORKERS = {"workers", "mesh", "microbatches"}
# How work is split and synchronised between workers: a single run has none of these, so they
# are not compared when a single run stands in as the 1-worker baseline.
LAYOUT_COLUMNS = {
    "strategy", "hybrid", "mesh", "schedule", "microbatches", "split", "tp_plan",
    "compression", "error_feedback",
}
# What does not change the work or its speed, so two runs that differ in it still compare:
# how long they ran, their seed and learning rate, and parakit's own instruments.
_NOT_COMPARED = {"steps", "warmup_steps", "lr", "seed", "profile_every", "trace", "live", "stop_on_divergence",
                 "memory_limit", "memory_snapshot"}  # instruments and caps: they do not change the work
# What a switched run gets instead of a speed-up: it has no one layout to scale.
SWITCHED = ("a run that keeps one layout (a switched run's segments compare by themselves: "
            "load_runs(segments=True))")
# What a chosen baseline must share with the runs it is compared with: the training itself.
SAME_TRAINING = ("model", "model_options", "data", "loss")
# Settings as a label says them.
_WORDS = {"device_name": "device"}
# Always named in a group's label; other settings only where they differ between groups.
_NAMED = ("strategy", "model", "precision")


def add_scaling(frame: pandas.DataFrame) -> pandas.DataFrame:
    """The runs frame with speed-up and scaling-efficiency columns added.

    A run's group is every setting (RunConfig's columns, and the device kind) except its
    worker count, and for weak scaling except its global batch, where the batch per worker
    must match instead. A run is labelled with its strong group, or with its weak group where
    only that one spans more than one worker count (a weak-scaling sweep's 1-worker run).

    Args:
        frame: one row per run, as ``Session.runs()`` / ``load_runs()`` return it.

    Returns:
        A copy with ``speedup``, ``strong_efficiency``, ``weak_efficiency`` (NaN where the run
        is not ok or its group has no 1-worker baseline) and ``scaling_group`` (a label such as
        ``"strong: ddp, gpt, bf16, batch 64"``; missing for runs that are not ok),
        ``speedup_low`` / ``speedup_high`` and the same for both efficiencies (the 95 %
        interval), ``verdict`` (against the baseline; None for the baseline's own runs),
        ``repeats`` (how many runs of the same configuration the figures come from),
        ``baseline`` (the run id(s) the speed-up is taken against) and ``missing_baseline``
        (for an ok run of more than one worker without a baseline: the run that is missing).
    """
    out = frame.copy()
    for column in NEW_COLUMNS:
        out[column] = None if column in _TEXT_COLUMNS else math.nan
    needed = {"status", "workers", "batch_size", THROUGHPUT}
    if out.empty or not needed <= set(out.columns):
        return out
    runs = _ok_runs(out)
    baselines = _Baselines(runs)
    varying = _varying_settings(runs)
    configurations = _repeats(runs)
    columns_out = {column: list(out[column]) for column in NEW_COLUMNS}
    for run in runs:
        strong, weak = baselines.estimate(run, "strong"), baselines.estimate(run, "weak")
        kind = "weak" if baselines.spans(run, "weak") and not baselines.spans(run, "strong") else "strong"
        base = weak if kind == "weak" else strong
        at, workers = run["position"], run["workers"]
        own = configurations[_configuration(run)]
        columns_out["repeats"][at] = own.repeats
        if base is not None:
            _put(columns_out, "speedup", at, _against(own, base, run, baselines.ids(run, kind)))
            columns_out["baseline"][at] = ",".join(baselines.ids(run, kind))
            if run["run_id"] not in baselines.ids(run, kind):
                columns_out["verdict"][at] = ratio(own, base).verdict
        elif workers > 1:
            columns_out["missing_baseline"][at] = _missing(run)
        if strong is not None:
            _put(columns_out, "strong_efficiency", at, _against(own, strong, run, baselines.ids(run, "strong")), workers)
        if weak is not None:
            _put(columns_out, "weak_efficiency", at, _against(own, weak, run, baselines.ids(run, "weak")), workers)
        columns_out["scaling_group"][at] = _label(run, kind, varying)
    for at, row in enumerate(out.itertuples(index=False)):
        if row.status == OK and (_number(getattr(row, "switches", None)) or 0) > 0:
            columns_out["missing_baseline"][at] = SWITCHED
    for column, values in columns_out.items():
        out[column] = values
    return out


def speedup_against(run: Any, baseline: Any) -> tuple[Comparison, float]:
    """A run against a baseline the user chose (``speedup_table(runs, baseline=...)``): the
    speed-up with its interval and verdict, and the efficiency per worker added (against a
    2-worker baseline, 4 workers at 1.8x is 90 %). The same rule as the frame's, for a pair.

    Raises:
        ValueError: If the baseline trains something else (another model, its options, data
            or loss): a ratio of different work is not a speed-up.
    """
    differs = [k for k in SAME_TRAINING if _canonical(run.config.get(k)) != _canonical(baseline.config.get(k))]
    if differs:
        k = differs[0]
        raise ValueError(f"baseline run {baseline.run_id} trains another {k} ({_shown(baseline.config.get(k))}) "
                         f"than run {run.run_id} ({_shown(run.config.get(k))}): a speed-up compares the same training")
    found = compare(run, baseline) if run is not baseline else Comparison(1.0, 1.0, 1.0, SAME)
    return found, found.ratio * baseline.world_size / run.world_size


def _configuration(run: dict[str, Any]) -> tuple:
    """Runs of the same settings, batch and worker count: repeats of one configuration."""
    return tuple(run["settings"].items()), run["batch_size"], run["workers"]


def _repeats(runs: list[dict[str, Any]]) -> dict[tuple, Estimate]:
    """Each configuration's throughput from its repeats, with its noise (records/intervals.py)."""
    found: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        found[_configuration(run)].append(run)
    return {key: combine([r["throughput"] for r in same], [r["within_sd"] for r in same])
            for key, same in found.items()}


def _against(own: Estimate, base: Estimate, run: dict[str, Any], base_ids: list[str]) -> tuple[float, float, float]:
    """The throughput ratio against the baseline with its interval; a baseline run against
    itself is exactly 1."""
    if run["run_id"] in base_ids:
        return 1.0, 1.0, 1.0
    found = ratio(own, base)
    return found.ratio, found.low, found.high


def _put(columns_out: dict[str, list], name: str, at: int, value: tuple[float, float, float], workers: int = 1) -> None:
    """A figure and its interval; efficiencies are ratios per worker (``workers`` divides them)."""
    for suffix, v in zip(("", "_low", "_high"), value):
        columns_out[name + suffix][at] = v / workers


def _ok_runs(frame: pandas.DataFrame) -> list[dict[str, Any]]:
    """The ok runs with a throughput, each as its settings, worker count and throughput."""
    columns = [f.name for f in dataclasses.fields(RunConfig)
               if f.name in frame.columns and f.name not in _FOLLOW_WORKERS | _NOT_COMPARED]
    runs = []
    for position, (_, row) in enumerate(frame.iterrows()):
        throughput = _number(row[THROUGHPUT])
        if row["status"] != OK or throughput is None or throughput <= 0:
            continue
        if (_number(row.get("switches")) or 0) > 0:
            continue  # a switched run has no one layout to scale: its segments are compared instead
        settings = {c: _canonical(row[c]) for c in columns}
        # A CPU run and a GPU run of the same settings are not the same group.
        # The device's product name (a run's first rank's): two kinds of GPU are two groups too.
        settings["device_name"] = _canonical(row.get("device_name"))
        # Runs on one host and runs spread over several are not the same group either.
        hosts = row.get("hosts")
        settings["hosts"] = hosts if isinstance(hosts, (int, float)) and not math.isnan(hosts) else None
        runs.append({"position": position, "run_id": row.get("run_id"), "settings": settings, "workers": int(row["workers"]),
                     "batch_size": int(row["batch_size"]), "throughput": throughput,
                     "within_sd": _number(row.get("within_run_sd"))})
    return runs


class _Baselines:
    """Each group's 1-worker throughput (a run of the same strategy, else a single run) and
    the worker counts it holds."""

    def __init__(self, runs: list[dict[str, Any]]):
        self.own: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        self.single: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        self.own_ids: dict[tuple, list[str]] = defaultdict(list)
        self.single_ids: dict[tuple, list[str]] = defaultdict(list)
        self.counts: dict[tuple, set[int]] = defaultdict(set)
        for run, kind in itertools.product(runs, ("strong", "weak")):
            key = self.key(run, kind)
            if key is None:
                continue
            self.counts[key].add(run["workers"])
            if run["workers"] == 1:
                self.own[key].append(run)
                self.own_ids[key].append(run["run_id"])
                if run["settings"].get("strategy") == Strategy.SINGLE.value:
                    stand_in = self.key(run, kind, LAYOUT_COLUMNS)
                    self.single[stand_in].append(run)
                    self.single_ids[stand_in].append(run["run_id"])

    @staticmethod
    def key(run: dict[str, Any], kind: str, drop: frozenset[str] | set[str] = frozenset()) -> tuple | None:
        """The group: the settings less ``drop``, with the global batch (strong) or the batch
        per worker (weak); None for a weak group of a batch that does not divide evenly."""
        batch, workers = run["batch_size"], run["workers"]
        if kind == "weak":
            if batch % workers:
                return None
            batch //= workers
        settings = tuple((c, v) for c, v in run["settings"].items() if c != "batch_size" and c not in drop)
        return kind, settings, batch

    def estimate(self, run: dict[str, Any], kind: str) -> Estimate | None:
        """The baseline's samples_per_s (the median of its repeats) with its noise, or None
        where there is none."""
        key = self.key(run, kind)
        if key is None:
            return None
        found = self.own.get(key) or self.single.get(self.key(run, kind, LAYOUT_COLUMNS))
        return combine([r["throughput"] for r in found], [r["within_sd"] for r in found]) if found else None

    def ids(self, run: dict[str, Any], kind: str) -> list[str]:
        """The run ids the baseline's throughput is the median of."""
        key = self.key(run, kind)
        return self.own_ids.get(key) or self.single_ids.get(self.key(run, kind, LAYOUT_COLUMNS), [])

    def spans(self, run: dict[str, Any], kind: str) -> bool:
        """Whether the run's group holds more than one worker count (a stand-in single run
        counts as the 1)."""
        key = self.key(run, kind)
        if key is None:
            return False
        counts = self.counts[key] | ({1} if self.estimate(run, kind) is not None else set())
        return len(counts) > 1


def _varying_settings(runs: list[dict[str, Any]]) -> list[str]:
    """Settings, beyond the always-named ones, whose value differs between ok runs."""
    if not runs:
        return []
    names = [c for c in runs[0]["settings"] if c not in _NAMED and c not in ("batch_size", "hybrid")]
    return [c for c in names if len({r["settings"][c] for r in runs}) > 1]


def _label(run: dict[str, Any], kind: str, varying: list[str]) -> str:
    s = run["settings"]
    strategy = s.get("strategy")
    if strategy == Strategy.HYBRID.value and s.get("hybrid"):
        strategy = f"hybrid {s['hybrid']}"
    batch = f"batch {run['batch_size']}" if kind == "strong" else f"{run['batch_size'] // run['workers']} per worker"
    parts = [strategy, s.get("model"), s.get("precision"), batch]
    parts += [f"{_WORDS.get(c, c)} {_shown(s[c])}" for c in varying if s[c] is not None]
    return f"{kind}: " + ", ".join(str(p) for p in parts if p is not None)


def _missing(run: dict[str, Any]) -> str:
    """The run that would give this one a speed-up: 1 worker, the same settings."""
    s = run["settings"]
    same = ", ".join(f"{_WORDS.get(c, c)} {_shown(s[c])}" for c in ("model", "precision", "compression", "sync", "device_name")
                     if s.get(c) is not None)
    return (f"a 1-worker {s.get('strategy')} (or single) run with the same settings "
            f"({same}, batch {run['batch_size']})")


def _canonical(value: Any) -> Any:
    """A hashable, comparable form of a frame cell: missing -> None, lists and dicts -> tuples."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    return None if pandas.isna(value) else value


def _shown(value: Any) -> str:
    """A canonical value back as text: a dict's pairs as k=v, a list's items joined by /."""
    if isinstance(value, tuple):
        if all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return " ".join(f"{k}={_shown(v)}" for k, v in value)
        return "/".join(_shown(v) for v in value)
    return str(value)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
