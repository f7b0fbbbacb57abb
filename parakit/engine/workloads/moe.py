"""A mixture of experts in place of a gpt block's MLP (``model_options={"experts": E, "top_k": k}``):
E experts, each the dense block's MLP (width -> 4 width -> width), and a learned router that
sends each token to the k experts it scores highest (top-k gating, as Switch (k=1), GShard and
Mixtral (k=2) do).

- The output is the chosen experts' outputs weighted by the router's softmax probabilities;
  for k > 1 the k weights are renormalised to sum to 1 (Mixtral). With k = 1 the weight is
  the probability itself, so the language-model loss reaches the router (Switch).
- Dropless routing: every expert takes every token sent to it; there is no capacity factor and
  no token is dropped or padded (MegaBlocks' and torchtitan's choice). Experts' loads differ from
  step to step, which is what the run's imbalance figures show.
- Load balancing: Switch Transformer's auxiliary loss, ``AUX_LOSS_COEF * E * sum_i f_i * P_i``,
  f_i the share of the k token assignments that went to expert i and P_i the router's mean
  probability for it; 1 x the coefficient when routing is uniform. Its f_i is counted over the
  global batch (summed over the data-parallel ranks, ``balance_group``): the loss, and so the
  training, is then the same at any number of ranks (global-batch balancing, as Megatron does).
  It is added to the training loss (engine/experts.py), which the run records.

The experts are a ModuleDict keyed by their global index, so an expert's parameters are named
alike in every layout ("blocks.0.mlp.experts.3.0.weight") and a rank holding experts 2 and 3
only saves and loads them under those names (engine/saved_state.py). Where the experts run is a
``dispatch``: all here (``run_local``), or over the ranks with all-to-all
(engine/strategies/expert.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

AUX_LOSS_COEF = 0.01
"""The load-balancing loss's coefficient: Switch Transformer's alpha (Fedus et al. 2021, 10^-2)."""

Dispatch = Callable[[torch.Tensor, torch.Tensor, nn.ModuleDict], torch.Tensor]
"""(token rows sorted by expert, tokens per expert (E,), the experts held here) -> each row's
expert output, in the same order."""


def expert_mlp(width: int) -> nn.Module:
    """One expert: the dense block's MLP."""
    return nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))


def run_local(rows: torch.Tensor, counts: torch.Tensor, experts: nn.ModuleDict) -> torch.Tensor:
    """Every expert here, each on its rows. An expert with no rows still runs (on none), so its
    parameters get a (zero) gradient and data parallelism's hooks fire for them every step.
    note: reading the split sizes is a host-device sync on a GPU."""
    sizes = counts.tolist() if not rows.is_meta else even_split(rows.shape[0], len(counts))
    return torch.cat([experts[str(i)](chunk) for i, chunk in enumerate(rows.split(sizes))])


def even_split(rows: int, experts: int) -> list[int]:
    """Rows per expert on the meta device, where routing has no values to go by (the shape's
    measurement, engine/shape.py): as even as they divide."""
    return [rows // experts + (i < rows % experts) for i in range(experts)]


class MoE(nn.Module):
    def __init__(self, width: int, experts: int, top_k: int):
        super().__init__()
        self.n_experts, self.top_k = experts, top_k
        self.router = nn.Linear(width, experts, bias=False)
        self.experts = nn.ModuleDict({str(i): expert_mlp(width) for i in range(experts)})
        self.dispatch: Dispatch = run_local
        self.balance_group = None
        """The data-parallel ranks' group the routing counts are summed over (None: this rank alone)."""
        self.aux_loss: torch.Tensor | None = None
        """The last forward's load-balancing loss, coefficient applied (engine/experts.py adds it)."""
        self.log = None
        """What counts each forward's tokens per expert from this rank, and the bytes its
        all-to-alls send (engine/experts.py's ExpertLog); None: nothing counts them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, k = x.shape, self.top_k
        x = x.reshape(-1, shape[-1])
        probs = F.softmax(self.router(x).float(), dim=-1)
        weights, chosen = probs.topk(k, dim=-1)
        if k > 1:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        flat = chosen.reshape(-1)
        order = flat.argsort(stable=True)  # assignments grouped by expert, tokens in batch order
        # tokens per expert (bincount's, with a meta kernel); note: split sizes read from it sync on a GPU
        counts = torch.zeros(self.n_experts, dtype=torch.long, device=x.device).scatter_add_(0, flat, torch.ones_like(flat))
        out = self.dispatch(x[order // k], counts, self.experts)
        out = out[order.argsort()].view(-1, k, shape[-1])  # back to (token, choice)
        y = (out * weights.unsqueeze(-1).to(out.dtype)).sum(dim=1)
        self.aux_loss = self._balancing_loss(probs, counts)
        if self.log is not None:
            self.log.count(counts)
        return y.view(shape)

    def _balancing_loss(self, probs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        total = counts.clone()
        if self.balance_group is not None:
            dist.all_reduce(total, group=self.balance_group)  # f_i over the global batch
        share = total.float() / total.sum()
        return AUX_LOSS_COEF * self.n_experts * (share * probs.mean(dim=0)).sum()


def moe_layers(model: nn.Module) -> list[MoE]:
    """The model's mixtures of experts, in order (none in a dense model)."""
    return [m for m in model.modules() if isinstance(m, MoE)]
