"""Ring attention with load balancing: causal attention over a sequence split across the context
ranks, the keys and values passed from neighbour to neighbour with point-to-point sends.

The layout (zigzag, as in ring-flash-attention and torch's own context_parallel): the sequence
is cut into 2R chunks and rank r holds chunks r and 2R-1-r. Rank 0 then holds the first chunk
(which sees little) and the last (which sees all), so under the causal mask every rank has the
same work at every ring step, where with one contiguous chunk each the last rank would do R
times the first's. At step s rank r holds the keys and values of rank src = r - s (mod R):

- s = 0, its own: causal within its 2 chunks (they are in order, so plain causal masking);
- src < r: both of its query chunks see src's first key chunk in full, its second none;
- src > r: only its second query chunk sees anything, and it sees both of src's key chunks.

Each case is one c x 2c block of scores (c the chunk length): balanced.

Forward merges each step's block into the running output with its log-sum-exp (online
softmax), as flash attention does, and keeps only q, k, v, the output and the log-sum-exp.
Backward is a custom autograd Function that goes round the ring again: it recomputes each
block's probabilities from the saved log-sum-exp (flash attention's backward), and each key
block's gradient travels with it, so after the last step one more pass hands every rank the
gradient of its own keys and values. So activations stay O(T/R) per rank: no R x T scores are
kept. The blocks are computed with plain matmuls in fp32 (the math kernel): on CPU, where this
runs, torch has no fused kernel that returns the log-sum-exp to merge with.

The sends are ``batch_isend_irecv`` pairs (gloo and NCCL both take them); each starts before the
block that does not need it is computed, so the transfer can hide behind that compute.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist


class Ring:
    """This rank's place on the context ranks' ring, and the bytes it has sent round it."""

    def __init__(self, group) -> None:
        self.group = group
        self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)
        self.sent_bytes = 0
        """Bytes this rank has handed to point-to-point sends since it was made."""

    def pass_on(self, tensor: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Send ``tensor`` to the next rank and receive the previous rank's into a new buffer;
        returns it and the requests to wait on before reading it."""
        received = torch.empty_like(tensor)
        ops = [dist.P2POp(dist.isend, tensor, group=self.group, group_peer=(self.rank + 1) % self.size),
               dist.P2POp(dist.irecv, received, group=self.group, group_peer=(self.rank - 1) % self.size)]
        self.sent_bytes += tensor.numel() * tensor.element_size()
        return received, dist.batch_isend_irecv(ops)


def wait(requests: list) -> None:
    for request in requests:
        request.wait()


def chunk_positions(seq_len: int, rank: int, ranks: int) -> torch.Tensor:
    """The global positions of the tokens rank ``rank`` holds: chunks rank and 2R-1-rank of
    ``seq_len`` cut into 2R (config/layouts.check_context made sure they divide)."""
    c = seq_len // (2 * ranks)
    return torch.cat([torch.arange(rank * c, (rank + 1) * c),
                      torch.arange((2 * ranks - 1 - rank) * c, (2 * ranks - rank) * c)])


ALL = slice(None)


def plan(rank: int, ranks: int, local: int) -> Iterator[tuple[slice, slice, bool]]:
    """Per ring step: which of this rank's queries meet which of the visiting keys, and whether
    the causal mask applies (the module docstring's three cases)."""
    c = local // 2
    for step in range(ranks):
        source = (rank - step) % ranks
        if step == 0:
            yield ALL, ALL, True
        elif source < rank:
            yield ALL, slice(None, c), False
        else:
            yield slice(c, None), ALL, False


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    s = (q @ k.transpose(-2, -1)) * scale
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    return s


def _block(q, k, v, scale: float, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One block's attention output and log-sum-exp per query."""
    s = _scores(q, k, scale, causal)
    lse = torch.logsumexp(s, dim=-1)
    return torch.exp(s - lse.unsqueeze(-1)) @ v, lse


def _merge(out, lse, block_out, block_lse) -> tuple[torch.Tensor, torch.Tensor]:
    """Two softmax-weighted averages over disjoint keys -> the one over all of them."""
    total = torch.logaddexp(lse, block_lse)
    return (out * torch.exp(lse - total).unsqueeze(-1) + block_out * torch.exp(block_lse - total).unsqueeze(-1),
            total)


def ring_forward(q, k, v, ring: Ring, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    kv = torch.stack([k, v])  # one send per step: keys and values travel together
    out = lse = None
    for step, (qs, ks, causal) in enumerate(plan(ring.rank, ring.size, q.shape[-2])):
        last = step + 1 == ring.size
        if not last:
            following, requests = ring.pass_on(kv)
        block_out, block_lse = _block(q[:, :, qs], kv[0][:, :, ks], kv[1][:, :, ks], scale, causal)
        if out is None:
            out, lse = block_out, block_lse
        else:
            out[:, :, qs], lse[:, :, qs] = _merge(out[:, :, qs], lse[:, :, qs], block_out, block_lse)
        if not last:
            wait(requests)
            kv = following
    return out, lse


def ring_backward(dout, q, k, v, out, lse, ring: Ring, scale: float) -> tuple[torch.Tensor, ...]:
    delta = (dout * out).sum(-1)  # flash attention's D: rowsum(dO * O)
    dq, kv = torch.zeros_like(q), torch.stack([k, v])
    handed = None  # the key gradient the previous rank passed on, and its requests
    for step, (qs, ks, causal) in enumerate(plan(ring.rank, ring.size, q.shape[-2])):
        last = step + 1 == ring.size
        if not last:
            following, requests = ring.pass_on(kv)
        p = torch.exp(_scores(q[:, :, qs], kv[0][:, :, ks], scale, causal) - lse[:, :, qs].unsqueeze(-1))
        ds = p * (dout[:, :, qs] @ kv[1][:, :, ks].transpose(-2, -1) - delta[:, :, qs].unsqueeze(-1))
        dq[:, :, qs] += ds @ kv[0][:, :, ks] * scale
        dkv = torch.zeros_like(kv)
        dkv[0][:, :, ks] = ds.transpose(-2, -1) @ q[:, :, qs] * scale
        dkv[1][:, :, ks] = p.transpose(-2, -1) @ dout[:, :, qs]
        if handed is not None:  # what the ranks before added to this key block's gradient
            wait(handed[1])
            dkv += handed[0]
        handed = ring.pass_on(dkv)  # on with its block; after the last step, home to its owner
        if not last:
            wait(requests)
            kv = following
    wait(handed[1])
    return dq, handed[0][0], handed[0][1]


class RingAttention(torch.autograd.Function):
    """Causal attention of this rank's queries over the whole sequence, round the ring, forward
    and backward (module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, ring: Ring):
        dtype, scale = q.dtype, q.shape[-1] ** -0.5
        with torch.autocast(q.device.type, enabled=False):  # fp32 blocks, whatever autocast asks
            out, lse = ring_forward(q.float(), k.float(), v.float(), ring, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.ring, ctx.scale = ring, scale
        return out.to(dtype)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        with torch.autocast(q.device.type, enabled=False):
            dq, dk, dv = ring_backward(dout.float(), q.float(), k.float(), v.float(), out, lse, ctx.ring, ctx.scale)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, ring: Ring) -> torch.Tensor:
    """(batch, heads, local tokens, head dim) x3 -> the attention output of this rank's tokens."""
    return RingAttention.apply(q, k, v, ring)
