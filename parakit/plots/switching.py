"""Switched runs in the figures: a dashed marker at each switch, labelled with what changed, and
what each switch cost (save, launch, load and re-layout), which no step's time holds."""

from __future__ import annotations

from parakit.plots.base import Figure, finish, skip_note
from parakit.records.result import RunResult, run_label
from parakit.records.segments import switch_times

SWITCH_PARTS = {
    "state_save_s": ("save the state (DCP)", "#4c78a8"),
    "launch_s": ("results back, next launch, model built", "#bab0ac"),
    "state_load_s": ("load it and lay the model out", "#f58518"),
}


RECOVERY_COLOUR = "#c0392b"


def mark_switches(fig: Figure, results: list[RunResult], axis: str = "step") -> None:
    """A dashed vertical line at each switch of each switched run, labelled with what changed:
    on a step axis before the switch's first step, on a time axis where that step began. A
    recovery after a lost worker (records/recovery.py) is marked in red, and on a time axis the
    time it lost is shaded: the lost steps, finding the death, new engines, the state loaded."""
    for run in results:
        for seg, (step, at, label) in zip(run.segments[1:], switch_times(run)):
            x = step - 0.5 if axis == "step" else at
            if x is None:
                continue
            recovery = seg.recovered
            colour = RECOVERY_COLOUR if recovery else "#555"
            fig.add_vline(x=x, line_dash="dot" if recovery else "dash", line_color=colour, line_width=1,
                          annotation_text=f"↺ {label}" if recovery else f"→ {label}",
                          annotation_position="top right", annotation_font={"size": 10, "color": colour})
            if recovery and axis == "time" and recovery.lost_s:
                fig.add_vrect(x0=x - recovery.lost_s, x1=x, fillcolor=RECOVERY_COLOUR, opacity=0.12, line_width=0,
                              annotation_text=f"{recovery.lost_s:.1f} s lost", annotation_position="bottom left",
                              annotation_font={"size": 10, "color": RECOVERY_COLOUR})


def switch_cost(results: list[RunResult]) -> Figure:
    """The time each switch paused training, one stacked bar per switch: saving the state at the
    end of a segment, loading it and laying the model out again (the slowest rank's, timed on the
    engines), and the rest of the pause (results back, the next launch, the model built).

    Args:
        results: Runs of any status; runs that never switched are skipped, counted in the subtitle.

    Returns:
        A stacked bar figure in seconds, with the model state's size in the hover.
    """
    fig = Figure()
    bars = []
    for run in results:
        for seg in run.segments[1:]:
            if seg["switch_s"] is None or seg.recovered is not None:  # a recovery's pause is no switch's
                continue
            parts = {"state_save_s": seg["state_save_s"] or 0.0, "state_load_s": seg["state_load_s"] or 0.0}
            parts["launch_s"] = max(seg["switch_s"] - parts["state_save_s"] - parts["state_load_s"], 0.0)
            bars.append((f"{run.run_id} #{seg['index']}", run, seg, parts))
    x = [b[0] for b in bars]
    custom = [[run_label(run.config, run.world_size), seg["label"], seg["first_step"], seg["switch_s"]]
              for _, run, seg, _ in bars]
    for key, (name, colour) in SWITCH_PARTS.items():
        fig.add_bar(x=x, y=[b[3][key] for b in bars], name=name, marker_color=colour, customdata=custom,
                    hovertemplate="%{customdata[0]}<br>→ %{customdata[1]} at step %{customdata[2]}<br>"
                    f"{name}: %{{y:.3f}} s of %{{customdata[3]:.3f}} s<extra></extra>")
    fig.update_layout(barmode="stack")
    fig.update_xaxes(ticktext=[f"{b[2]['label']} @ {b[2]['first_step']}" for b in bars], tickvals=x)
    switched = sum(bool(r.segments[1:]) for r in results)
    return finish(fig, "What each switch took", "switch", "seconds",
                  [skip_note(results, switched, "never switched"), "slowest rank's save and load"])
