"""Context parallelism against sequence length: the bytes each rank sends round the ring per
step, how much of the communication compute did not hide, and the activations each rank keeps,
beside those of runs that hold whole sequences (single, ddp), which grow R times faster."""

from __future__ import annotations

from collections import defaultdict

from parakit.config.models import MODEL_OPTIONS, Workload
from parakit.plots.base import MIB, Figure, finish, skip_note
from parakit.records.result import RunResult, run_label

MS = 1e3


def seq_len(run: RunResult) -> int | None:
    """The gpt's sequence length (its default where the run left it); None for other models."""
    if run.config.get("model") != Workload.GPT.value:
        return None
    return (run.config.get("model_options") or {}).get("seq_len", MODEL_OPTIONS[Workload.GPT]["seq_len"])


def _lines(runs: list[RunResult]) -> dict[str, list[RunResult]]:
    """Runs by 'strategy xN' (the model's other sizes in the hover), each line in sequence order."""
    lines: dict[str, list[RunResult]] = defaultdict(list)
    for run in sorted(runs, key=seq_len):
        lines[run_label(run.config, run.world_size).rsplit(" ", 1)[0]].append(run)
    return lines


def context(results: list[RunResult]) -> Figure:
    """What splitting each sequence over the ranks costs and saves, against sequence length.

    Args:
        results: Runs of any status; completed gpt runs are drawn, the rest counted in the
            subtitle. Context runs draw in every panel, the others in the activations panel,
            where they are the whole-sequence reference. A figure a run did not measure is left out.

    Returns:
        Three panels, a line per layout ('context x2', 'ddp x2', ...): MiB sent round the ring
        per step by the largest sender; communication per step (ms), all of it dashed and the
        part no compute hid solid; and the activations the fullest rank kept, in MiB.
    """
    runs = [r for r in results if r.ok and seq_len(r) is not None]
    fig = Figure()
    # set_subplots, not Figure(make_subplots(...)): the copy would lose the grid, and row/col with it
    fig.set_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        "sent round the ring per step (MiB)", "communication per step (ms)", "activations per rank (MiB)"))
    for label, line in _lines(runs).items():
        ring = [r for r in line if r.summary.get("ring_bytes_per_step") is not None]
        if ring:
            _add(fig, label, ring, "ring_bytes_per_step", 1 / MIB, "MiB round the ring", col=1)
            _add(fig, label, ring, "comm_time_s", MS, "ms communicating", col=2, dash="dash")
            _add(fig, label, ring, "exposed_comm_time_s", MS, "ms exposed", col=2, suffix=" · exposed")
        _add(fig, label, line, "activation_bytes", 1 / MIB, "MiB of activations", col=3)
    fig.update_xaxes(title_text="sequence length (tokens)")
    notes = [skip_note(results, len(runs), "failed, stopped or not the gpt"),
             "" if any(r.summary.get("context_path") for r in runs) else "no context run to draw",
             "communication: dashed all of it, solid the part no compute hid"]
    return finish(fig, "Context parallelism: the ring's traffic and each rank's activations",
                  "sequence length (tokens)", "MiB", notes)


def _add(fig: Figure, label: str, runs: list[RunResult], figure: str, scale: float, unit: str, *, col: int,
         dash: str | None = None, suffix: str = "") -> None:
    drawn = [r for r in runs if r.summary.get(figure) is not None]
    if not drawn:
        return
    fig.add_scatter(x=[seq_len(r) for r in drawn], y=[r.summary.get(figure) * scale for r in drawn],
                    mode="lines+markers", name=label + suffix, legendgroup=label, line={"dash": dash},
                    # one legend entry per layout, and one for its exposed part
                    showlegend=col == 3 or bool(suffix), customdata=[r.run_id for r in drawn], row=1, col=col,
                    hovertemplate=f"{label}<br>run %{{customdata}}: seq_len %{{x}}, %{{y:.3g}} {unit}<extra></extra>")
