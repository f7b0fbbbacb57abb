"""Model FLOPs of one training step, for MFU (model FLOPs utilisation).

MFU as in the PaLM paper (appendix B) and nanoGPT's ``estimate_mfu``: the FLOPs the model
needs for one step (forward + backward; recomputation and optimizer not counted), divided by
the step time, the number of GPUs and one GPU's dense peak at the run's precision. Model FLOPs
are the same at any world size and for any layout, so MFU compares strategies honestly: the
time a layout spends communicating or waiting in a pipeline bubble lowers it.

Counting needs torch; the peak FLOP/s table and the MFU arithmetic do not, and the advisor
predicts with them too, so they live in config/formulas.py.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from parakit.config.run import RunConfig, Workload
from parakit.engine.losses import forward_loss
from parakit.engine.workloads import build_model
from parakit.engine.workloads.moe import moe_layers

FORMULA = "formula: 6N + 12LHQT per token"
COUNTED = "counted: FlopCounterMode on one step"


def step_flops(
    config: RunConfig,
    model: nn.Module,
    sample_inputs: Any,
    sample_targets: Any,
    loss_fn: Callable[[Any, Any], torch.Tensor],
) -> tuple[float | None, str]:
    """Model FLOPs of one optimizer step over the global batch (forward + backward).

    The built-in ``gpt`` uses the stated formula (see ``gpt_flops_per_token``); other models
    are counted with ``FlopCounterMode`` on one forward + backward of the sample batch, run on
    a meta-device copy of ``model`` (CPU if the meta run fails), then scaled from the sample's
    rows to ``config.batch_size``. Counting costs the caller one extra forward + backward,
    once per run, and leaves ``model``'s weights, gradients and buffers untouched.

    Args:
        config: the run; gives the model's options and the global batch size.
        model: the model as built, before a strategy wraps or shards it (unused for gpt).
        sample_inputs: a batch of inputs (any number of rows), as the model takes them.
        sample_targets: the matching targets.
        loss_fn: the run's loss, ``(outputs, targets) -> scalar``.

    Returns:
        ``(flops, method)``: FLOPs of one step and ``FORMULA`` or ``COUNTED``; or
        ``(None, reason)`` when they could not be counted.
    """
    if config.model == Workload.GPT.value:
        options = config.options
        seq_len = _sequence_length(sample_inputs, options["seq_len"])
        per_token = gpt_flops_per_token(
            gpt_matmul_params(options), options["depth"], options["heads"],
            options["width"] // options["heads"], seq_len,
        )
        return per_token * config.batch_size * seq_len, FORMULA
    counted, reason = count_step_flops(model, sample_inputs, sample_targets, loss_fn)
    if counted is None:
        return None, reason
    # FLOPs grow linearly with the rows of a batch (every op works per sample), so one sample
    # batch stands for the global batch of the step.
    return counted * config.batch_size / _rows(sample_inputs), COUNTED


def gpt_flops_per_token(params: int, layers: int, heads: int, head_dim: int, seq_len: int) -> float:
    """FLOPs per token of one forward + backward of a decoder-only transformer (PaLM app. B)::

        flops_per_token = 6 * N + 12 * L * H * Q * T

    6N: each weight does one multiply-add (2 FLOPs) per token forward and two backward (the
    gradients of its input and of itself). 12LHQT: attention's two matmuls per layer (Q K^T
    and scores @ V), 2 * T * H * Q multiply-adds each per token forward, three times that with
    backward; causal masking's skipped half is counted, by convention.

    Args:
        params: N, the parameters that take part in matmuls (``gpt_matmul_params``).
        layers: L, the transformer blocks.
        heads: H, attention heads per block.
        head_dim: Q, width / heads.
        seq_len: T, tokens per sequence.
    """
    return 6 * params + 12 * layers * heads * head_dim * seq_len


def gpt_matmul_params(options: Mapping[str, int]) -> int:
    """N of the formula for the built-in gpt: every parameter except the token and position
    embeddings (lookups, not matmuls). The output head is counted: unlike nanoGPT, parakit's
    gpt does not tie it to the token embedding, and nanoGPT's N (all but the position
    embedding) counts the tied matrix once, as the head. Biases and LayerNorm weights are
    counted too, as nanoGPT does (a few hundredths of a percent here).

    Counted on a model built on the meta device: no memory, and it follows the code if
    the architecture changes. With experts, N is the parameters a token uses (DeepSeek's and
    Mixtral's "active" parameters): each mixture's router and top_k of its E experts, not all E.
    """
    with torch.device("meta"):
        model = build_model(Workload.GPT.value, dict(options))
    lookups = {id(p) for p in itertools.chain(model.tok_emb.parameters(), model.pos_emb.parameters())}
    experts = {id(p) for layer in moe_layers(model) for p in layer.experts.parameters()}
    dense = sum(p.numel() for p in model.parameters() if id(p) not in lookups and id(p) not in experts)
    used = sum(p.numel() * layer.top_k / layer.n_experts for layer in moe_layers(model) for p in layer.experts.parameters())
    return dense + int(used)


def count_step_flops(
    model: nn.Module, inputs: Any, targets: Any, loss_fn: Callable[[Any, Any], torch.Tensor]
) -> tuple[float | None, str | None]:
    """FLOPs of one forward + backward of ``inputs`` through a copy of ``model``, as
    ``FlopCounterMode`` counts them: matmuls, convolutions and attention (elementwise ops,
    norms and softmax are not counted, as in the 6N convention).

    Runs on the meta device first: no memory, no time, and attention decomposes to counted
    matmuls there (on CPU torch's fused attention kernel is not counted). The copy is fp32
    whatever the run's precision: FLOPs do not depend on the dtype.

    Returns:
        ``(flops, None)``, or ``(None, reason)`` when neither meta nor CPU could run it.
    """
    failures = []
    for device in ("meta", "cpu"):
        try:
            twin = _fp32_copy(model, device)
            x, y = _fp32_on(inputs, device), _fp32_on(targets, device)
            with FlopCounterMode(display=False) as counter:
                forward_loss(twin, loss_fn, x, y).backward()
        except Exception as e:  # noqa: BLE001 - a user's model may fail in any way on meta
            failures.append(f"on {device}: {type(e).__name__}: {e}")
            continue
        total = counter.get_total_flops()
        if total == 0:
            return None, "FlopCounterMode found no matmul, convolution or attention in the model"
        return float(total), None
    return None, "could not count the model's FLOPs (" + "; ".join(failures) + ")"


def _fp32_copy(model: nn.Module, device: str) -> nn.Module:
    """A deep copy of the model with fp32 parameters and buffers on ``device``: deepcopy takes
    each tensor from the memo, so the training weights are never copied to the meta device
    and the copy's backward and buffer updates (BatchNorm) touch none of the original's."""
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        dtype = torch.float32 if t.is_floating_point() else t.dtype
        if device == "meta":
            twin = torch.empty_like(t, device="meta", dtype=dtype)
        else:
            twin = t.detach().to(device, dtype=dtype, copy=True)
        memo[id(t)] = nn.Parameter(twin, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else twin
    return copy.deepcopy(model, memo)


def _fp32_on(batch: Any, device: str) -> Any:
    if isinstance(batch, torch.Tensor):
        dtype = torch.float32 if batch.is_floating_point() else batch.dtype
        return batch.detach().to(device, dtype=dtype)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_fp32_on(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _fp32_on(v, device) for k, v in batch.items()}
    return batch


def _rows(batch: Any) -> int:
    """Rows of a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch
    return _rows(next(iter(values)))


def _sequence_length(inputs: Any, default: int) -> int:
    """T of a gpt batch: the inputs' second dimension (data of your own may be shorter than
    seq_len), else the model's seq_len."""
    return inputs.shape[1] if isinstance(inputs, torch.Tensor) and inputs.ndim == 2 else default

