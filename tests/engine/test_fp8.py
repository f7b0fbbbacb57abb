"""Precision fp8 without a GPU and without torchao: every refusal in one line (a run's own
settings, CPU engines, a GPU before compute capability 8.9, no torchao), which layers of the
built-in models would be converted, and how the strategies and the records carry it. The fp8
runs themselves are in tests/test_gpu_fp8.py."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from torch import nn

from parakit.cluster.placement import HostFacts
from parakit.config.levers import FP8_NEEDS_COMPILE, FP8_NEEDS_TORCHAO, GPU_ONLY_PRECISIONS, Compression, Precision
from parakit.config.run import RunConfig
from parakit.engine import fp8, precision
from parakit.engine.gpus import Gpu
from parakit.engine.compose import Setup, compose, float8_all_gather
from parakit.engine.workloads import build_model
from parakit.session import preflight
from record_helpers import report

CPU_REFUSAL = GPU_ONLY_PRECISIONS[Precision.FP8]
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
FACTS = HostFacts(cpu_count=16, memory_bytes=64 * 2**30)


# -- a run's own settings --------------------------------------------------------------------

def test_fp8_without_compile_is_refused_with_the_fix():
    with pytest.raises(ValueError) as e:
        RunConfig(model="gpt", strategy="single", precision="fp8")
    assert str(e.value) == FP8_NEEDS_COMPILE and "add compile=True" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("layout, name", [
    (dict(strategy="tensor", workers=2), "tensor"),
    (dict(strategy="pipeline", workers=2), "pipeline"),
    (dict(strategy="hybrid", hybrid="fsdp+tensor", workers=4), "fsdp+tensor"),
])
def test_fp8_under_a_layout_it_does_not_compose_with_is_refused(layout, name):
    with pytest.raises(ValueError, match=rf"fp8 runs under single, ddp, fsdp, not {re.escape(name)} .*use bf16"):
        RunConfig(model="gpt", precision="fp8", compile=True, batch_size=16, **layout)


@pytest.mark.parametrize("strategy, workers", [("single", 1), ("ddp", 2), ("fsdp", 2)])
def test_fp8_with_compile_is_a_run(strategy, workers):
    config = RunConfig(model="gpt", strategy=strategy, workers=workers, precision="fp8", compile=True)
    assert config.describe()["precision"] == "fp8" and config.describe()["compile"] is True


# -- the engines: before any is touched ------------------------------------------------------

@pytest.mark.parametrize("extra", [dict(compile=True), {}])
def test_fp8_on_cpu_engines_is_refused_first_in_one_line(extra):
    """On a CPU, compile=True is beside the point: the CPU refusal comes before it is asked for."""
    engines = preflight.EngineFacts(FACTS, [], 2)
    with pytest.raises(ValueError) as e:
        preflight.check_run(engines, model="gpt", strategy="single", precision="fp8", **extra)
    assert str(e.value) == CPU_REFUSAL and "\n" not in CPU_REFUSAL


def on_gpus(monkeypatch, capability, torchao=True):
    monkeypatch.setattr(preflight, "torchao_installed", lambda: torchao)
    monkeypatch.setattr(preflight, "gpu_capabilities", lambda gpus: [("NVIDIA A100-SXM4-80GB", capability)] * len(gpus))
    return preflight.EngineFacts(FACTS, [Gpu(0, "GPU-0000")], 1)


def test_fp8_on_a_gpu_before_compute_capability_8_9_is_refused_before_any_engine(monkeypatch):
    engines = on_gpus(monkeypatch, (8, 0))
    with pytest.raises(ValueError) as e:
        preflight.check_run(engines, model="gpt", strategy="single", precision="fp8", compile=True)
    assert str(e.value) == ("fp8 needs a GPU of compute capability 8.9 or later (Ada, Hopper); "
                            "NVIDIA A100-SXM4-80GB is 8.0: use bf16")


def test_fp8_without_torchao_is_refused_naming_the_extra(monkeypatch):
    engines = on_gpus(monkeypatch, (9, 0), torchao=False)
    with pytest.raises(ValueError) as e:
        preflight.check_run(engines, model="gpt", strategy="single", precision="fp8", compile=True)
    assert str(e.value) == FP8_NEEDS_TORCHAO and "pip install 'parakit[fp8]'" in str(e.value)


def test_fp8_on_a_hopper_gpu_with_torchao_passes_the_preflight(monkeypatch):
    engines = on_gpus(monkeypatch, (9, 0))
    config = preflight.check_run(engines, model="gpt", strategy="fsdp", workers=1, precision="fp8", compile=True)
    assert config.precision is Precision.FP8


def test_other_precisions_on_an_older_gpu_are_not_asked_about_fp8(monkeypatch):
    engines = on_gpus(monkeypatch, (7, 0), torchao=False)
    assert preflight.check_run(engines, model="gpt", strategy="single", precision="bf16").precision is Precision.BF16


def test_without_nvml_the_capabilities_are_left_to_the_engine():
    assert preflight.gpu_capabilities([Gpu(0, "GPU-0000")]) == []  # no NVML here: no refusal, no traceback


# -- the engine's own check (remote engines, GPUs NVML could not describe) -------------------

def test_the_engine_refuses_fp8_on_its_cpu():
    with pytest.raises(ValueError, match="^fp8 needs an NVIDIA GPU"):
        fp8.check_fp8_device(torch.device("cpu"))


def fake_gpu(monkeypatch, capability, name):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    return torch.device("cuda", 0)


@pytest.mark.parametrize("capability, refused", [((8, 0), True), ((8, 6), True), ((8, 9), False), ((9, 0), False)])
def test_the_engine_refuses_fp8_before_compute_capability_8_9(monkeypatch, capability, refused):
    device = fake_gpu(monkeypatch, capability, "NVIDIA Test GPU")
    if refused:
        with pytest.raises(ValueError, match=rf"NVIDIA Test GPU is {capability[0]}\.{capability[1]}: use bf16$"):
            fp8.check_fp8_device(device)
    else:
        fp8.check_fp8_device(device)


@pytest.mark.skipif(HAS_TORCHAO, reason="torchao is installed here")
def test_the_engine_without_torchao_says_which_extra_to_install(monkeypatch):
    device = fake_gpu(monkeypatch, (9, 0), "NVIDIA H200")
    with pytest.raises(RuntimeError) as e:
        fp8.apply_fp8(build_model("mlp", {}), device)
    assert str(e.value) == FP8_NEEDS_TORCHAO


def test_importing_the_engine_does_not_import_torchao():
    import subprocess
    import sys

    code = "import sys, parakit.engine.train, parakit.engine.fp8; print('torchao' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# -- which layers are converted --------------------------------------------------------------

def test_every_linear_of_the_gpt_blocks_is_converted_and_the_head_is_not():
    names = fp8.fp8_layer_names(build_model("gpt", {"depth": 2, "width": 128}))
    per_block = ["attn.q", "attn.k", "attn.v", "attn.proj", "mlp.0", "mlp.2"]
    assert names == [f"blocks.{i}.{n}" for i in range(2) for n in per_block]


def test_the_mlp_converts_its_blocks_and_keeps_its_10_class_head():
    assert fp8.fp8_layer_names(build_model("mlp", {"depth": 4})) == ["blocks.0.0", "blocks.1.0", "blocks.2.0"]


def test_a_layer_whose_features_are_not_multiples_of_16_stays_bf16():
    names = fp8.fp8_layer_names(build_model("mlp", {"depth": 3, "in_features": 100, "width": 64}))
    assert names == ["blocks.1.0"]  # blocks.0.0 takes 100 features


@pytest.mark.parametrize("name, module, converted", [
    ("blocks.0.fc", nn.Linear(64, 128), True),
    ("head", nn.Linear(64, 128), False),  # the output head, whatever its shape
    ("decoder.output", nn.Linear(64, 64), False),
    ("lm_head", nn.Linear(64, 64), False),
    ("fc", nn.Linear(64, 120), False),
    ("conv", nn.Conv2d(16, 16, 3), False),
])
def test_the_filter(name, module, converted):
    assert fp8.converts(name, module) is converted


def test_a_model_with_nothing_to_convert_is_refused():
    with pytest.raises(ValueError, match="fp8 found no linear layer to convert.*use bf16"):
        fp8.apply_fp8(nn.Sequential(nn.Linear(10, 10)), torch.device("cpu"), emulate=True)


def test_rowwise_is_not_all_gathered_in_float8():
    with pytest.raises(ValueError, match="needs the tensorwise recipe"):
        fp8.apply_fp8(build_model("mlp", {}), torch.device("cpu"), recipe="rowwise", fsdp_float8_all_gather=True)


@pytest.mark.skipif(not HAS_TORCHAO, reason="needs the fp8 extra (torchao)")
def test_torchao_converts_exactly_the_filtered_layers_and_they_train():
    """torchao's emulation (float8 arithmetic without float8 kernels) runs on a CPU."""
    model = build_model("mlp", {})
    expected = fp8.fp8_layer_names(model)
    assert fp8.apply_fp8(model, torch.device("cpu"), emulate=True) == expected
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(8, 256)).float().sum().backward()
    assert model.blocks[0][0].weight.grad is not None and model.blocks[0][0].weight.dtype == torch.float32


# -- how the strategies, the precision and the records carry it ------------------------------

def setup(precision_name: str) -> Setup:
    config = RunConfig(model="mlp", strategy="single", precision=precision_name,
                       compile=precision_name == "fp8")
    return Setup(config=config, device=torch.device("cpu"), loss_fn=lambda out, y: out.sum())


def test_compose_converts_under_fp8_only_and_first(monkeypatch):
    calls = []
    monkeypatch.setattr(fp8, "apply_fp8", lambda model, device, **kw: calls.append(kw) or fp8.fp8_layer_names(model))
    parallel = compose(build_model("mlp", {}), setup("fp8"))
    assert parallel.fp8_layers == ["blocks.0.0", "blocks.1.0", "blocks.2.0"]
    assert parallel.composed == ("convert", "compile")
    assert calls == [{"fsdp_float8_all_gather": False}]  # single: no FSDP to gather
    bf16 = compose(build_model("mlp", {}), setup("bf16"))
    assert bf16.fp8_layers is None and bf16.composed == () and len(calls) == 1


@pytest.mark.parametrize("layout, gathers", [
    (dict(strategy="fsdp", workers=2), True),
    (dict(strategy="fsdp", workers=1), True),  # so that one GPU tests the float8 gather's code
    (dict(strategy="ddp", workers=2), False),
    (dict(strategy="single"), False),
])
def test_fsdp_and_only_fsdp_gathers_float8_weights_in_float8(layout, gathers):
    assert float8_all_gather(RunConfig(model="mlp", precision="fp8", compile=True, **layout)) is gathers
    assert float8_all_gather(RunConfig(model="mlp", precision="bf16", **layout)) is False


def test_fp8_autocasts_the_rest_to_bf16_and_fsdp_gathers_the_rest_in_bf16():
    with precision.autocast(Precision.FP8, torch.device("cpu")):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    policy = precision.fsdp_mixed_precision(Precision.FP8, Compression())
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32
    assert precision.grad_scaler(Precision.FP8, torch.device("cpu")) is None


def test_the_summary_records_the_converted_layers_under_fp8_only():
    from parakit.records.rank import rank_info
    from parakit.records.result import RunResult
    from parakit.records.summary import measure

    def summary_of(precision_name, layers):
        config = RunConfig(model="mlp", strategy="single", precision=precision_name, steps=3, warmup_steps=1,
                           compile=precision_name == "fp8")
        rank0 = report(losses=[1.0, 0.9, 0.8], step_time_s=[0.1] * 3, fp8_layers=layers)
        result = RunResult(run_id="20260101-000000-aaaaaa", status="ok", config=config.describe(), world_size=1,
                           backend=None, device_names=["cpu"],
                           ranks=[rank_info(rank0, rank=0, engine_id=0, pid=1, host="h", device="cpu", device_name="cpu")])
        measure(result, config, [rank0])
        return result.summary

    assert summary_of("fp8", ["blocks.0.0"])["fp8_layers"] == ["blocks.0.0"]
    assert "fp8_layers" not in summary_of("bf16", None)
