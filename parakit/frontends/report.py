"""A self-contained HTML report of a set of runs: one file to mail, archive or open offline.

plotly.js is inlined once (machines running experiments are often offline, so no CDN), every
piece of run text is HTML-escaped, and the file is written atomically so a reader never sees
half a report.
"""

from __future__ import annotations

import html
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import plotly.graph_objects as go

from parakit.plots import measures
from parakit.plots import runs as plots
from parakit.records.explain import power_note, where_time_went
from parakit.records.result import RunResult, run_label
from parakit.records.run_cost import cost_note, cost_text

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table.runs { border-collapse: collapse; font-size: 0.9em; }
table.runs th, table.runs td { padding: 4px 10px; border-bottom: 1px solid #ddd; }
table.runs td { text-align: right; }
table.runs th { background: #f5f5f5; }
pre.error { background: #fff4f4; border-left: 3px solid #c33; padding: 8px; white-space: pre-wrap; }
.note { color: #666; }
"""

_FIGURES: list[tuple[str, Callable[[list[RunResult]], go.Figure]]] = [
    ("Speed-up", plots.speedup),
    ("Throughput", plots.throughput),
    ("Loss", plots.loss),
    ("Step time", plots.step_times),
    ("Time breakdown", measures.breakdown),
    ("Power", measures.power),
    ("Memory per rank", plots.memory),
]

_FORMATS = {
    "samples_per_s": "{:.1f}".format,
    "step_time_ms": "{:.2f}".format,
    "speedup": "{:.2f}x".format,
    "efficiency": "{:.0%}".format,
}


def _e(value: object) -> str:
    return html.escape(str(value))


def _header(results: list[RunResult], title: str) -> str:
    """Title, date, and where the runs ran (hosts and device names from the ranks)."""
    hosts = sorted({k.host for r in results for k in r.ranks if k.host})
    # Ranks name the device best; RunResult.device covers runs recorded without ranks.
    devices = sorted({k.device_name for r in results for k in r.ranks if k.device_name}
                     | {d for r in results if not r.ranks for d in r.device_names})
    done = sum(r.ok for r in results)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<h1>{_e(title)}</h1>\n<p class='note'>Generated {_e(date)}. "
        f"{len(results)} runs: {done} completed, {len(results) - done} failed or stopped.</p>\n"
        f"<p>Machines: {_e(', '.join(hosts) or 'unknown')}<br>"
        f"Devices: {_e(', '.join(devices) or 'unknown')}</p>\n"
    )


def _table(results: list[RunResult]) -> str:
    table = plots.speedup_table(results)
    if table.empty:
        return "<p class='note'>No completed run with a measured throughput.</p>\n"
    # escape=True: run ids and model names are user text; na_rep shows an absent baseline.
    return table.to_html(index=False, escape=True, na_rep="—", formatters=_FORMATS,
                         border=0, classes="runs") + "\n"


def _explained(results: list[RunResult]) -> str:
    """A sentence per run: where its step time went (records.explain), and why power is
    missing where it is."""
    items = "".join(f"<li><code>{_e(r.run_id)}</code> {_e(run_label(r.config, r.world_size))}: "
                    f"{_e(where_time_went(r))}</li>\n" for r in results if r.ok)
    missing = power_note(results)
    note = f"<p class='note'>{_e(missing)}</p>\n" if missing else ""
    return f"<h2>Where the time went</h2>\n<ul>\n{items}</ul>\n{note}" if items else ""


def _costs(results: list[RunResult]) -> str:
    """What each run cost (records.run_cost): dollars for its device-hours, and for its energy
    with the energy's CO2 where energy was measured; how, with the prices' sources."""
    rows = "".join(
        f"<tr><td><code>{_e(r.run_id)}</code></td><td>{_e(run_label(r.config, r.world_size))}</td>"
        f"<td>{_e(cost_text(r))}</td><td style='text-align:left'>"
        f"{'<br>'.join(_e(f'{k}: {v}') for k, v in r.cost_method.items())}</td></tr>\n"
        for r in results)
    missing = cost_note(results)
    note = f"<p class='note'>{_e(missing)}</p>\n" if missing else ""
    return (f"<h2>What the runs cost</h2>\n<table class='runs'>\n<tr><th>run</th><th>configuration</th>"
            f"<th>cost (energy, CO2)</th><th>how</th></tr>\n{rows}</table>\n{note}") if rows else ""


def _figures(results: list[RunResult]) -> str:
    parts = []
    bundle_written = False
    for heading, draw in _FIGURES:
        parts.append(f"<h2>{_e(heading)}</h2>\n")
        try:
            fig = draw(results)
        except ValueError as err:  # e.g. no 1-worker baseline: say so, draw the rest
            parts.append(f"<p class='note'>{_e(err)}</p>\n")
            continue
        # The ~4.8 MB plotly.js bundle goes in once, with the first figure actually drawn.
        parts.append(fig.to_html(full_html=False, include_plotlyjs=not bundle_written,
                                 default_height="460px", config={"displaylogo": False}))
        bundle_written = True
    return "".join(parts)


def _failures(results: list[RunResult]) -> str:
    failed = [r for r in results if not r.ok]
    if not failed:
        return ""
    items = "".join(
        f"<li><code>{_e(r.run_id)}</code> {_e(r.status)}: "
        f"{_e(run_label(r.config, r.world_size))}"
        f"<pre class='error'>{_e(r.error or 'no error text recorded')}</pre></li>\n"
        for r in failed
    )
    return f"<h2>Failed or stopped runs</h2>\n<ul>\n{items}</ul>\n"


def render_report(results: list[RunResult], title: str = "parakit report") -> str:
    """The report as one HTML string (see ``write_report``).

    Args:
        results: Runs of any status.
        title: Page title and heading; escaped.

    Returns:
        A complete HTML document with plotly.js inlined once.
    """
    body = (_header(results, title) + _table(results) + _explained(results) + _costs(results) + _figures(results)
            + _failures(results))
    return (
        f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temp file beside ``path`` then rename: readers see the old file or the new."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(results: list[RunResult], path: str | os.PathLike,
                 title: str = "parakit report") -> Path:
    """Write a self-contained HTML report of ``results``.

    It holds a header (date, machines, devices), the speed-up table, a sentence per run on
    where its time went, what each run cost, the speed-up, throughput, loss, step time, time
    breakdown, power and memory figures, and the failed/stopped runs with their error text. plotly.js is inlined once, so the file opens offline.

    Args:
        results: Runs of any status.
        path: Where to write the HTML file; its folder is created if missing.
        title: Page title and heading.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, render_report(results, title))
    return path
