"""Gradient compression hooks, local SGD and delayed averaging, run for real: 2 ranks, gloo,
tiny models.

All distributed cases of this module run in one spawn (two processes, one torch import each),
started by the module fixture; each test asserts on its part of the results.
"""

import math

import numpy as np
import pytest
import torch

from dist_helpers import delayed_sgd, local_sgd, run_ranks, run_sequence, sparse_residual, train_ddp
from parakit.engine.compression.sparse import random_indices

KINDS = ["none", "fp16", "bf16", "powersgd:2", "topk:0.01", "randomk:0.01"]
CALLS = {
    **{f"train {kind}": (train_ddp, {"compression": kind}) for kind in KINDS},
    **{f"square {kind}": (train_ddp, {"compression": kind, "square": True, "width": 256, "steps": 4})
       for kind in ("none", "powersgd:2", "topk:0.01", "randomk:0.01")},
    "topk no-ef train": (train_ddp, {"compression": "topk:0.01", "error_feedback": False}),
    "topk ef": (sparse_residual, {"kind": "topk", "error_feedback": True}),
    "topk no-ef": (sparse_residual, {"kind": "topk", "error_feedback": False}),
    "randomk ef": (sparse_residual, {"kind": "randomk", "error_feedback": True}),
    "local": (local_sgd, {"every": 3, "global_steps": 0, "steps": 7}),
    "post-local": (local_sgd, {"every": 2, "global_steps": 2, "steps": 6}),
    "delayed": (delayed_sgd, {"delay": 2, "steps": 6, "lr": 0.1}),
}


@pytest.fixture(scope="module")
def ranks():
    """{case name: [rank 0 result, rank 1 result]}"""
    per_rank = run_ranks(run_sequence, list(CALLS.values()), timeout_s=120)
    return {name: [r[i] for r in per_rank] for i, name in enumerate(CALLS)}


@pytest.mark.parametrize("kind", KINDS)
def test_every_hook_keeps_the_ranks_bit_identical(ranks, kind):
    r0, r1 = ranks[f"train {kind}"]
    assert np.array_equal(r0["params"], r1["params"])
    assert np.isfinite(r0["params"]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_every_hook_moves_the_weights(ranks, kind):
    rank = ranks[f"train {kind}"][0]
    assert not np.allclose(rank["params"], rank["initial"])


@pytest.mark.parametrize("kind, atol", [("fp16", 1e-3), ("bf16", 1e-2)])
def test_cast_hooks_train_like_plain_all_reduce(ranks, kind, atol):
    plain = ranks["train none"][0]["params"]
    np.testing.assert_allclose(ranks[f"train {kind}"][0]["params"], plain, atol=atol)
    assert not np.array_equal(ranks[f"train {kind}"][0]["params"], plain)  # the cast did happen


def test_none_sends_exactly_the_gradient_bytes_every_step(ranks):
    for rank in ranks["train none"]:
        assert all(comm == unc == rank["grad_bytes"] for comm, unc in rank["steps"])
        assert rank["total_comm_bytes"] == rank["grad_bytes"] * len(rank["steps"])


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_half_precision_casts_send_half(ranks, kind):
    for rank in ranks[f"train {kind}"]:
        assert all(comm * 2 == unc == rank["grad_bytes"] for comm, unc in rank["steps"])


def test_powersgd_sends_plain_gradients_first_then_p_q_and_the_vectors(ranks):
    rank = ranks["square powersgd:2"][0]
    full = rank["grad_bytes"]
    # Steps 0 and 1 come before start_powerSGD_iter=2: plain all-reduce of every bucket.
    assert [comm for comm, _ in rank["steps"][:2]] == [full, full]
    # Then per 256x256 weight P (256x2) and Q (256x2); the 256-long biases go uncompressed.
    expected = 4 * (2 * (256 * 2 + 256 * 2) + 2 * 256)
    assert [comm for comm, _ in rank["steps"][2:]] == [expected, expected]
    assert all(unc == full for _, unc in rank["steps"])
    assert full / expected > 50


def test_topk_sends_k_values_and_k_int32_indices(ranks):
    rank = ranks["square topk:0.01"][0]
    n = sum(rank["numels"])  # 131584 fp32 gradients: one bucket (DDP's first is 1 MiB)
    k = math.ceil(0.01 * n)
    assert all(comm == k * (4 + 4) for comm, _ in rank["steps"])
    assert rank["grad_bytes"] / rank["steps"][-1][0] > 40


def test_randomk_sends_only_k_values(ranks):
    rank = ranks["square randomk:0.01"][0]
    k = math.ceil(0.01 * sum(rank["numels"]))
    assert all(comm == 4 * k for comm, _ in rank["steps"])


def test_topk_error_feedback_loses_nothing(ranks):
    # Same batch three times: what was applied plus what is still owed is three true gradients.
    for rank in ranks["topk ef"]:
        np.testing.assert_allclose(rank["applied"] + rank["residual"], 3 * rank["true"], atol=1e-6)
        # ...and the residual was really used: later steps sent other entries than the first.
        assert not np.allclose(rank["applied"], 3 * rank["first"])


def test_topk_without_error_feedback_drops_the_rest(ranks):
    for rank in ranks["topk no-ef"]:
        assert not rank["residual"].any()
        np.testing.assert_array_equal(rank["applied"], 3 * rank["first"])  # the same k each time
        assert not np.allclose(rank["applied"], 3 * rank["true"], atol=1e-3)
        assert np.count_nonzero(rank["first"]) <= 2 * math.ceil(0.05 * rank["first"].size)


def test_topk_without_error_feedback_keeps_ranks_identical(ranks):
    r0, r1 = ranks["topk no-ef train"]
    assert np.array_equal(r0["params"], r1["params"])


def test_randomk_picks_the_same_entries_on_every_rank(ranks):
    r0, r1 = ranks["randomk ef"]
    assert not np.array_equal(r0["local"], r1["local"])  # the ranks' own gradients differ...
    np.testing.assert_array_equal(r0["first"], r1["first"])  # ...the averaged one does not
    k = math.ceil(0.05 * r0["first"].size)
    assert 0 < np.count_nonzero(r0["first"]) <= k
    for rank in (r0, r1):
        np.testing.assert_allclose(rank["applied"] + rank["residual"], 3 * rank["true"], atol=1e-6)


def test_local_sgd_ranks_diverge_between_averages_and_agree_after(ranks):
    r0, r1 = ranks["local"]
    averaged = [step[0] for step in r0["steps"]]
    assert averaged == [False, False, True, False, False, True, False]  # every H=3 local steps
    for (avg, digest0, comm, unc), (_, digest1, _, _) in zip(r0["steps"], r1["steps"]):
        assert (digest0 == digest1) is avg
        assert comm == (r0["param_bytes"] if avg else 0)
        assert unc == r0["param_bytes"]  # what every-step DDP would have sent


def test_post_local_sgd_averages_gradients_first(ranks):
    r0, r1 = ranks["post-local"]
    steps0, steps1 = r0["steps"], r1["steps"]
    full = r0["param_bytes"]
    # Steps 0-1: DDP gradient all-reduce (identical ranks); then local pairs, averaged at 3, 5.
    assert [s[0] for s in steps0] == [False, False, False, True, False, True]
    assert [s[1] == t[1] for s, t in zip(steps0, steps1)] == [True, True, False, True, False, True]
    assert [s[2] for s in steps0] == [full, full, 0, full, 0, full]


def test_delayed_correction_leaves_only_the_last_d_local_steps_apart(ranks):
    """delayed:2 with plain SGD: after every step the ranks differ by exactly their own gradients
    of the last 2 steps (every older one was swapped for the average), and their mean moves by
    the mean of the ranks' gradients, as synchronous SGD's does."""
    r0, r1 = ranks["delayed"]
    delay, lr = 2, 0.1
    for t in range(len(r0)):
        recent = range(max(0, t - delay + 1), t + 1)
        apart = -lr * sum(r0[s]["local"] - r1[s]["local"] for s in recent)
        np.testing.assert_allclose(r0[t]["params"] - r1[t]["params"], apart, atol=1e-6)
        assert not np.allclose(r0[t]["params"], r1[t]["params"])  # the local steps did differ
    for t in range(1, len(r0)):
        step = (r0[t]["params"] + r1[t]["params"] - r0[t - 1]["params"] - r1[t - 1]["params"]) / 2
        np.testing.assert_allclose(step, -lr * (r0[t]["local"] + r1[t]["local"]) / 2, atol=1e-6)
    assert all(s["sent"] == r0[0]["grad_bytes"] for s in r0)  # a copy of every bucket, every step


@pytest.mark.parametrize("n, k", [(1000, 10), (1000, 400), (50, 50), (7, 1)])
def test_random_indices_are_k_distinct_and_reproducible(n, k):
    a = random_indices(n, k, torch.Generator().manual_seed(3))
    b = random_indices(n, k, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.numel() == k == a.unique().numel()
    assert 0 <= int(a.min()) and int(a.max()) < n


def test_random_indices_cover_the_range():
    seen = torch.cat([random_indices(100, 5, torch.Generator().manual_seed(s)) for s in range(200)])
    assert seen.unique().numel() == 100  # 1000 draws of 100 slots: every index turns up
