"""Precision modes: math flags, autocast, loss scaling, bf16-pure casts and the FSDP policy."""

import warnings

import pytest
import torch
from torch import nn

from parakit.engine import precision
from parakit.config.levers import Compression, Precision

CPU = torch.device("cpu")


@pytest.fixture
def restore_tf32_flags():
    """set_math_flags changes process-wide flags; put them back for the other tests."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("mode", [m for m in Precision if m is not Precision.TF32])
def test_math_flags_switch_tf32_off_for_everything_but_tf32(restore_tf32_flags, mode):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    assert precision.set_math_flags(mode) == {"matmul_tf32": False, "cudnn_tf32": False}
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_math_flags_switch_tf32_on_for_tf32(restore_tf32_flags):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    assert precision.set_math_flags(Precision.TF32) == {"matmul_tf32": True, "cudnn_tf32": True}
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_math_flags_warn_nothing_and_leave_both_flag_apis_readable(restore_tf32_flags):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.set_math_flags(Precision.TF32)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"  # the newer API agrees
        precision.set_math_flags(Precision.FP32)
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize("mode, dtype", [
    (Precision.BF16, torch.bfloat16),
    (Precision.FP16, torch.float16),  # CPU autocast takes float16 too; the config refuses it
    (Precision.FP32, torch.float32),
    (Precision.TF32, torch.float32),
    (Precision.BF16_PURE, torch.float32),  # no autocast: the weights themselves are bf16
])
def test_autocast_sets_the_compute_dtype(mode, dtype):
    layer = nn.Linear(8, 4)
    with precision.autocast(mode, CPU):
        out = layer(torch.randn(2, 8))
    assert out.dtype == dtype
    assert layer.weight.dtype == torch.float32  # autocast never touches the weights


@pytest.mark.parametrize("mode", list(Precision))
def test_grad_scaler_only_for_fp16(mode):
    scaler = precision.grad_scaler(mode, CPU)
    if mode is Precision.FP16:
        assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    else:
        assert scaler is None


def test_cast_model_makes_bf16_pure_weights_bf16():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert precision.cast_model(model, Precision.BF16_PURE) is model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model(torch.randn(3, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("mode", [m for m in Precision if m is not Precision.BF16_PURE])
def test_cast_model_leaves_other_modes_fp32(mode):
    model = nn.Linear(8, 2)
    assert precision.cast_model(model, mode) is model
    assert model.weight.dtype == torch.float32


@pytest.mark.parametrize("mode, compression, param_dtype, reduce_dtype", [
    (Precision.FP32, "fp16", None, torch.float16),
    (Precision.TF32, "bf16", None, torch.bfloat16),
    (Precision.BF16, "none", torch.bfloat16, torch.float32),  # bf16 compute, fp32 reduction
    (Precision.BF16, "bf16", torch.bfloat16, torch.bfloat16),
    (Precision.FP16, "none", torch.float16, torch.float32),
    (Precision.BF16_PURE, "fp16", None, torch.float16),
])
def test_fsdp_policy(mode, compression, param_dtype, reduce_dtype):
    policy = precision.fsdp_mixed_precision(mode, Compression.parse(compression))
    assert (policy.param_dtype, policy.reduce_dtype) == (param_dtype, reduce_dtype)


@pytest.mark.parametrize("mode", [Precision.FP32, Precision.TF32, Precision.BF16_PURE])
def test_fsdp_needs_no_policy_without_casts(mode):
    assert precision.fsdp_mixed_precision(mode, Compression.parse("none")) is None


def test_fsdp_refuses_compression_it_cannot_apply():
    with pytest.raises(ValueError, match="none, fp16 or bf16"):
        precision.fsdp_mixed_precision(Precision.FP32, Compression.parse("powersgd:2"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_step_on_gpu_scales_the_loss_and_tf32_flags_change_matmuls(restore_tf32_flags):
    cuda = torch.device("cuda")
    model = nn.Linear(256, 256).to(cuda)
    x = torch.randn(64, 256, device=cuda)
    scaler = precision.grad_scaler(Precision.FP16, cuda)
    with precision.autocast(Precision.FP16, cuda):
        out = model(x)
    assert out.dtype == torch.float16
    scaler.scale(out.float().square().mean()).backward()
    assert model.weight.grad.dtype == torch.float32 and scaler.get_scale() > 1
    a, b = torch.randn(512, 512, device=cuda), torch.randn(512, 512, device=cuda)
    exact = (a.double() @ b.double()).float()
    precision.set_math_flags(Precision.FP32)
    fp32_err = (a @ b - exact).abs().max().item()
    precision.set_math_flags(Precision.TF32)
    tf32_err = (a @ b - exact).abs().max().item()
    if torch.cuda.get_device_capability() >= (8, 0):  # TF32 tensor cores: Ampere and later
        assert tf32_err > 10 * fp32_err
