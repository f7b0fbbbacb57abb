"""The formulas the engine measures with and the advisor predicts with (parakit/config/formulas.py):
nccl-tests' bus factors, the peak FLOP/s table, MFU, torch's PowerSGD compression rule and
per-joule figures; and that the module does not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parakit.config import formulas
from parakit.config.bench import COLLECTIVES
from parakit.config.formulas import (
    POWERSGD_MIN_RATE, TERA, achieved_flops_per_s, bus_factor, mfu, peak_flops, peak_tflops_by_precision, per_joule,
    powersgd_compresses,
)


# -- bus factor: nccl-tests' PERFORMANCE.md --------------------------------------------------

@pytest.mark.parametrize("n", [2, 4, 8])
def test_bus_factors_are_nccl_tests_definitions(n):
    assert bus_factor("all_reduce", n) == pytest.approx(2 * (n - 1) / n)
    assert bus_factor("all_gather", n) == pytest.approx((n - 1) / n)
    assert bus_factor("reduce_scatter", n) == pytest.approx((n - 1) / n)
    assert bus_factor("broadcast", n) == 1.0
    assert bus_factor("send_recv", n) == 1.0


@pytest.mark.parametrize("collective, n, factor", [
    ("all_reduce", 2, 1.0), ("all_reduce", 4, 1.5), ("all_reduce", 8, 1.75),
    ("all_gather", 2, 0.5), ("all_gather", 4, 0.75),
    ("reduce_scatter", 2, 0.5), ("reduce_scatter", 8, 0.875),
])
def test_bus_factor_figures(collective, n, factor):
    assert bus_factor(collective, n) == pytest.approx(factor)


def test_every_benchmarked_collective_has_a_factor():
    assert all(bus_factor(c, 4) > 0 for c in COLLECTIVES)


def test_unknown_collective_is_refused_with_the_allowed_names():
    with pytest.raises(ValueError, match="all_reduce, all_gather, reduce_scatter, broadcast, send_recv"):
        bus_factor("alltoall", 2)


def test_bus_factor_needs_a_rank():
    with pytest.raises(ValueError, match="ranks"):
        bus_factor("all_reduce", 0)


# -- peak FLOP/s ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, precision, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 80GB HBM3", "fp16", 989.4),
    ("NVIDIA H100 80GB HBM3", "bf16-pure", 989.4),
    ("NVIDIA H100 80GB HBM3", "tf32", 494.7),
    ("NVIDIA H100 80GB HBM3", "fp32", 66.9),  # TF32 off: CUDA cores only
    ("NVIDIA H100 PCIe", "bf16", 756.0),
    ("NVIDIA H100 PCIe", "tf32", 378.0),
    ("NVIDIA H100 PCIe", "fp32", 51.2),
    ("NVIDIA H100 80GB HBM3", "fp8", 1978.9),
    ("NVIDIA H100 PCIe", "fp8", 1513.0),
    # the H200 datasheet's sparse figures halved: fp8 3,958*, bf16 1,979*, tf32 989*; fp32 67
    ("NVIDIA H200", "fp8", 1979.0),
    ("NVIDIA H200", "bf16", 989.5),
    ("NVIDIA H200", "fp16", 989.5),
    ("NVIDIA H200", "tf32", 494.5),
    ("NVIDIA H200", "fp32", 67.0),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
    ("NVIDIA A100-PCIE-40GB", "tf32", 156.0),
    ("NVIDIA A100 80GB PCIe", "fp32", 19.5),
])
def test_peak_table(name, precision, tflops):
    assert peak_flops(name, precision) == (pytest.approx(tflops * TERA), None)


def test_peak_takes_the_precision_enum():
    from parakit.config.run import Precision

    assert peak_flops("NVIDIA H100 80GB HBM3", Precision.TF32)[0] == pytest.approx(494.7e12)


@pytest.mark.parametrize("name", ["NVIDIA H100 NVL", "NVIDIA H200 NVL", "Tesla T4", "NVIDIA GeForce RTX 4090"])
def test_peak_of_a_gpu_not_in_the_table_is_none_with_the_reason(name):
    assert peak_flops(name, "bf16") == (None, f"peak FLOP/s of '{name}' is not in parakit's table")


@pytest.mark.parametrize("name", ["cpu", "", "Intel(R) Xeon(R) Platinum 8480+", "AMD EPYC 7763 64-Core Processor",
                                  "Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz", "AMD Ryzen 9 7950X"])
def test_no_peak_for_cpus(name):
    assert peak_flops(name, "fp32") == (None, "no peak FLOP/s for CPUs: MFU is for GPUs")


def test_peak_of_an_unknown_precision_says_which_are_known():
    got, reason = peak_flops("NVIDIA H100 80GB HBM3", "int8")
    assert got is None and "bf16-pure" in reason and "fp8" in reason


def test_a_gpu_without_float8_tensor_cores_has_no_fp8_peak():
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp8") == (None, "NVIDIA A100-SXM4-80GB has no fp8 tensor cores")


def test_the_peaks_by_precision_hold_fp8_where_the_gpu_has_it():
    assert peak_tflops_by_precision("NVIDIA H200")["fp8"] == pytest.approx(1979.0)
    assert "fp8" not in peak_tflops_by_precision("NVIDIA A100-SXM4-80GB")
    assert peak_tflops_by_precision("NVIDIA A100-SXM4-80GB")["bf16"] == pytest.approx(312.0)


def test_every_precision_has_a_peak_column():
    from parakit.config.levers import Precision

    assert all(peak_flops("NVIDIA H200", q)[0] is not None for q in Precision)


# -- MFU -----------------------------------------------------------------------------------

def test_mfu_arithmetic():
    # 4 GPUs do 2e15 model FLOPs in 0.5 s: 1e15 FLOP/s per GPU, a tenth of a 1e16 peak.
    assert achieved_flops_per_s(2e15, 0.5, 4) == pytest.approx(1e15)
    assert mfu(2e15, 0.5, 4, 1e16) == pytest.approx(0.1)
    # the H100 SXM at bf16: 494.7 TFLOP/s per GPU achieved is half the peak
    peak, _ = peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert mfu(494.7e12 * 8 * 0.25, 0.25, 8, peak) == pytest.approx(0.5)


@pytest.mark.parametrize("args", [(None, 0.5, 4, 1e16), (2e15, None, 4, 1e16), (2e15, 0.0, 4, 1e16),
                                  (2e15, 0.5, 4, None), (2e15, 0.5, 4, 0.0)])
def test_mfu_is_none_when_a_figure_is_unknown(args):
    assert mfu(*args) is None


@pytest.mark.parametrize("time_s", [None, 0.0, -1.0])
def test_achieved_is_none_without_a_positive_time(time_s):
    assert achieved_flops_per_s(2e15, time_s, 4) is None


# -- PowerSGD: torch's "(rows + cols) * rank * 2 < rows * cols" -------------------------------

def test_the_rate_is_torchs_default():
    assert POWERSGD_MIN_RATE == 2.0


@pytest.mark.parametrize("rows, cols, rank, compresses", [
    (8, 8, 2, False),  # (8 + 8) * 2 * 2 = 64, not < 64: on the boundary, sent whole
    (16, 16, 2, True),  # 128 < 256
    (8, 8, 1, True),  # 32 < 64
    (9, 8, 2, True),  # 68 < 72: just past the boundary
    (4, 3, 1, False),  # 14 < 12 is false
    (3, 96, 1, True),  # 198 < 288
    (3, 96, 4, False),  # rank clamped to 3: 594 < 288 is false
    (1024, 1024, 4, True),
])
def test_powersgd_compresses_at_the_boundary(rows, cols, rank, compresses):
    assert powersgd_compresses(rows, cols, rank) is compresses


def test_the_torch_default_matches_the_constant():
    """The engine hands POWERSGD_MIN_RATE to torch; torch's own default is the same 2."""
    torch_hook = pytest.importorskip("torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook")
    import inspect

    default = inspect.signature(torch_hook.PowerSGDState.__init__).parameters["min_compression_rate"].default
    assert default == POWERSGD_MIN_RATE


# -- per joule -----------------------------------------------------------------------------

def test_per_joule():
    assert per_joule(500, 50.0) == 10.0
    assert per_joule(500, None) is None
    assert per_joule(500, 0.0) is None
    assert per_joule(500, -1.0) is None


def test_the_engine_and_the_records_use_the_same_per_joule():
    from parakit.engine import power

    assert power.per_joule is formulas.per_joule


# -- torch-free ----------------------------------------------------------------------------

def test_importing_formulas_does_not_import_torch():
    code = "import sys, parakit.config.formulas; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
