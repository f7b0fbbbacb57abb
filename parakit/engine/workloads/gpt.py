"""A small decoder-only transformer in the shape of nanoGPT's model.py.

Attention uses ``scaled_dot_product_attention``, so PyTorch picks its fused kernels
(flash / memory-efficient) where the device has them. ``experts`` makes each block's MLP a
mixture of experts with a top-k router and dropless routing (moe.py); without it the model is
the dense one, unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from parakit.config.models import DEFAULT_TOP_K
from parakit.engine.workloads.moe import MoE, expert_mlp


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention over the whole sequence on this rank: torch's fused kernels."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.head_dim = width // heads
        # Separate q, k, v projections (not one fused qkv), so tensor parallelism can split each
        # column-wise by heads; a fused weight split in rows would mix q with k.
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.proj = nn.Linear(width, width)
        # (q, k, v) -> y: context parallelism puts ring attention here (strategies/context.py);
        # a plain attribute, not a module, so the parameters keep their names in every layout.
        self.attend = causal_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds heads / degree of them.
        q, k, v = (f(x).view(b, t, -1, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = self.attend(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, experts: int | None = None, top_k: int = DEFAULT_TOP_K):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        # With experts, a mixture of that many MLPs and a router (moe.py); without, the one MLP.
        self.mlp = MoE(width, experts, top_k) if experts else expert_mlp(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, *, vocab_size: int, width: int, depth: int, heads: int, seq_len: int,
                 experts: int | None = None, top_k: int = DEFAULT_TOP_K):
        super().__init__()
        self.seq_len = seq_len
        self.tok_emb = nn.Embedding(vocab_size, width)
        self.pos_emb = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, heads, experts, top_k) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        # The global positions of the tokens this rank holds, where it holds only some of each
        # sequence (context parallelism); None: the whole sequence, 0..T-1.
        self.positions: torch.Tensor | None = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device) if self.positions is None else self.positions
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
