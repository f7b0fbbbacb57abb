"""Precision fp8: float8 training of the linear layers that qualify, with torchao.

``apply_fp8`` swaps each qualifying ``nn.Linear`` for torchao's ``Float8Linear``, whose three
matmuls (output, input gradient, weight gradient) cast their operands to float8 with dynamic
scales and run on the float8 tensor cores; everything else runs under bf16 autocast
(engine/precision.py). Weights stay fp32 for the optimizer. It is the first of compose's steps
(engine/compose.py), before checkpointing, compile and sharding, as torchtitan converts before
it parallelises: the blocks compiled later are the converted ones.

Which layers qualify (``converts``) is a pure function of a layer's name and shape, so it is
checked without torchao and without a GPU:
- float8 tensor cores need both matmul dimensions to be multiples of 16 (torchao's own filter
  and torchtitan's ``module_filter_fn`` skip the others);
- the output head stays bf16: its logits feed the loss directly, where float8's 3-bit mantissa
  costs the most accuracy, and torchtitan's float8 configs leave their ``output`` out too.

torchao is imported inside the functions that need it, so an engine that never runs fp8 never
imports it, and the package installs without it (``pip install 'parakit[fp8]'`` adds it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from parakit.config.levers import (
    FP8_NEEDS_TORCHAO, GPU_ONLY_PRECISIONS, Precision, check_fp8_capability,
)

__all__ = ["FP8_DIVISOR", "HEAD_NAMES", "RECIPES", "apply_fp8", "check_fp8_device", "converts",
           "fp8_layer_names", "scale_precompute"]

FP8_DIVISOR = 16
"""Both dimensions of a float8 matmul's weight must be multiples of this (cuBLAS float8 GEMMs)."""
HEAD_NAMES = ("head", "output", "lm_head")
"""The last part of a module name that marks a model's output head, kept in bf16."""
RECIPES = ("tensorwise", "rowwise")
"""torchao's dynamic scaling recipes parakit can ask for. Runs use tensorwise: torchao calls it
the fastest, and it is the one whose weights FSDP2 can all-gather in float8. Rowwise (one scale
per row, more accurate, Hopper's CUTLASS kernel) is there for a caller of ``apply_fp8``."""


def converts(name: str, module: nn.Module) -> bool:
    """Whether fp8 converts this module: an ``nn.Linear`` whose in and out features are both
    multiples of 16 and that is not the output head.

    Args:
        name: the module's dotted name in the model, e.g. ``"blocks.0.attn.q"``.
        module: the module itself.

    Returns:
        True for a layer that becomes a ``Float8Linear``.
    """
    if not isinstance(module, nn.Linear):
        return False
    if name.rsplit(".", 1)[-1] in HEAD_NAMES:
        return False
    return module.in_features % FP8_DIVISOR == 0 and module.out_features % FP8_DIVISOR == 0


def fp8_layer_names(model: nn.Module) -> list[str]:
    """The names of the layers ``apply_fp8`` would convert, in the model's order (no torchao
    needed: the advisor, the docs and the tests ask this on a CPU)."""
    return [name for name, module in model.named_modules() if name and converts(name, module)]


def check_fp8_device(device: torch.device) -> None:
    """Refuse fp8 on a CPU, or on a GPU without float8 tensor cores, in one line.

    Args:
        device: the device this rank trains on.

    Raises:
        ValueError: naming the device and what to use instead.
    """
    if device.type != "cuda":
        raise ValueError(GPU_ONLY_PRECISIONS[Precision.FP8])
    check_fp8_capability(torch.cuda.get_device_capability(device), torch.cuda.get_device_name(device))


def apply_fp8(model: nn.Module, device: torch.device, *, fsdp_float8_all_gather: bool = False,
              recipe: str = "tensorwise", emulate: bool = False) -> list[str]:
    """Swap the qualifying linear layers of ``model`` for torchao's float8 ones, in place.

    Args:
        model: the built model, on its device, before checkpointing, compile, sharding or DDP.
        device: the device this rank trains on (checked: a GPU of compute capability 8.9+).
        fsdp_float8_all_gather: FSDP2 will shard the model: keep the float8 weights in a
            tensor subclass that FSDP all-gathers in float8, half of bf16's bytes (tensorwise
            only; call ``scale_precompute``'s function after each optimizer step).
        recipe: "tensorwise" (runs use it) or "rowwise".
        emulate: torchao's emulation, float8 arithmetic done in higher precision without
            float8 kernels: for checking the conversion on a CPU, never for a run.

    Returns:
        The converted layers' names, as torchao converted them.

    Raises:
        ValueError: on a CPU or an older GPU, for an unknown recipe, float8 all-gather with
            rowwise, or a model with no layer that qualifies.
        RuntimeError: torchao is not installed (one line naming the extra).
    """
    if recipe not in RECIPES:
        raise ValueError(f"fp8 recipe must be one of {', '.join(RECIPES)} (got {recipe!r})")
    if fsdp_float8_all_gather and recipe != "tensorwise":
        raise ValueError("FSDP's float8 all-gather needs the tensorwise recipe")
    if not emulate:
        check_fp8_device(device)
    if not fp8_layer_names(model):
        raise ValueError(f"fp8 found no linear layer to convert (in and out features must be multiples of "
                         f"{FP8_DIVISOR}; the output head stays bf16): use bf16 for this model")
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
        from torchao.float8.float8_linear import Float8Linear
    except ImportError:
        raise RuntimeError(FP8_NEEDS_TORCHAO) from None
    config = Float8LinearConfig(emulate=True) if emulate else Float8LinearConfig.from_recipe_name(recipe)
    config = dataclasses.replace(config, enable_fsdp_float8_all_gather=fsdp_float8_all_gather)
    if recipe == "rowwise":
        # torchtitan's workaround for pytorch#150859: inductor's fused casts round differently
        # from eager's unless told to emulate them, and rowwise scales are sensitive to it.
        import torch._inductor.config as inductor_config

        inductor_config.emulate_precision_casts = True
    convert_to_float8_training(model, module_filter_fn=lambda module, name: converts(name, module), config=config)
    return [name for name, module in model.named_modules() if isinstance(module, Float8Linear)]


def scale_precompute(model: nn.Module) -> Callable[[], None]:
    """What FSDP2 runs after each optimizer step under float8 all-gather: every float8 weight's
    scale in one all-reduce, instead of one small all-reduce per weight inside the next forward.

    Args:
        model: the sharded model.

    Returns:
        A function of no arguments that computes the scales.
    """
    from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

    return lambda: precompute_float8_dynamic_scale_for_fsdp(model)
