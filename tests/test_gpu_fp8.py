"""Precision fp8 for real on a GPU of compute capability 8.9 or later with torchao installed
(the device tool; ``pytest -m gpu``): it trains under single, ddp and fsdp on one GPU, records
the layers it converted, and learns about as a bf16 run does. Skipped elsewhere; the refusals
are tested on CPU in tests/engine/test_fp8.py."""

from __future__ import annotations

import importlib.util
import statistics

import pytest

from parakit.cluster.placement import visible_gpus
from parakit.session.preflight import gpu_capabilities

GPUS, NO_GPU = visible_gpus()
CAPABLE = bool(GPUS) and all(c >= (8, 9) for _, c in gpu_capabilities(GPUS[:1]))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not GPUS, reason=f"needs a CUDA GPU: {NO_GPU}"),
    pytest.mark.skipif(not CAPABLE, reason="needs a GPU of compute capability 8.9 or later"),
    pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="needs pip install 'parakit[fp8]'"),
]

# widths that are multiples of 16 everywhere; the first step compiles, so two warm-up steps
GPT = dict(model="gpt", model_options={"width": 256, "depth": 2, "heads": 4, "seq_len": 128}, steps=40,
           warmup_steps=2, batch_size=16, lr=3e-3, compile=True)


@pytest.fixture(scope="module")
def gpu_session(tmp_path_factory):
    import parakit

    # compiling the float8 graphs can take a minute on the first step
    with parakit.Session(workers=1, runs_dir=tmp_path_factory.mktemp("runs"), progress=False,
                         hang_timeout_s=300) as s:
        yield s


def expected_layers() -> list[str]:
    import torch

    from parakit.engine.fp8 import fp8_layer_names
    from parakit.engine.workloads import build_model

    with torch.device("meta"):
        return fp8_layer_names(build_model("gpt", GPT["model_options"]))


def mean_loss(result, steps: slice) -> float:
    return statistics.fmean(s.loss for s in result.steps[steps])


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_fp8_trains_and_records_the_layers_it_converted(gpu_session, strategy):
    r = gpu_session.run(strategy=strategy, workers=1, precision="fp8", **GPT)
    assert r.ok, r.error
    assert r.summary["fp8_layers"] == expected_layers() and "head" not in r.summary["fp8_layers"]
    assert mean_loss(r, slice(-5, None)) < 0.8 * mean_loss(r, slice(0, 3))
    assert r.summary["mfu"] is not None and 0 < r.summary["mfu"] < 1  # against the float8 peak


def test_fp8_learns_about_as_bf16_does(gpu_session):
    fp8 = gpu_session.run(strategy="single", workers=1, precision="fp8", **GPT)
    bf16 = gpu_session.run(strategy="single", workers=1, precision="bf16", **GPT)
    assert fp8.ok and bf16.ok, (fp8.error, bf16.error)
    assert "fp8_layers" not in bf16.summary
    assert mean_loss(fp8, slice(-5, None)) == pytest.approx(mean_loss(bf16, slice(-5, None)), rel=0.10)


def test_fp8_without_compile_is_refused_on_the_gpu_too(gpu_session):
    with pytest.raises(ValueError, match="fp8 needs compile=True"):
        gpu_session.run(strategy="single", workers=1, precision="fp8", **{**GPT, "compile": False})
