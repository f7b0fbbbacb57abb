"""A mixture of experts in the records: the ranks' routing counts added up per step, the load
imbalance by its one rule, the all-to-all bytes, and the figure that draws them."""

import pytest

from parakit.config.run import RunConfig
from parakit.plots.runs import PLOTS
from parakit.records.experts import load_imbalance, tokens_per_rank
from parakit.records.result import RunResult
from parakit.records.summary import measure
from record_helpers import report

CONFIG = RunConfig(model="gpt", model_options={"experts": 4}, strategy="expert", workers=2, steps=3, warmup_steps=1,
                   batch_size=8)


def test_imbalance_is_the_busiest_expert_over_the_mean():
    assert load_imbalance([4, 4, 4, 4]) == 1
    assert load_imbalance([16, 0, 0, 0]) == 4
    assert load_imbalance([0, 0]) is None  # nothing routed: no figure, not 1
    assert tokens_per_rank([1, 2, 3, 4], 2) == [3, 7]


def _run() -> RunResult:
    ranks = [report(rank=r, losses=[1.0] * 3, step_time_s=[0.1, 0.1 + r * 0.01, 0.3],
                    expert_tokens=[[2, 2, 2, 2], [4, 2, 1, 1], [1, 1, 1, 1 + r]], all_to_all_bytes=[100, 200 + r, 300])
             for r in range(2)]
    result = RunResult(run_id="moe", status="ok", config=CONFIG.describe(), world_size=2, backend="gloo",
                       device_names=["cpu", "cpu"])
    measure(result, CONFIG, ranks)
    return result


def test_the_ranks_counts_add_up_per_step_and_summarise_over_the_measured_steps():
    run = _run()
    assert [s.expert_tokens for s in run.steps] == [[4, 4, 4, 4], [8, 4, 2, 2], [2, 2, 2, 3]]
    assert [s.expert_imbalance for s in run.steps] == [1, 2, pytest.approx(3 / 2.25)]
    assert run.steps[1].rank_all_to_all_bytes == [200, 201]
    assert run.summary["expert_imbalance"] == pytest.approx((2 + 3 / 2.25) / 2)  # steps 1 and 2: after the warm-up
    assert run.summary["all_to_all_bytes_per_step"] == pytest.approx((201 + 300) / 2)
    assert RunResult.from_dict(run.to_dict()).steps[1].expert_tokens == [8, 4, 2, 2]


def test_the_experts_figure_draws_experts_ranks_and_imbalance():
    fig = PLOTS["experts"]([_run()])
    names = [d.name.split(" · ")[1] for d in fig.data]
    assert names == ["expert 0", "expert 1", "expert 2", "expert 3", "rank 0", "rank 1", "steps"]
    assert list(fig.data[4].y) == [8, 12, 4] and list(fig.data[5].y) == [8, 4, 5]  # rank 0 holds experts 0 and 1
    assert list(fig.data[6].x) == [2, pytest.approx(3 / 2.25)]
    # each panel holds its own traces: experts in the first, ranks in the second, steps in the third
    assert [d.xaxis for d in fig.data] == ["x"] * 4 + ["x2"] * 2 + ["x3"]
