"""Figures of what the measurement layer adds: where step time goes, bytes on the wire, power.

Pure functions ``list[RunResult] -> plotly Figure`` like ``plots``; a run that did not measure
the figure is left out and counted in the subtitle, never drawn as 0.
"""

from __future__ import annotations

from parakit.plots.base import HOVER_RUN, Figure, finish, measured_runs, run_axis, skip_note
from parakit.records.commbench import CommBenchResult
from parakit.records.result import RunResult, run_label
from parakit.plots.switching import mark_switches
from parakit.records.segments import segment_results

# Stacked in this order, bottom up: compute, then what communication adds, then waiting.
BREAKDOWN_PARTS = {
    "compute_time_s": ("compute", "#4c78a8"),
    "exposed_comm_time_s": ("exposed communication", "#e45756"),
    "idle_time_s": ("idle", "#bab0ac"),
}


def breakdown(results: list[RunResult]) -> Figure:
    """Step time split into compute, communication not hidden behind compute, and idle (ms),
    one stacked bar per run; the communication hidden behind compute is in the hover.

    Args:
        results: Runs of any status; runs without a recorded breakdown are skipped, counted in
            the subtitle (``profile_every=0``, failed or stopped runs).

    Returns:
        A stacked bar figure, one bar per run, with the measured step time as a marker.
    """
    results = segment_results(results)  # a switched run: a bar per segment
    runs = measured_runs(results, "compute_time_s")
    fig = Figure()
    custom = [[r.run_id, r.config.get("strategy"), r.world_size,
               r.summary["comm_time_s"] * 1e3,
               (r.summary["comm_time_s"] - r.summary["exposed_comm_time_s"]) * 1e3] for r in runs]
    for key, (name, colour) in BREAKDOWN_PARTS.items():
        fig.add_bar(
            x=[r.run_id for r in runs], y=[r.summary[key] * 1e3 for r in runs], name=name,
            marker_color=colour, customdata=custom,
            hovertemplate=HOVER_RUN + f"<br>{name}: %{{y:.2f}} ms<br>communication %{{customdata[3]:.2f}} ms, "
            "of which hidden %{customdata[4]:.2f} ms<extra></extra>",
        )
    fig.add_scatter(
        x=[r.run_id for r in runs], y=[r.summary["step_time_s"] * 1e3 for r in runs],
        mode="markers", name="step time (timer)", marker={"symbol": "line-ew-open", "size": 28, "color": "black"},
        hovertemplate="step time %{y:.2f} ms (median, CUDA events or wall clock)<extra></extra>",
    )
    fig.update_layout(barmode="stack")
    run_axis(fig, runs)
    notes = [skip_note(results, len(runs), "no recorded breakdown"),
             "profiler: median over recorded steps, mean over ranks"]
    return finish(fig, "Where a step's time goes", "run", "time per step (ms)", notes)


def wire_bytes(results: list[RunResult]) -> Figure:
    """Bytes the largest sender gave to gradient collectives per step (MiB), beside what plain
    fp32 all-reduce of the same buckets would have sent, one pair of bars per run.

    Args:
        results: Runs of any status; runs whose bytes were not counted are skipped, counted in
            the subtitle (their reason is in each run's ``unmeasured``).

    Returns:
        A grouped bar figure; the compression ratio is in the hover.
    """
    results = segment_results(results)  # a switched run: a pair of bars per segment
    runs = measured_runs(results, "comm_bytes_per_step")
    fig = Figure()
    custom = [[r.run_id, r.config.get("strategy"), r.world_size, r.config.get("compression"),
               r.summary.get("compression_ratio") or float("nan")] for r in runs]
    for key, name in (("uncompressed_bytes_per_step", "fp32 all-reduce"), ("comm_bytes_per_step", "sent")):
        fig.add_bar(
            x=[r.run_id for r in runs], y=[r.summary[key] / 2**20 for r in runs], name=name, customdata=custom,
            hovertemplate=HOVER_RUN + "<br>compression %{customdata[3]}: %{y:.3f} MiB"
            "<br>%{customdata[4]:.1f}x fewer bytes<extra></extra>",
        )
    fig.update_layout(barmode="group")
    run_axis(fig, runs)
    notes = [skip_note(results, len(runs), "bytes not counted")]
    return finish(fig, "Bytes on the wire per step (largest sender)", "run", "MiB per step", notes)


def power(results: list[RunResult]) -> Figure:
    """Power over each run's training loop (W), one line per measured device (a GPU, or a
    host's CPU packages), with the energy from the device's counter in the legend.

    Args:
        results: Runs of any status with ranks; devices read by several ranks are drawn once,
            and runs whose meter saw no samples are skipped, counted in the subtitle.

    Returns:
        A line figure, time (s) since the loop began against watts.
    """
    fig = Figure()
    drawn, scopes = set(), set()
    mark_switches(fig, results, axis="time")
    for run in segment_results(results):  # a switched run: a line per segment, on the run's clock
        seen: set[str] = set()
        lines = 0
        for rank in run.ranks:
            p = rank.power
            if not p or not p.get("samples") or rank.power_device in seen:
                continue
            seen.add(rank.power_device)
            scopes.add(p["scope"])
            energy = f"{p['energy_j']:.1f} J" if p.get("energy_j") is not None else "energy not measured"
            device = rank.device_name if rank.device != "cpu" else f"CPU packages of {rank.host}"
            fig.add_scatter(
                x=[s[0] for s in p["samples"]], y=[s[1] for s in p["samples"]], mode="lines",
                name=f"{run_label(run.config, run.world_size)} · {device} · {energy}",
                hovertemplate="%{x:.2f} s: %{y:.0f} W<extra>run " + run.run_id + "</extra>",
            )
            lines += 1
        if lines:
            drawn.add(run.run_id.split("/")[0])  # a switched run's segments count as the run
    notes = [skip_note(results, len(drawn), "no power samples"),
             "; ".join(sorted(scopes))]
    return finish(fig, "Power during training", "time since the training loop began (s)", "power (W)", notes)


def comm_bandwidth(benches: list[CommBenchResult]) -> Figure:
    """Bus bandwidth (GB/s, nccl-tests definition) against message size, one line per
    collective and benchmark; the fitted latency and bandwidth are in the legend.

    Args:
        benches: communication benchmarks; failed or stopped ones are skipped, said in the subtitle.

    Returns:
        A line figure with a log-scaled size axis.
    """
    done = [b for b in benches if b.ok and b.rows]
    fig = Figure()
    for b in done:
        for name in dict.fromkeys(r["collective"] for r in b.rows):
            rows = [r for r in b.rows if r["collective"] == name]
            fit = b.fits.get(name) or {}
            fitted = (f" · {fit['alpha_s'] * 1e6:.0f} µs + bytes / {fit['beta_bytes_per_s'] / 1e9:.2f} GB/s"
                      if fit.get("alpha_s") is not None else "")
            fig.add_scatter(
                x=[r["bytes"] for r in rows], y=[r["busbw_gbps"] for r in rows], mode="lines+markers",
                name=f"{name} ({b.backend} x{b.world_size}){fitted}",
                customdata=[[r["time_s"] * 1e6, r["algbw_gbps"]] for r in rows],
                hovertemplate="%{x:,} bytes: busbw %{y:.3f} GB/s, algbw %{customdata[1]:.3f} GB/s,"
                              " %{customdata[0]:.1f} µs<extra></extra>",
            )
    fig.update_xaxes(type="log")
    skipped = sorted({f"{c}: {why}" for b in done for c, why in b.skipped.items()})
    notes = [skip_note(benches, len(done), "failed or stopped"), "median of repeats, slowest rank",
             *skipped]
    return finish(fig, "Communication: bus bandwidth by message size", "message size (bytes)",
                  "bus bandwidth (GB/s)", notes)
