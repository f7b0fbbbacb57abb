"""The memory instrument in-process (no engines): bytes saved for backward counted on known
models, each storage once, parameters left out; gradients; the allocator's figures and the
memory snapshot with torch.cuda mocked (the GPU path runs for real in tests/test_gpu.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from parakit.engine import memory, memory_snapshot
from parakit.engine.memory import MemoryCount, SavedBytes, counted_step, gradient_bytes

F32 = 4


def forward_backward(model, x, counter: SavedBytes, *, backward=True):
    with counter.hooks():
        loss = model(x).sum()  # sum saves no tensor, only the input's shape
        if backward:
            loss.backward()
    return loss


def test_a_known_model_saves_its_inputs_and_one_relu_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(5, 16)
    counter = SavedBytes()
    loss = forward_backward(model, x, counter, backward=False)
    # the first matmul saves x (for its weight's gradient); ReLU saves its output, which the
    # second matmul saves again as its input: one storage, counted once. The weights each matmul
    # saves (transposed views of the parameters) are parameters, not activations.
    assert counter.peak_bytes == counter.live == 5 * 16 * F32 + 5 * 32 * F32
    assert counter.tensors == 4  # x, relu's output twice, the second weight's view
    loss.backward()
    assert counter.live == 0  # backward released every saved tensor...
    assert counter.peak_bytes == 5 * 16 * F32 + 5 * 32 * F32  # ...the peak stays


def test_views_and_repeats_of_one_storage_count_its_bytes_once():
    counter = SavedBytes()
    whole = torch.randn(10, 4, requires_grad=True)
    with counter.hooks():
        base = whole * 1.0  # (mul by a Python number saves nothing)
        top, bottom = base[:3], base[3:]  # two views of one storage
        out = (top * top).sum() + (bottom * bottom).sum()  # each view saved twice
    assert counter.tensors == 4
    assert counter.peak_bytes == 10 * 4 * F32  # the storage, whole, once
    out.backward()
    assert counter.live == 0


def test_two_passes_in_turn_peak_at_one_not_their_sum():
    """Accumulation's micro-steps and a pipeline's micro-batches free one pass's activations
    before (or while) the next saves its own: what is held at once is what counts."""
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
    one, two = SavedBytes(), SavedBytes()
    forward_backward(model, torch.randn(4, 16), one)
    with two.hooks():
        for _ in range(3):
            model(torch.randn(4, 16)).sum().backward()
    assert two.peak_bytes == one.peak_bytes > 0


def test_checkpointing_keeps_only_the_block_inputs():
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64)) for _ in range(4)]
    x = torch.randn(32, 64, requires_grad=True)

    def run(ckpt: bool) -> int:
        counter = SavedBytes()
        with counter.hooks():
            h = x
            for block in blocks:
                h = checkpoint(block, h, use_reentrant=False) if ckpt else block(h)
            h.sum().backward()
        return counter.peak_bytes

    assert run(False) == 4 * (32 * 64 + 32 * 256) * F32  # each block: its input and the ReLU output
    assert run(True) == 4 * 32 * 64 * F32  # checkpoint saves each block's input to recompute from


def test_parameters_and_their_views_are_not_activations():
    counter = SavedBytes()
    weight = nn.Parameter(torch.randn(8, 8))
    with counter.hooks():
        counter.pack(weight)
        counter.pack(weight.t())
    assert counter.peak_bytes == 0 and counter.tensors == 2


def test_only_the_planned_step_is_counted_and_a_missed_one_says_why():
    assert counted_step(steps=20, warmup_steps=2) == 1  # the last warm-up step
    assert counted_step(steps=20, warmup_steps=0) == 0
    model = nn.Linear(4, 4)
    count = MemoryCount(torch.device("cpu"), steps=5, warmup_steps=2)
    for step in range(5):
        with count.counting(step):
            model(torch.randn(2, 4)).sum().backward()
        if step == 0:
            assert count.saved.tensors == 0  # step 0 ran without the hooks
    assert count.saved.tensors == 1  # step 1's input, nothing after
    out = count.measures(model.parameters(), failed=False)
    assert out["activation_bytes"] == 2 * 4 * F32 and out["activation_step"] == 1
    assert out["gradient_bytes"] == (16 + 4) * F32
    assert out["reserved_peak_bytes"] is None and out["fragmentation"] is None
    assert out["memory_unmeasured"]["reserved_peak_bytes"] == memory.NO_ALLOCATOR
    assert "activation_bytes" not in out["memory_unmeasured"] and out["memory_snapshot"] is None

    stopped = MemoryCount(torch.device("cpu"), steps=5, warmup_steps=3)
    with stopped.counting(0):
        model(torch.randn(2, 4)).sum().backward()
    out = stopped.measures(model.parameters(), failed=False)
    assert out["activation_bytes"] is None
    assert "ended before step 2" in out["memory_unmeasured"]["activation_bytes"]


def test_gradient_bytes_are_the_local_gradients_or_none_with_a_reason():
    model = nn.Linear(10, 3)
    assert gradient_bytes(model.parameters(), failed=False) == (None, "no parameter held a gradient after the last step")
    model(torch.randn(2, 10)).sum().backward()
    assert gradient_bytes(model.parameters(), failed=False) == ((30 + 3) * F32, None)
    grads, why = gradient_bytes(model.parameters(), failed=True)
    assert grads is None and "failed" in why


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's allocator figures and memory history, recorded instead of run."""
    calls = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 600)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 800)
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history",
                        lambda enabled="all", **kw: calls.append(("record", enabled, kw)))

    def dump(path):
        calls.append(("dump", path))
        with open(path, "wb") as f:
            f.write(b"pickled snapshot")

    monkeypatch.setattr(torch.cuda.memory, "_dump_snapshot", dump)
    return calls


def test_on_a_gpu_the_allocator_figures_and_the_snapshot(fake_cuda):
    gpu = torch.device("cuda", 0)
    assert memory.allocator_figures(gpu) == {"allocated_peak_bytes": 600, "reserved_peak_bytes": 800,
                                             "fragmentation": pytest.approx(0.25)}
    count = MemoryCount(gpu, steps=3, warmup_steps=1, snapshot=True)
    # recording starts with the instrument, before any step, bounded, with Python stacks
    assert fake_cuda == [("record", "all", {"context": "all", "stacks": "python", "clear_history": True,
                                            "max_entries": memory_snapshot.MAX_ENTRIES})]
    out = count.measures([], failed=False)
    assert out["memory_snapshot"] == b"pickled snapshot"
    assert [c[0] for c in fake_cuda] == ["record", "dump", "record"]
    assert fake_cuda[-1][1] is None  # recording stopped after the dump
    assert "memory_snapshot" not in (out["memory_unmeasured"] or {})
    assert out["fragmentation"] == pytest.approx(0.25)


def test_a_snapshot_that_cannot_be_taken_stops_recording_and_says_why(fake_cuda, monkeypatch):
    def broken(path):
        raise RuntimeError("no space left")

    monkeypatch.setattr(torch.cuda.memory, "_dump_snapshot", broken)
    snap = memory_snapshot.MemorySnapshot(torch.device("cuda", 0))
    data, why = snap.finish()
    assert data is None and "no space left" in why
    assert fake_cuda[-1][:2] == ("record", None)


def test_on_a_cpu_no_snapshot_is_recorded_and_the_run_says_why(fake_cuda):
    count = MemoryCount(torch.device("cpu"), steps=3, warmup_steps=1, snapshot=True)
    out = count.measures([], failed=False)
    assert fake_cuda == []  # torch.cuda.memory was never asked
    assert out["memory_snapshot"] is None
    assert out["memory_unmeasured"]["memory_snapshot"] == memory_snapshot.NO_CUDA
