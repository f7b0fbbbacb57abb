"""A mixture of experts' routing over a run: the tokens each expert took per step, the tokens
each rank's experts took (strategy expert), and each step's time against its load imbalance,
which is what the slowest rank's busiest expert makes every rank wait for."""

from __future__ import annotations

from parakit.plots.base import Figure, finish, skip_note
from parakit.records.experts import tokens_per_rank
from parakit.records.result import RunResult, run_label
from parakit.records.segments import segment_results


def _routed(results: list[RunResult]) -> list[RunResult]:
    return [r for r in results if any(s.expert_tokens for s in r.steps)]


def experts(results: list[RunResult]) -> Figure:
    """Tokens per expert and per rank over the steps, and step time against load imbalance.

    Args:
        results: Runs of any status; runs of a dense model are skipped, counted in the
            subtitle. A switched run is drawn a segment at a time (its strategy may change).

    Returns:
        Three panels: tokens per expert per step (a line per expert); tokens per rank per
        step under strategy expert (rank r holds experts [r E/R, (r+1) E/R)); and each
        measured step's time (ms, slowest rank) against its imbalance (max/mean per expert).
    """
    results = segment_results(results)
    runs = _routed(results)
    # set_subplots on parakit's Figure: Figure(make_subplots(...)) would copy the traces and
    # layout but not the grid, and every row=/col= below would land in the first panel
    fig = Figure().set_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        "tokens per expert", "tokens per rank (strategy expert)", "step time against imbalance"))
    for run in runs:
        label, steps = run_label(run.config, run.world_size), [s for s in run.steps if s.expert_tokens]
        x = [s.step for s in steps]
        for e in range(len(steps[0].expert_tokens)):
            fig.add_scatter(x=x, y=[s.expert_tokens[e] for s in steps], mode="lines", name=f"{label} · expert {e}",
                            legendgroup=run.run_id, row=1, col=1,
                            hovertemplate=f"{label}<br>step %{{x}}: expert {e} took %{{y}} tokens<extra></extra>")
        if run.config.get("strategy") == "expert":
            per_rank = [tokens_per_rank(s.expert_tokens, run.world_size) for s in steps]
            for r in range(run.world_size):
                fig.add_scatter(x=x, y=[p[r] for p in per_rank], mode="lines", name=f"{label} · rank {r}",
                                legendgroup=run.run_id, line={"dash": "dot"}, row=1, col=2,
                                hovertemplate=f"{label}<br>step %{{x}}: rank {r}'s experts took %{{y}} tokens"
                                              "<extra></extra>")
        measured = [s for s in steps if not s.warmup and s.expert_imbalance is not None]
        fig.add_scatter(x=[s.expert_imbalance for s in measured], y=[s.step_time_s * 1e3 for s in measured],
                        mode="markers", name=f"{label} · steps", legendgroup=run.run_id, row=1, col=3,
                        customdata=[s.step for s in measured],
                        hovertemplate=f"{label}<br>step %{{customdata}}: imbalance %{{x:.2f}}, "
                                      "%{y:.1f} ms<extra></extra>")
    fig.update_xaxes(title_text="step", row=1, col=2)
    fig.update_xaxes(title_text="imbalance (max / mean tokens per expert)", row=1, col=3)
    fig.update_yaxes(title_text="step time (ms)", row=1, col=3)
    notes = [skip_note(results, len(runs), "no experts"),
             "tokens summed over the blocks and ranks, each of a token's top_k choices counted"]
    return finish(fig, "How the experts were loaded", "step", "tokens", notes)
