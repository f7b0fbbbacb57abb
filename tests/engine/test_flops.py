"""Model FLOPs per step (parakit/engine/flops.py); the peak table and MFU are in test_formulas.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from parakit.config.run import RunConfig
from parakit.config import formulas
from parakit.engine import flops
from parakit.engine.workloads import build_model, data


def lm_loss(outputs, targets):
    return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())


def test_gpt_formula_matches_a_hand_count():
    w, L, H, T, V = 8, 2, 2, 4, data.vocab_size()
    config = RunConfig(model="gpt", model_options={"width": w, "depth": L, "heads": H, "seq_len": T},
                       batch_size=6, strategy="single")
    # Per block: q, k, v, proj (w*w + w each), two LayerNorms (2w each), MLP w->4w->w with
    # biases (8w^2 + 5w): 12w^2 + 13w. Then ln_f (2w) and the untied head (w*V, no bias).
    # The token and position embeddings are lookups and are left out.
    n = L * (12 * w * w + 13 * w) + 2 * w + w * V
    assert flops.gpt_matmul_params(config.options) == n
    per_token = 6 * n + 12 * L * H * (w // H) * T
    tokens = T * 6

    got, method = flops.step_flops(config, None, torch.zeros(2, T, dtype=torch.long), None, lm_loss)

    assert method == flops.FORMULA == "formula: 6N + 12LHQT per token"
    assert got == per_token * tokens


def test_gpt_formula_and_flop_counter_differ_only_by_biases_and_norms():
    """The counter sees matmuls only: the formula's N also holds biases and LayerNorm weights."""
    w, L, H, T = 16, 2, 4, 8
    options = {"width": w, "depth": L, "heads": H, "seq_len": T}
    model = build_model("gpt", options)
    x = torch.randint(0, data.vocab_size(), (3, T))

    counted, reason = flops.count_step_flops(model, x, x, lm_loss)
    formula = flops.gpt_flops_per_token(flops.gpt_matmul_params(options), L, H, w // H, T) * 3 * T

    assert reason is None
    biases_and_norms = L * 13 * w + 2 * w
    assert formula - counted == 6 * biases_and_norms * 3 * T


def test_flop_counter_on_a_linear_mlp_counts_no_input_gradient_for_the_first_layer():
    b, i, h, o = 4, 16, 32, 8
    model = nn.Sequential(nn.Linear(i, h, bias=False), nn.ReLU(), nn.Linear(h, o, bias=False))
    x, y = torch.randn(b, i), torch.randint(0, o, (b,))

    counted, _ = flops.count_step_flops(model, x, y, F.cross_entropy)

    # Forward 2*B*in*out per layer; backward 2*B*in*out for the weight gradient and 2*B*in*out
    # for the input gradient. The first layer's input (the data) needs no gradient, so torch
    # skips that matmul: 4*B*i*h there, 6*B*h*o in the second layer, not 6 * B * params.
    assert counted == 4 * b * i * h + 6 * b * h * o
    assert counted < 6 * b * (i * h + h * o)


def test_counted_flops_scale_from_the_sample_to_the_global_batch():
    config = RunConfig(model="mlp", model_options={"in_features": 8, "width": 16, "depth": 2, "classes": 4},
                       batch_size=32, strategy="single")
    model = build_model("mlp", dict(config.model_options))
    x, y = torch.randn(4, 8), torch.randint(0, 4, (4,))

    got, method = flops.step_flops(config, model, x, y, F.cross_entropy)
    sample, _ = flops.count_step_flops(model, x, y, F.cross_entropy)

    assert method == flops.COUNTED
    assert got == sample * 32 / 4
    # blocks 8->16 (no input gradient), head 16->4; addmm's bias adds are not counted
    assert sample == 4 * 4 * 8 * 16 + 6 * 4 * 16 * 4


def test_counting_leaves_the_models_training_state_untouched():
    class NeedsRealValues(nn.Module):
        """Reads a value, which meta tensors do not have: the count falls back to CPU."""

        def __init__(self):
            super().__init__()
            self.norm, self.linear = nn.BatchNorm1d(8), nn.Linear(8, 2)

        def forward(self, x):
            assert x.abs().sum().item() >= 0
            return self.linear(self.norm(x))

    model = NeedsRealValues()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    counted, reason = flops.count_step_flops(model, torch.randn(5, 8), torch.tensor([0, 1, 0, 1, 0]), F.cross_entropy)

    # the linear's input comes from BatchNorm's weights, so it needs a gradient: 6*B*in*out
    assert reason is None and counted == 6 * 5 * 8 * 2
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats too


def test_a_model_that_cannot_run_gives_none_with_the_reason():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape trouble")

    config = RunConfig(model=Broken, data=lambda step, n: (torch.zeros(n, 2), torch.zeros(n)), strategy="single")

    got, reason = flops.step_flops(config, Broken(), torch.zeros(2, 2), torch.zeros(2), F.mse_loss)

    assert got is None
    assert "on meta: RuntimeError: shape trouble" in reason and "on cpu:" in reason


def test_a_model_without_matmuls_counts_as_unknown_not_zero():
    model = nn.LayerNorm(3)
    got, reason = flops.count_step_flops(model, torch.randn(2, 3), torch.randn(2, 3), F.mse_loss)
    assert got is None and "no matmul" in reason


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_count_leaves_the_device_alone_and_the_peak_is_known():
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4)).cuda()
    x, y = torch.randn(8, 16, device="cuda"), torch.randint(0, 4, (8,), device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()

    counted, reason = flops.count_step_flops(model, x, y, F.cross_entropy)

    assert reason is None and counted == 4 * 8 * 16 * 32 + 6 * 8 * 32 * 4
    assert torch.cuda.memory_allocated() == before  # the copy lived on the meta device
    assert all(p.grad is None for p in model.parameters())
    name = torch.cuda.get_device_name(0)
    peak, why = formulas.peak_flops(name, "bf16")
    assert peak is not None, why  # the lent machines are an H100 SXM and an H200
