"""Runs, benchmarks and advice as text: the lines the ``parakit`` command prints and the
magics print, written once so both say the same."""

from __future__ import annotations

import os
from typing import Any

from parakit.config.prices import usd_text
from parakit.records.explain import power_note, where_time_went
from parakit.records.intervals import SAME, interval_text
from parakit.records.result import headline, run_label
from parakit.records.run_cost import cost_note
from parakit.session.progress import size_text

TABLE_ROWS = 20  # configurations an advice table lists before "... N more"


def summary_line(result: Any) -> str:
    """The run's id and headline (records.headline), as the CLI and the magics print it."""
    return f"{result.run_id} {headline(result)}"


def how_to_open_traces(result: Any) -> str:
    """The trace files of a run (``trace=True``), and the ways to open them."""
    folder = os.path.dirname(result.traces[0])
    return "\n".join([
        f"{len(result.traces)} Chrome-trace file(s) of run {result.run_id}, one per rank and profiler window:",
        *(f"  {path}" for path in result.traces),
        "Open one in https://ui.perfetto.dev (Open trace file) or chrome://tracing (Load);",
        "or all ranks at once with Holistic Trace Analysis (pip install HolisticTraceAnalysis):",
        f"  from hta.trace_analysis import TraceAnalysis; TraceAnalysis(trace_dir={folder!r}).get_temporal_breakdown()",
    ])


def bench_table(bench: Any) -> str:
    """The benchmark as text: a line per (collective, size), then the fits."""
    if not bench.ok:
        return f"{bench.bench_id} {bench.status}: {bench.error}"
    lines = [f"{bench.bench_id}: {bench.backend} x{bench.world_size} on {bench.device_names[0]}, {bench.dtype}",
             f"{'collective':<15}{'size':>10}{'time (us)':>12}{'algbw GB/s':>12}{'busbw GB/s':>12}"]
    for r in bench.rows:
        lines.append(f"{r['collective']:<15}{size_text(r['bytes']):>10}{r['time_s'] * 1e6:>12.1f}"
                     f"{r['algbw_gbps']:>12.3f}{r['busbw_gbps']:>12.3f}")
    for name, fit in bench.fits.items():
        lines.append(f"fit {name}: " + (f"latency {fit['alpha_s'] * 1e6:.1f} us, bandwidth "
                                        f"{fit['beta_bytes_per_s'] / 1e9:.3f} GB/s"
                                        if fit.get("alpha_s") is not None else f"none ({fit['reason']})"))
    lines += [f"skipped {name}: {why}" for name, why in bench.skipped.items()]
    return "\n".join(lines)


def advice_table(advice) -> str:
    """The advice as text: the summary, then a line per configuration (the first TABLE_ROWS that
    fit, then those that do not, with why)."""
    lines = [advice.summary(), "",
             (f"{'rank':>4} {'configuration':<36}{'step ms':>9}{'samples/s':>11}{'MiB/rank':>10}"
             f"{'MiB sent':>10}{'$/1k samples':>13}{'measured':>10}")]
    fitting = [e for e in advice.estimates if e.fits]
    for i, e in enumerate(fitting[:TABLE_ROWS], start=1):
        seen = (advice.verification_of(e.settings) or {}).get("measured_step_time_s")
        cost = e.cost_per_1k_samples_usd
        lines.append(f"{i:>4} {run_label(e.settings):<36}{e.step_time_s * 1e3:>9.2f}{e.samples_per_s:>11.1f}"
                     f"{e.memory_bytes / 2**20:>10.0f}{e.collective_bytes_per_step / 2**20:>10.3f}"
                     f"{usd_text(cost) if cost is not None else '-':>13}"
                     + (f"{seen * 1e3:>10.2f}" if seen else f"{'':>10}"))
    if len(fitting) > TABLE_ROWS:
        lines.append(f"     ... {len(fitting) - TABLE_ROWS} more that fit (--json for all)")
    lines += [f"   - {run_label(e.settings):<36}{e.reason}" for e in advice.estimates if not e.fits]
    for p in advice.projections:
        curve = ", ".join(f"{q['workers']}: {q['speedup']:.2f}x" for q in p["points"])
        lines.append(f"projection {p['label']}: {curve}" + (f" ({p['stopped']})" if p["stopped"] else ""))
    return "\n".join(lines)


# The speed-up table's columns a terminal shows (the speed-up is the runs frame's, as everywhere).
TABLE_COLUMNS = ["run_id", "label", "samples_per_s", "step_time_ms", "speedup", "efficiency"]


def speedup_cell(row: Any) -> str:
    """A table row's speed-up with its 95 % interval ('1.54x (1.31-1.81)'), 'same (0.93-1.08)'
    where the interval holds 1, '1.00x' for the baseline itself, '-' without a baseline."""
    speed = row["speedup"]
    if speed != speed:
        return "-"
    if not isinstance(row.get("verdict"), str):
        return f"{speed:.2f}x"
    if row["verdict"] == SAME:
        return f"same ({row['speedup_low']:.2f}-{row['speedup_high']:.2f})"
    return interval_text(speed, row["speedup_low"], row["speedup_high"])


def runs_table(results: list[Any]) -> str:
    """Completed runs with samples/s, step time and speed-up with its 95 % interval, then the
    verdicts in words and the baseline runs that are missing (as the demo and ``parakit
    sweep`` print them)."""
    from parakit.plots.runs import speedup_table  # pandas and plotly, only for this table

    table = speedup_table(results)
    shown = table[TABLE_COLUMNS].assign(speedup=[speedup_cell(row) for _, row in table.iterrows()])
    lines = [shown.rename(columns={"speedup": "speedup (95 %)"}).to_string(
        index=False, float_format=lambda v: f"{v:.2f}")]
    lines += [f"{row['label']}: {row['said']}" for _, row in table.iterrows() if isinstance(row["said"], str)]
    lines += [f"no speed-up without {m}" for m in sorted(set(table["missing_baseline"].dropna()))]
    return "\n".join(lines)


def explained_table(results: list[Any]) -> str:
    """The demo's table: each run's throughput and speed-up (the runs frame's) beside where
    its step time went (compute, communication not hidden behind compute, idle, in ms) and
    what it cost (records.run_cost), in run order; then one sentence per run saying why
    (records.explain), and why power is missing where it is."""
    from parakit.plots.runs import speedup_table
    from parakit.records.store import runs_frame

    table = speedup_table(results).set_index("run_id")
    ok = [r for r in results if r.ok and r.summary]
    against = runs_frame(ok).set_index("run_id")["baseline"] if ok else {}
    by_id = {r.run_id: r for r in results}
    head = (f"{'run':<23}{'configuration':<24}{'batch':>6}{'samples/s':>11}{'step ms':>9}{'speed-up (95 %)':>24}"
            f"{'compute':>9}{'comm':>8}{'idle':>7}{'cost':>11}")
    lines, why = [head], []
    for r in results:
        if r.run_id not in table.index:
            lines.append(f"{r.run_id:<23}{run_label(r.config, r.world_size):<24.24}{r.status}"
                         + (f", cost {usd_text(r.cost_usd)}" if r.cost_usd is not None else ""))
            continue
        row, s = table.loc[r.run_id], r.summary
        ms = lambda key: f"{s[key] * 1e3:.1f}" if s.get(key) is not None else "-"  # noqa: E731
        lines.append(f"{r.run_id:<23}{row['label']:<24.24}{r.config.get('batch_size', ''):>6}"
                     f"{row['samples_per_s']:>11.1f}{row['step_time_ms']:>9.1f}{speedup_cell(row):>24}"
                     f"{ms('compute_time_s'):>9}{ms('exposed_comm_time_s'):>8}{ms('idle_time_s'):>7}"
                     f"{usd_text(r.cost_usd) if r.cost_usd is not None else '-':>11}")
        ids = against.get(r.run_id)
        first = ids.split(",")[0] if isinstance(ids, str) else None  # repeated baselines: the first
        why.append(f"  {r.run_id}: {where_time_went(r, by_id.get(first))}")
    lines += ["(speed-up: against the 1-worker run, with its 95 % interval; 'same' where the interval holds 1: "
              "no measurable difference)",
              "(compute, comm and idle: ms of a step, from the profiler; comm is the part not "
              "hidden behind compute)",
              "(cost: the whole run's wall clock x the devices it held x a price per device-hour; "
              "each run's cost_method names the price and its source)", "", "Where the time went:", *why]
    lines += [f"no speed-up without {m}" for m in sorted(set(table["missing_baseline"].dropna()))]
    lines += [note for note in (power_note(results), cost_note(results)) if note]
    return "\n".join(lines)


def sweep_progress(i: int, n: int, label: str, result: Any) -> None:
    """``Session.sweep``'s on_run: one line per run, when it ends (while it goes, its own
    progress line shows it). In a notebook that progress line already ends as the run's
    summary, so nothing is added there."""
    from parakit.config.shell import in_notebook

    if result is not None and not in_notebook():
        print(f"[{i}/{n}] {summary_line(result)}", flush=True)


def outcome_line(result: Any, results: list[Any]) -> str:
    """The run's headline, and its speed-up in words where the runs so far hold its baseline:
    '...; 2 workers: 1.54x (1.31-1.81)' (records/intervals.py, as the tables say it)."""
    from parakit.plots.runs import speedup_table

    text = f"{headline(result)} ({result.run_id})"
    if result.ok and result.summary:
        table = speedup_table(results).set_index("run_id")
        said = table.at[result.run_id, "said"] if result.run_id in table.index else None
        if isinstance(said, str):
            text += f"; {said}"
    return text
