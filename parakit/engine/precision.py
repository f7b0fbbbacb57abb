"""Numeric precision of a training step: math flags, autocast, loss scaling, casts, FSDP policy.

One function per question the training loop asks, each a lookup on the Precision enum:

- fp32: fp32 weights and fp32 math; TF32 switched off explicitly (it may be on by default).
- tf32: fp32 weights, TF32 tensor-core matmuls and convolutions.
- fp16: autocast to float16 with a GradScaler, since fp16 gradients underflow without one.
- bf16: autocast to bfloat16; bf16 has fp32's exponent range, so no loss scaling.
- bf16-pure: the model itself in bfloat16 (weights, gradients, optimizer state); no autocast.
- fp8: the linear layers that qualify swapped for torchao's float8 ones by the strategy
  (engine/fp8.py), everything else autocast to bfloat16 as under bf16; fp32 master weights.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from parakit.config.levers import Compression, CompressionKind, Precision

if TYPE_CHECKING:  # torch.distributed.fsdp is slow to import; only FSDP runs need it
    from torch.distributed.fsdp import MixedPrecisionPolicy

__all__ = ["autocast", "cast_model", "fsdp_mixed_precision", "grad_scaler", "set_math_flags"]

AUTOCAST_DTYPE: dict[Precision, torch.dtype] = {
    Precision.FP16: torch.float16,
    Precision.BF16: torch.bfloat16,
    # torchao's float8 linears cast their input to the autocast dtype and return it, so the
    # layers left unconverted (attention, norms, the head) run in bf16 around them.
    Precision.FP8: torch.bfloat16,
}
# FSDP2 computes in the unsharded parameters' dtype; bf16-pure parameters already are bf16.
# Under fp8 the float8 linears' weights are gathered in float8 instead (engine/fp8.py).
FSDP_PARAM_DTYPE: dict[Precision, torch.dtype] = AUTOCAST_DTYPE
REDUCE_DTYPE: dict[CompressionKind, torch.dtype] = {
    CompressionKind.FP16: torch.float16,
    CompressionKind.BF16: torch.bfloat16,
}


def set_math_flags(precision: Precision) -> dict[str, bool]:
    """Switch TF32 on for tf32 and off for every other precision, so fp32 really is fp32.

    Uses the ``allow_tf32`` flags rather than the newer ``fp32_precision`` strings: in torch
    2.13 the old flags raise no deprecation warning and exist in every torch this kit runs on,
    while setting the new strings makes any later read of the old flags (torch's own inductor
    and profiler still read ``matmul.allow_tf32``) raise "mix of the legacy and new APIs".
    Setting the old flags keeps both readable: ``matmul.fp32_precision`` then reads "ieee" or
    "tf32".

    The flags are process-wide and harmless on a CPU, so they are set on every device and
    every run records the same keys.

    Args:
        precision: the run's precision.

    Returns:
        The flags as read back after setting them, e.g.
        ``{"matmul_tf32": False, "cudnn_tf32": False}``, for the run's record.
    """
    tf32 = precision is Precision.TF32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return {
        "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
    }


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the forward pass (and loss) runs in.

    Args:
        precision: the run's precision.
        device: where the model runs; autocast is per device type.

    Returns:
        ``torch.autocast`` to float16 (fp16) or bfloat16 (bf16 and fp8); a ``nullcontext`` for fp32,
        tf32 and bf16-pure, whose weights already have the compute dtype.
    """
    dtype = AUTOCAST_DTYPE.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16, whose small gradients would flush to zero unscaled; else None.

    Args:
        precision: the run's precision.
        device: where the gradients live.

    Returns:
        ``torch.amp.GradScaler(device.type)`` for fp16, ``None`` otherwise.
    """
    if precision is not Precision.FP16:
        return None
    return torch.amp.GradScaler(device.type)


def cast_model(model: nn.Module, precision: Precision) -> nn.Module:
    """Cast the whole model to bfloat16 for bf16-pure; return it unchanged otherwise.

    Cast before the optimizer is built, so its state is bf16 too.

    Args:
        model: the freshly built model.
        precision: the run's precision.

    Returns:
        The same module (``nn.Module.to`` casts in place).
    """
    if precision is Precision.BF16_PURE:
        return model.to(torch.bfloat16)
    return model


def fsdp_mixed_precision(precision: Precision, compression: Compression) -> MixedPrecisionPolicy | None:
    """FSDP2's mixed precision policy for a precision and a gradient compression.

    FSDP applies precision per module instead of autocast: fp16 and bf16 (and fp8, for what is
    not float8) gather parameters in that dtype and compute in it. Gradients are reduced in fp32 for them (``none`` means a
    plain fp32 reduction, as with DDP), or in the compression's fp16 / bf16.

    Args:
        precision: the run's precision.
        compression: the run's compression; only none, fp16 and bf16 apply to FSDP.

    Returns:
        A ``MixedPrecisionPolicy``, or ``None`` where FSDP's default (everything in the
        parameters' own dtype) is already right: fp32, tf32 and bf16-pure without compression.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compression.kind not in REDUCE_DTYPE and compression.kind is not CompressionKind.NONE:
        raise ValueError(f"FSDP takes compression none, fp16 or bf16 (got {compression})")
    param_dtype = FSDP_PARAM_DTYPE.get(precision)
    reduce_dtype = REDUCE_DTYPE.get(compression.kind)
    if reduce_dtype is None and param_dtype is not None:
        reduce_dtype = torch.float32  # low-precision compute, full-precision gradient reduction
    if param_dtype is None and reduce_dtype is None:
        return None
    return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)

