"""The memory figure: what each rank of each run holds, part by part, against the peak it
measured. A part a rank did not measure is left out of its bar (never drawn as 0) and counted
in the subtitle."""

from __future__ import annotations

from parakit.plots.base import MIB, Figure, count, finish, run_ticks, skip_note
from parakit.records.memory import PARTS
from parakit.records.segments import segment_results
from parakit.records.result import RankInfo, RunResult

# Each part's name and colour, bottom up in records.memory.PARTS's order (parameters,
# gradients, optimizer state, activations).
PART_STYLE = dict(zip(PARTS, [("parameters", "#4c78a8"), ("gradients", "#f58518"),
                              ("optimizer state", "#54a24b"), ("activations", "#e45756")]))
PEAK_KIND = {"cuda_max_allocated": "allocator's peak", "process_peak_rss": "process peak RSS"}
HOVER_RANK = "run %{customdata[0]}<br>%{customdata[1]} x%{customdata[2]}, rank %{customdata[3]} on %{customdata[4]}"


def memory(results: list[RunResult]) -> Figure:
    """Memory per rank in MiB: parameters, gradients, optimizer state and activations stacked,
    one bar per rank, grouped by run; the measured peak is a marker above: on a GPU the
    allocator's peak, with what it reserved as a second marker; on a CPU the process's peak
    resident set, interpreter and torch included, hidden until its legend entry is clicked.

    Args:
        results: Runs of any status; failed and stopped runs are skipped, and ranks that
            measured nothing are omitted, both counted in the subtitle.

    Returns:
        A stacked bar figure on a two-level axis (run, rank).
    """
    results = segment_results(results)  # a switched run: a group of bars per segment
    ok = [r for r in results if r.ok]
    runs = [r for r in ok if any(_measured(k) for k in r.ranks)]
    drawn = [(run, tick, k) for run, tick in zip(runs, run_ticks(runs)) for k in run.ranks if _measured(k)]
    fig = Figure()
    if drawn:
        x = [[tick for _, tick, _ in drawn], [f"rank {k.rank}" for _, _, k in drawn]]
        custom = [[run.run_id, run.config.get("strategy"), run.world_size, k.rank, k.device_name]
                  for run, _, k in drawn]
        for key, (name, colour) in PART_STYLE.items():
            fig.add_bar(x=x, y=[_mib(getattr(k, key)) for _, _, k in drawn], name=name, marker_color=colour,
                        customdata=custom, hovertemplate=HOVER_RANK + f"<br>{name}: %{{y:.2f}} MiB<extra></extra>")
        for kind, name in PEAK_KIND.items():  # one marker per kind: they measure different things
            peaks = [_mib(k.peak_mem_bytes) if k.peak_mem_kind == kind else None for _, _, k in drawn]
            if any(p is not None for p in peaks):
                # A CPU process's peak (hundreds of MiB of interpreter and torch) would flatten
                # the parts: it starts hidden, one click on its legend entry away.
                fig.add_scatter(x=x, y=peaks, mode="markers", name=f"peak ({name})", customdata=custom,
                                visible="legendonly" if kind == "process_peak_rss" else True,
                                marker={"symbol": "line-ew-open", "size": 24, "color": "black"},
                                hovertemplate=HOVER_RANK + "<br>measured peak %{y:.1f} MiB<extra></extra>")
        if any(k.reserved_peak_bytes is not None for _, _, k in drawn):
            fig.add_scatter(x=x, y=[_mib(k.reserved_peak_bytes) for _, _, k in drawn], mode="markers",
                            name="reserved by the allocator", customdata=[
                                c + [k.fragmentation if k.fragmentation is not None else float("nan")]
                                for c, (_, _, k) in zip(custom, drawn)],
                            marker={"symbol": "line-ew", "size": 24, "color": "gray"},
                            hovertemplate=HOVER_RANK + "<br>reserved %{y:.1f} MiB, "
                            "%{customdata[5]:.0%} of it unused at the peak<extra></extra>")
    fig.update_layout(barmode="stack")
    omitted = sum(not _measured(k) for r in ok for k in r.ranks)
    notes = [skip_note(results, len(runs), "failed, stopped or unmeasured"),
             f"{count(omitted, 'rank')} measured nothing, omitted" if omitted else ""]
    for key, (name, _) in PART_STYLE.items():
        missing = sum(getattr(k, key) is None for _, _, k in drawn)
        notes.append(f"{name} not measured on {count(missing, 'rank')}" if missing else "")
    if any(k.peak_mem_kind == "process_peak_rss" and k.peak_mem_bytes is not None for _, _, k in drawn):
        notes.append("a CPU rank's peak is its whole process's, interpreter and torch included (in the legend)")
    return finish(fig, "Memory per rank, by part", "run, rank", "memory (MiB)", notes)


def _measured(rank: RankInfo) -> bool:
    return rank.peak_mem_bytes is not None or any(getattr(rank, key) is not None for key in PARTS)


def _mib(value: int | None) -> float | None:
    return value / MIB if value is not None else None
