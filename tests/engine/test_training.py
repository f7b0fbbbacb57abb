"""Real training on 2 CPU engines with gloo: ddp matches single, engines are reused, a user's
own model and data travel to the engines, and a failing rank leaves the engines usable."""

import math

import pytest
import torch
from torch import nn

from parakit.records.store import read_runs

STEPS = 20


def close(a, b, rel=1e-5):
    return math.isclose(a, b, rel_tol=rel)


def test_ddp_on_two_ranks_matches_single(session):
    single = session.run("mlp", strategy="single", steps=STEPS, batch_size=64, seed=3)
    ddp = session.run("mlp", strategy="ddp", workers=2, steps=STEPS, batch_size=64, seed=3)
    assert single.ok and ddp.ok, (single.error, ddp.error)
    assert (single.world_size, ddp.world_size) == (1, 2)
    assert ddp.backend == "gloo" and single.backend is None
    losses_single = [s.loss for s in single.steps]
    losses_ddp = [s.loss for s in ddp.steps]
    assert len(losses_ddp) == STEPS
    assert losses_single[-1] < losses_single[0]  # it trains
    mismatched = [(i, a, b) for i, (a, b) in enumerate(zip(losses_single, losses_ddp)) if not close(a, b)]
    assert mismatched == []
    # every rank ends with bit-identical parameters
    assert ddp.summary["params_in_sync"] is True
    assert len({r.params_digest for r in ddp.ranks}) == 1


def test_summary_and_steps_are_measured(session):
    r = session.run("gpt", workers=2, steps=6, warmup_steps=2, batch_size=8)
    assert r.ok, r.error
    s = r.summary
    assert [step.warmup for step in r.steps] == [True, True, False, False, False, False]
    assert s["measured_steps"] == 4
    measured = sorted(step.step_time_s for step in r.steps[2:])
    assert s["step_time_s"] == pytest.approx((measured[1] + measured[2]) / 2)
    assert s["samples_per_s"] == pytest.approx(8 / s["step_time_s"])
    assert s["loss_first"] == r.steps[0].loss and s["loss_last"] == r.steps[-1].loss
    assert s["peak_mem_bytes"] > 10 * 2**20  # an engine with torch holds more than 10 MiB
    assert all(len(step.rank_step_time_s) == 2 for step in r.steps)
    assert r.started_at < r.ended_at
    # the run was saved to the store
    assert r.run_id in {saved.run_id for saved in read_runs(session.runs_dir)}


def test_second_run_reuses_engines_and_group(session):
    pids = session._engines.pids()
    session.run("cnn", workers=2, steps=3, batch_size=8)
    group = session._engines.group
    session.run("mlp", workers=2, steps=3, batch_size=8, seed=5)
    assert session._engines.pids() == pids
    assert session._engines.group == group == (tuple(session._engines.ids(2)), "gloo")
    # a world-size change rebuilds the group, still on the same engines
    one = session.run("mlp", strategy="ddp", workers=1, steps=3, batch_size=8)
    assert one.ok and one.world_size == 1
    assert session._engines.group == (tuple(session._engines.ids(1)), "gloo")
    assert session._engines.pids() == pids


class TinyNet(nn.Module):
    """A model class defined in the test file, which the engines cannot import."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x).squeeze(-1)


def tiny_data(step, global_batch_size):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(global_batch_size, 6, generator=g)
    return x, x[:, :3].sum(dim=1) - x[:, 3:].sum(dim=1)  # linear: learnable in a few steps


def mse(outputs, targets):
    return nn.functional.mse_loss(outputs, targets)


def test_users_own_model_data_and_loss_train_on_two_engines(session):
    settings = dict(data=tiny_data, loss=mse, steps=20, batch_size=32, lr=0.02)
    single = session.run(TinyNet, strategy="single", **settings)
    ddp = session.run(TinyNet, workers=2, **settings)
    assert single.ok and ddp.ok, (single.error, ddp.error)
    assert ddp.config["model"] == "TinyNet" and ddp.config["data"] == "tiny_data"
    losses = [s.loss for s in ddp.steps]
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns (each step draws fresh data: compare means)
    assert all(close(a.loss, b.loss) for a, b in zip(single.steps, ddp.steps))


def test_a_dataset_is_read_through_a_distributed_sampler(session):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    dataset = torch.utils.data.TensorDataset(x, x.sum(dim=1))
    single = session.run(TinyNet, data=dataset, loss=mse, strategy="single", steps=8, batch_size=16)
    ddp = session.run(TinyNet, data=dataset, loss=mse, workers=2, steps=8, batch_size=16)
    assert single.ok and ddp.ok, (single.error, ddp.error)
    # each step's global batch is the same set of examples at both world sizes (past an epoch, too)
    assert all(close(a.loss, b.loss) for a, b in zip(single.steps, ddp.steps))


def fails_on_rank_1(step, global_batch_size):
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() == 1 and step == 2:
        raise RuntimeError("bad batch on purpose")
    return tiny_data(step, global_batch_size)


def test_an_error_on_one_rank_is_reported_saved_and_the_next_run_works(session):
    failed = session.run(TinyNet, data=fails_on_rank_1, loss=mse, workers=2, steps=10, batch_size=8)
    assert failed.status == "failed"
    assert "rank 1" in failed.error and "bad batch on purpose" in failed.error
    saved = {r.run_id: r for r in read_runs(session.runs_dir)}
    assert saved[failed.run_id].status == "failed"
    # The healthy rank may be blocked inside gloo's all-reduce, where no signal reaches it;
    # then the engines are replaced (tests/test_faults.py checks that in detail). Either way the
    # session is ready for the next run without a kernel restart.
    after = session.run("mlp", workers=2, steps=3, batch_size=8)
    assert after.ok, after.error
    assert session.workers == 2


@pytest.mark.parametrize(
    "settings, fix",
    [
        (dict(workers=3, batch_size=64), "use a multiple of 3"),
        (dict(strategy="single", workers=2), "use strategy ddp"),
        (dict(workers=10_000), "use workers <="),
        (dict(model="resnet"), "model must be one of"),
    ],
)
def test_bad_run_settings_are_refused_before_engines_are_touched(session, settings, fix):
    before = (session._engines.pids(), session._engines.group, len(read_runs(session.runs_dir)))
    with pytest.raises(ValueError, match=fix):
        session.run(**settings)
    after = (session._engines.pids(), session._engines.group, len(read_runs(session.runs_dir)))
    assert after == before
