"""Expert parallelism: a mixture of experts' experts spread over the ranks, tokens sent to them
and back with all-to-all (torchtitan's ``expert_parallel``, on gloo's ``all_to_all_single``;
the list form ``all_to_all`` is not in gloo).

Each of R ranks keeps experts [r E/R, (r+1) E/R) of every block and reads its own slice of the
batch. In each mixture, after routing (engine/workloads/moe.py):

1. the ranks exchange how many tokens each sends to each expert (an all-to-all of E counts);
2. dispatch: each rank's token rows go to the ranks that hold their experts (all-to-all);
3. each expert runs on the rows it received, from every rank, in rank order: the same rows in
   the same order as in one process, so the result is single's up to summation order;
4. combine: the outputs go back to the ranks the rows came from (all-to-all).

Backward runs the two all-to-alls in reverse (``AllToAll``). The rest of the model (attention,
the routers, embeddings) is replicated as under data parallelism: its gradients are averaged
over the ranks after backward. An expert's gradient is its owner's alone, with every rank's
tokens in it: each rank's loss is the mean over its slice, so the sum that arrives is R times
the global batch's and is divided by R, with no communication.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from parakit.engine.compression.counting import GradientBytes
from parakit.engine.strategies.base import Parallel
from parakit.engine.strategies.hybrid import average_gradients
from parakit.engine.workloads.moe import moe_layers


class AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with uneven splits, differentiable: backward sends the gradient rows
    back the way they came. Its name carries "AllToAll", which the time breakdown reads as
    communication (engine/breakdown.py): autograd runs the backward collective inside it."""

    @staticmethod
    def forward(ctx, rows, send, receive, group, sent):
        ctx.send, ctx.receive, ctx.group, ctx.sent = send, receive, group, sent
        return exchange(rows, send, receive, group, sent)

    @staticmethod
    def backward(ctx, grad):
        return exchange(grad.contiguous(), ctx.receive, ctx.send, ctx.group, ctx.sent), None, None, None, None


def exchange(rows: torch.Tensor, send: list[int], receive: list[int], group, sent) -> torch.Tensor:
    """Rows ``send[r]`` at a time to each rank r; ``receive[r]`` rows from each. ``sent`` is told
    the bytes that leave this rank (its own share stays)."""
    out = rows.new_empty((sum(receive), *rows.shape[1:]))
    dist.all_to_all_single(out, rows.contiguous(), receive, send, group=group)
    me, row_bytes = dist.get_rank(group), rows.shape[1:].numel() * rows.element_size()
    sent(row_bytes * (sum(send) - send[me]))
    return out


class ExpertDispatch:
    """A mixture's dispatch over the ranks (moe.Dispatch): this rank runs experts
    [first, first + local) on the rows every rank sends them."""

    def __init__(self, group, ranks: int, first: int, local: int, sent):
        self.group, self.ranks, self.first, self.local, self.sent = group, ranks, first, local, sent

    def __call__(self, rows: torch.Tensor, counts: torch.Tensor, experts: nn.ModuleDict) -> torch.Tensor:
        r, local = self.ranks, self.local
        # 1. how many rows each rank sends each of this rank's experts: (source rank, local expert)
        arriving = torch.empty_like(counts)
        dist.all_to_all_single(arriving, counts, group=self.group)
        self.sent(counts.element_size() * (counts.numel() - local))
        sending = counts.view(r, local).sum(dim=1).tolist()  # note: a host-device sync, as every split size
        table = arriving.view(r, local).tolist()
        receiving = [sum(row) for row in table]
        # 2. dispatch; 3. each expert on its rows from every rank, in rank order
        received = AllToAll.apply(rows, sending, receiving, self.group, self.sent)
        pieces = received.split([n for row in table for n in row])
        outputs = []
        for j in range(local):
            mine = torch.cat([pieces[s * local + j] for s in range(r)])
            outputs.append(experts[str(self.first + j)](mine).split([table[s][j] for s in range(r)]))
        back = torch.cat([outputs[j][s] for s in range(r) for j in range(local)])
        # 4. combine: the outputs to the ranks their rows came from
        return AllToAll.apply(back, receiving, sending, self.group, self.sent)


def apply_expert(parallel: Parallel, mesh) -> Parallel:
    """Keep this rank's experts of each mixture, send tokens to the others' by all-to-all, and
    average the rest of the model's gradients over the ranks after each backward.

    Args:
        parallel: the gpt with experts, built alike on every rank (all experts still in it).
        mesh: a 1-D device mesh over every rank.

    Returns:
        ``parallel``, holding this rank's experts and the replicated rest, its forward_backward
        now ending with the gradients' average.
    """
    group, ranks, rank = mesh.get_group(), mesh.size(), mesh.get_local_rank()
    model, expert_params = parallel.modules[0], []
    for layer in moe_layers(model):
        local = layer.n_experts // ranks  # RunConfig checked that the ranks divide the experts
        first = rank * local
        for name in list(layer.experts):
            if not first <= int(name) < first + local:
                del layer.experts[name]  # another rank's: its memory is freed here
        sent = layer.log.sent if layer.log is not None else (lambda nbytes: None)  # engine/experts.py's log
        layer.dispatch = ExpertDispatch(group, ranks, first, local, sent)
        expert_params += list(layer.experts.parameters())
    owned = {id(p) for p in expert_params}
    shared = [p for p in model.parameters() if id(p) not in owned]
    inner = parallel.forward_backward

    def forward_backward(inputs, targets):
        loss = inner(inputs, targets)
        average_gradients(shared, group, ranks)  # the replicated rest, as DDP does, after backward
        for p in expert_params:
            if p.grad is not None:
                p.grad /= ranks  # every rank's tokens' gradient, each rank's loss a mean over its slice
        return loss

    parallel.forward_backward, parallel.replicated = forward_backward, False
    # the gradient all-reduce's bytes: the replicated rest's, once a step (the all-to-alls are the log's)
    parallel.wire = GradientBytes(sum(p.numel() * p.element_size() for p in shared if p.requires_grad))
    return parallel
