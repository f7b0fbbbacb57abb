"""Memory per rank on 2 real CPU engines: ddp and fsdp report each part, and the parts add up
the way the layouts say they should."""

from __future__ import annotations

import pytest

from parakit.engine.memory import NO_ALLOCATOR
from parakit.engine.memory_snapshot import NO_CUDA
from parakit.records.memory import PARTS
from parakit.records.store import read_runs

GPT = {"model": "gpt", "workers": 2, "steps": 3, "warmup_steps": 2, "profile_every": 0, "live": False}


@pytest.fixture(scope="module")
def runs(session):
    out = {
        "ddp": session.run(strategy="ddp", batch_size=8, **GPT),
        "ddp, twice the batch": session.run(strategy="ddp", batch_size=16, memory_snapshot=True, **GPT),
        "fsdp": session.run(strategy="fsdp", batch_size=8, **GPT),
    }
    for name, r in out.items():
        assert r.ok, (name, r.error)
    return out


def test_every_rank_reports_each_part(runs):
    for r in runs.values():
        for rank in r.ranks:
            assert all(getattr(rank, part) > 0 for part in PARTS), rank
        assert r.summary["activation_bytes"] == max(rank.activation_bytes for rank in r.ranks)
        # counted on the last warm-up step, and what counting took there is reported
        assert "during step 1 (the last warm-up step)" in r.summary["method"]["activation_bytes"]
        assert r.summary["instrument_overhead"]["activation_count_s"] > 0


def test_ddp_holds_a_replica_and_fsdp_half_of_it(runs):
    ddp, fsdp = runs["ddp"], runs["fsdp"]
    for rank in ddp.ranks:
        assert rank.gradient_bytes == rank.param_bytes  # fp32: one gradient per parameter
        # AdamW: two moments per parameter, plus a step count per tensor
        assert 2 * rank.param_bytes < rank.optimizer_bytes < 2.01 * rank.param_bytes
    whole = ddp.ranks[0].param_bytes
    assert sum(rank.param_bytes for rank in fsdp.ranks) == pytest.approx(whole, rel=0.01)
    for rank in fsdp.ranks:
        assert rank.param_bytes == pytest.approx(whole / 2, rel=0.02)
        assert rank.gradient_bytes == rank.param_bytes  # each rank keeps its shard's gradients
        assert rank.optimizer_bytes < 0.51 * ddp.ranks[0].optimizer_bytes
        # the same rows per rank save the same activations: the parameters fsdp gathers for
        # forward are parameters, not activations
        assert rank.activation_bytes == ddp.ranks[0].activation_bytes


def test_activations_grow_with_the_batch(runs):
    small, large = runs["ddp"].summary["activation_bytes"], runs["ddp, twice the batch"].summary["activation_bytes"]
    assert 1.9 < large / small < 2.05  # nearly all of them scale with the rows


def test_on_cpus_the_allocator_and_snapshot_say_why_and_nothing_is_written(runs, session):
    r = runs["ddp, twice the batch"]
    assert r.summary["reserved_peak_bytes"] is None and r.summary["fragmentation"] is None
    assert r.unmeasured["reserved_peak_bytes"] == r.unmeasured["fragmentation"] == NO_ALLOCATOR
    assert r.unmeasured["memory_snapshot"] == NO_CUDA and r.memory_snapshots == []
    assert not list(session.runs_dir.glob(f"{r.run_id}-memory*"))
    assert "memory_snapshot" not in runs["ddp"].unmeasured  # said only where one was asked for
    saved = {s.run_id: s for s in read_runs(session.runs_dir)}[r.run_id]
    assert [k.activation_bytes for k in saved.ranks] == [k.activation_bytes for k in r.ranks]


def test_checkpointing_full_saves_less_and_selective_is_not_counted(runs, session):
    full = session.run(strategy="ddp", batch_size=8, activation_checkpointing="full", **GPT)
    selective = session.run(strategy="ddp", batch_size=8, activation_checkpointing="selective", **GPT)
    assert full.ok and selective.ok
    assert 0 < full.summary["activation_bytes"] <= 0.5 * runs["ddp"].summary["activation_bytes"]
    # selective keeps its tensors where the hooks cannot see them: no number rather than a low one
    assert selective.summary["activation_bytes"] is None
    assert "torch.utils.checkpoint" in selective.unmeasured["activation_bytes"]
