"""The GPU path, checked for real on a CUDA machine (the device tool); skipped elsewhere."""

import math
import warnings

import pytest

from parakit.cluster.placement import visible_gpus

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not visible_gpus()[0], reason="needs a CUDA GPU: " + str(visible_gpus()[1])),
]


def test_one_engine_per_gpu_uses_nccl_and_the_notebook_never_touches_cuda(tmp_path):
    import torch

    import parakit

    before = torch.cuda.is_initialized()  # another test in this process may have used the GPU
    with parakit.Session(workers=1, runs_dir=tmp_path, progress=False) as s:
        r = s.run("gpt", strategy="ddp", workers=1, steps=6, batch_size=16)
    assert r.ok, r.error
    assert r.backend == "nccl"
    assert r.ranks[0].device == "cuda:0" and r.ranks[0].gpu_index == 0
    assert r.ranks[0].peak_mem_kind == "cuda_max_allocated" and r.summary["peak_mem_bytes"] > 0
    assert torch.cuda.is_initialized() == before  # the session never initialised CUDA here


def test_two_engines_sharing_one_gpu_fall_back_to_gloo_with_one_warning(tmp_path):
    import parakit

    gpus = visible_gpus()[0]
    if len(gpus) > 1:
        pytest.skip("this machine has a GPU per engine")
    with parakit.Session(workers=2, runs_dir=tmp_path, progress=False) as s:
        single = s.run("mlp", strategy="single", steps=10, batch_size=64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ddp = s.run("mlp", strategy="ddp", workers=2, steps=10, batch_size=64)
            again = s.run("mlp", strategy="ddp", workers=2, steps=3, batch_size=64)
    shared = [w for w in caught if "not representative" in str(w.message)]
    assert len(shared) == 1  # said once, not on every run
    assert ddp.ok and again.ok and single.ok, (ddp.error, single.error)
    assert ddp.backend == "gloo" and "not representative" in ddp.warnings[0]
    assert [rk.device for rk in ddp.ranks] == ["cuda:0", "cuda:0"]
    assert ddp.summary["params_in_sync"] is True
    # fp32 on GPU: summation order differs between 1 and 2 ranks, so allow a little more than on CPU
    assert all(math.isclose(a.loss, b.loss, rel_tol=1e-4) for a, b in zip(single.steps, ddp.steps))


def test_every_layout_trains_on_the_gpu_like_single(tmp_path):
    """The layouts CPU tests check, on CUDA memory. A pipeline traces the model with a sample
    batch, which must be on the model's device (torch.export refuses a mix)."""
    import parakit

    settings = {"model": "gpt", "model_options": {"depth": 4, "width": 128}, "steps": 4, "batch_size": 16}
    layouts = [{"strategy": "fsdp"}, {"strategy": "tensor"}]
    with parakit.Session(workers=2, runs_dir=tmp_path, progress=False) as s:
        single = s.run(strategy="single", **settings)
        if len(s.gpus) < 2:  # two ranks on one GPU use gloo, which cannot send CUDA memory
            with pytest.raises(ValueError, match="cannot send CUDA memory between them"):
                s.run(workers=2, strategy="pipeline", **settings)
            assert s.run(workers=1, strategy="pipeline", **settings).ok  # one stage still runs
        else:
            layouts.append({"strategy": "pipeline", "schedule": "1f1b"})
        runs = [s.run(workers=2, **layout, **settings) for layout in layouts]
    assert single.ok, single.error
    for layout, r in zip(layouts, runs):
        assert r.ok, (layout, r.error and r.error[-2000:])
        assert all(rk.device.startswith("cuda") for rk in r.ranks)
        assert math.isclose(r.summary["loss_last"], single.summary["loss_last"], rel_tol=1e-3), layout


@pytest.mark.gpu
def test_gpu_out_of_memory_says_the_figures_and_what_to_change(tmp_path):
    import parakit

    with parakit.Session(workers=1, runs_dir=tmp_path, progress=False) as s:
        # ~137 GB of activations for one layer: more than any single GPU holds
        r = s.run("mlp", strategy="single", workers=1, steps=3, warmup_steps=1, batch_size=2**21,
                  model_options={"width": 16384, "depth": 2})
        assert r.status == "failed"
        assert "GPU out of memory on NVIDIA" in r.error and "GiB free on the device" in r.error
        assert "smaller batch_size" in r.error and "fsdp" in r.error
        after = s.run("mlp", strategy="single", workers=1, steps=3, batch_size=64)
        assert after.ok, after.error  # the engine recovered


def test_memory_parts_the_allocator_s_figures_and_a_snapshot_beside_the_run(tmp_path):
    import pickle

    import parakit

    with parakit.Session(workers=1, runs_dir=tmp_path, progress=False) as s:
        r = s.run("gpt", strategy="ddp", workers=1, steps=4, batch_size=16, memory_snapshot=True)
    assert r.ok, r.error
    (rank,) = r.ranks
    assert rank.gradient_bytes == rank.param_bytes and rank.activation_bytes > 0
    assert rank.allocated_peak_bytes == rank.peak_mem_bytes  # both max_memory_allocated
    assert 0 < rank.allocated_peak_bytes <= rank.reserved_peak_bytes and 0 <= rank.fragmentation < 1
    # parameters, gradients and optimizer state all exist during the optimizer step
    assert rank.param_bytes + rank.gradient_bytes + rank.optimizer_bytes <= rank.peak_mem_bytes
    assert not {"reserved_peak_bytes", "fragmentation", "memory_snapshot"} & set(r.unmeasured)
    (path,) = r.memory_snapshots
    assert path.startswith(str(tmp_path)) and path.endswith(f"{r.run_id}-memory/rank0.pickle")
    with open(path, "rb") as f:
        snapshot = pickle.load(f)  # the file this test's own run wrote
    # what pytorch.org/memory_viz draws: the allocator's segments and the history of the steps
    assert snapshot["segments"] and any(e["action"] == "alloc" for e in snapshot["device_traces"][0])
