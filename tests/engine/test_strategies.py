"""Every strategy trains the same model to the same losses as single, on the same engines.

Same seed, same global batch, fp32, 20 steps on CPU engines with gloo: the loss curves of
ddp, fsdp, pipeline (each schedule), tensor, the 2-D hybrids and context must equal single's
within 1e-4 relative. They differ only in the order floating-point sums are taken (sharded
matmuls, all-reduce, attention merged block by block round a ring), which moves losses by
about 1e-7 here.
"""

import pytest
import torch
from torch import nn

import parakit
from parakit.config.formulas import ring_bytes_per_step

STEPS = 20
GPT = dict(model="gpt", model_options={"depth": 4, "width": 64, "heads": 4, "seq_len": 32},
           steps=STEPS, batch_size=16, seed=7)
REL = 1e-4


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    with parakit.Session(workers=4, device="cpu", runs_dir=runs, progress=False) as s:
        yield s


@pytest.fixture(scope="module")
def single_gpt(four):
    r = four.run(strategy="single", **GPT)
    assert r.ok, r.error
    assert r.steps[-1].loss < r.steps[0].loss  # it trains
    return r


def mismatches(run, reference, rel=REL):
    assert run.ok, run.error
    assert len(run.steps) == len(reference.steps) == STEPS
    return [(s.step, s.loss, t.loss) for s, t in zip(run.steps, reference.steps)
            if abs(s.loss - t.loss) > rel * abs(t.loss)]


LAYOUTS = [
    dict(strategy="ddp", workers=2),
    dict(strategy="fsdp", workers=2),
    dict(strategy="tensor", workers=2),
    dict(strategy="pipeline", workers=2, schedule="gpipe"),
    dict(strategy="pipeline", workers=2, schedule="1f1b"),
    dict(strategy="pipeline", workers=2, schedule="interleaved"),
    dict(strategy="hybrid", workers=4, hybrid="fsdp+tensor", mesh="2x2"),
    dict(strategy="hybrid", workers=4, hybrid="ddp+tensor", mesh="2x2"),
    dict(strategy="hybrid", workers=4, hybrid="pipeline+ddp", mesh="2x2"),
    dict(strategy="context", workers=2),  # seq_len 32 in 4 chunks, ring attention between 2 ranks
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(str(v) for v in d.values()))
def test_every_strategy_matches_single(four, single_gpt, layout):
    run = four.run(**GPT, **layout)
    assert mismatches(run, single_gpt) == []
    assert run.world_size == layout["workers"]
    assert all(r.param_bytes and r.optimizer_bytes for r in run.ranks)


def test_context_sends_keys_and_values_round_the_ring_and_keeps_half_the_activations(four, single_gpt):
    run = four.run(**{**GPT, "steps": 4}, strategy="context", workers=2)
    assert run.ok, run.error
    assert run.summary.context_path == "ring (point-to-point)"  # torch's context_parallel has no CPU kernel
    o = GPT["model_options"]
    # Per block, forward: the other rank's keys and values (R-1 passes); backward: them again,
    # and their gradients, which come home in one more pass (R passes). 4-byte floats.
    kv = 2 * GPT["batch_size"] * o["seq_len"] // 2 * o["width"] * 4
    assert run.summary.ring_bytes_per_step == o["depth"] * kv * (1 + 1 + 2) == ring_bytes_per_step(
        batch_size=GPT["batch_size"], seq_len=o["seq_len"], width=o["width"], depth=o["depth"], ranks=2)
    params = sum(p.numel() for p in _gpt_params(o)) * 4
    assert run.summary.comm_bytes_per_step == run.summary.ring_bytes_per_step + params  # + the gradients' all-reduce
    assert run.summary.comm_time_s > 0  # the ring's gloo:send/recv count as communication
    assert run.summary.params_in_sync is True  # a replica on each rank, its gradients all-reduced
    # Each rank keeps the activations of half of each sequence (and no T x T scores: the ring
    # recomputes them in backward from the saved log-sum-exp).
    assert run.summary.activation_bytes < 0.6 * single_gpt.summary.activation_bytes


def test_fsdp_holds_at_most_0_6_of_ddp_state_per_rank(four):
    gpt = dict(model="gpt", steps=4, batch_size=8, workers=2)
    ddp = four.run(strategy="ddp", **gpt)
    fsdp = four.run(strategy="fsdp", **gpt)
    assert ddp.ok and fsdp.ok, (ddp.error, fsdp.error)
    state = lambda r: r.summary["param_bytes"] + r.summary["optimizer_bytes"]
    n_params = sum(p.numel() for p in _gpt_params())
    assert ddp.summary["param_bytes"] == 4 * n_params  # a full fp32 replica on each rank
    assert ddp.summary["optimizer_bytes"] >= 2 * 4 * n_params  # AdamW's two moments
    assert state(fsdp) <= 0.6 * state(ddp)
    assert ddp.summary["params_in_sync"] is True and fsdp.summary["params_in_sync"] is None


def _gpt_params(options=None):
    from parakit.engine.workloads import build_model

    return build_model("gpt", options or {}).parameters()


def test_pipeline_reports_its_bubble_beside_the_ideal(four):
    run = four.run(strategy="pipeline", workers=2, model="mlp", steps=6, batch_size=32, microbatches=4)
    assert run.ok, run.error
    assert [r.stages for r in run.ranks] == [[0], [1]]
    assert run.summary["bubble_ideal"] == pytest.approx(1 / 5)  # (p-1)/(m+p-1), p=2, m=4
    assert all(0 < r.bubble < 1 for r in run.ranks)
    assert run.config["microbatches"] == 4 and run.config["schedule"] == "gpipe"
    # Only the last stage computes the loss, and it is still the whole batch's loss.
    assert all(s.loss is not None for s in run.steps)


def test_strategies_follow_each_other_on_the_same_engines(four):
    pids = four._engines.pids()
    order = ["ddp", "pipeline", "tensor", "fsdp", "ddp"]
    runs = [four.run(strategy=s, workers=2, model="mlp", steps=3, batch_size=16) for s in order]
    assert [r.status for r in runs] == ["ok"] * len(order), [r.error for r in runs]
    assert four._engines.pids() == pids


class Stack(nn.Module):
    """A user's model: its blocks in a Sequential named `layers`."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.layers = nn.Sequential(*(nn.Sequential(nn.Linear(32, 32), nn.Tanh()) for _ in range(4)))
        self.out = nn.Linear(32, 3)

    def forward(self, x):
        return self.out(self.layers(self.inp(x)))


def stack_data(step, n):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def test_a_users_model_in_pipeline_and_fsdp_matches_single(four):
    own = dict(model=Stack, data=stack_data, steps=STEPS, batch_size=16, seed=3)
    single = four.run(strategy="single", **own)
    pipe = four.run(strategy="pipeline", workers=2, split=["layers.2"], **own)
    fsdp = four.run(strategy="fsdp", workers=2, **own)
    assert single.ok, single.error
    assert mismatches(pipe, single) == [] and mismatches(fsdp, single) == []
    # a split point the model lacks is refused before any engine, with the names nearest to it
    with pytest.raises(ValueError, match=r"split names 'layers.9', which the model does not have; the nearest are "
                                         r"layers.3, layers.2"):
        four.run(strategy="pipeline", workers=2, split=["layers.9"], **own)


def test_tensor_parallel_takes_a_users_plan(four):
    own = dict(model=Stack, data=stack_data, steps=5, batch_size=16, seed=3)
    single = four.run(strategy="single", **own)
    plan = {"layers.0.0": "colwise", "layers.1.0": "rowwise"}
    tp = four.run(strategy="tensor", workers=2, tp_plan=plan, **own)
    assert mismatches_n(tp, single) == []
    full = 32 * 32 + 32
    # Each rank holds half of the two planned layers (the row-wise bias stays whole).
    assert single.ranks[0].param_bytes - tp.ranks[0].param_bytes == 4 * (full // 2 + 32 * 16)


def mismatches_n(run, reference):
    assert run.ok, run.error
    return [(s.loss, t.loss) for s, t in zip(run.steps, reference.steps) if abs(s.loss - t.loss) > REL * abs(t.loss)]


# -- a mixture of experts: strategy expert against single, and switched to and from ddp -------
MOE = dict(GPT, model_options={**GPT["model_options"], "experts": 4, "top_k": 2})


@pytest.fixture(scope="module")
def single_moe(four):
    r = four.run(strategy="single", **MOE)
    assert r.ok, r.error
    return r


def test_expert_parallel_matches_single_and_records_its_routing(single_moe, four):
    expert = four.run(strategy="expert", workers=2, **MOE)
    assert mismatches(expert, single_moe) == []
    # the same tokens reach the same experts; each rank holds half of them, so fewer parameters
    assert [s.expert_tokens for s in expert.steps] == [s.expert_tokens for s in single_moe.steps]
    assert sum(expert.steps[0].expert_tokens) == 4 * 2 * 16 * 32  # blocks x top_k x tokens of the batch
    assert expert.ranks[0].param_bytes < single_moe.ranks[0].param_bytes
    assert all(s.expert_imbalance >= 1 for s in expert.steps)
    assert expert.summary["expert_imbalance"] == pytest.approx(single_moe.summary["expert_imbalance"])
    # the all-to-alls send bytes (none with every expert on one rank) and count as communication
    assert expert.summary["all_to_all_bytes_per_step"] > 0 == single_moe.summary["all_to_all_bytes_per_step"]
    assert expert.summary["comm_time_s"] > 0 and expert.summary["params_in_sync"] is None
    assert "expert_imbalance" not in four.run(strategy="single", model="mlp", steps=3).summary  # dense: no key


def test_expert_switches_to_ddp_and_back_as_one_run(single_moe, four):
    run = four.run(strategy="expert", workers=2, switch={6: {"strategy": "ddp"}, 12: {"strategy": "expert"}}, **MOE)
    assert mismatches(run, single_moe) == []  # each rank saved its experts under their global names
    assert [g["settings"]["strategy"] for g in run.segments] == ["expert", "ddp", "expert"]
    assert [g.summary["all_to_all_bytes_per_step"] > 0 for g in run.segments] == [True, False, True]
