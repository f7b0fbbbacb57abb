"""The formulas behind figures that the engine measures and the advisor predicts, written once.

A figure the engine reports (bus bandwidth, MFU, samples per joule, what PowerSGD sends) and
the advisor's prediction of it must come from the same arithmetic, or comparing the two would
compare two formulas instead of a model with a measurement. So both import them from here.
Standard library only: the notebook's process and the advisor use these without importing torch.

Units are in the names: ``_s`` seconds, ``_j`` joules, ``flops`` floating-point operations,
``flop_per_s`` / ``flops_per_s`` FLOP per second.
"""

from __future__ import annotations

from parakit.config.bench import COLLECTIVES

TERA = 1e12
"""FLOP/s in a TFLOP/s: divide by it to print TFLOP/s, multiply the table's figures by it."""

# -- bus bandwidth ------------------------------------------------------------------------


def bus_factor(collective: str, ranks: int) -> float:
    """busbw / algbw of a collective on ``ranks`` ranks, as nccl-tests' PERFORMANCE.md defines it.

    The share of a collective's size S (nccl-tests' size: all_gather counts its output,
    reduce_scatter its input) that each rank's link carries in the ring algorithms, so that
    ``busbw = algbw * bus_factor`` can be compared with the hardware's link speed whatever the
    rank count:

    - all_reduce: 2 (n - 1) / n (a reduce-scatter, then an all-gather);
    - all_gather, reduce_scatter: (n - 1) / n;
    - broadcast, send_recv: 1.

    Args:
        collective: one of ``parakit.config.bench.COLLECTIVES``.
        ranks: n, the ranks taking part (1 or more).

    Returns:
        The factor, dimensionless.

    Raises:
        ValueError: for a collective not in COLLECTIVES (naming those that are), or ranks < 1.
    """
    if collective not in COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}: choose from {', '.join(COLLECTIVES)}")
    if not ranks >= 1:
        raise ValueError(f"ranks must be 1 or more (got {ranks!r})")
    n = ranks
    if collective == "all_reduce":
        return 2 * (n - 1) / n
    if collective in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    return 1.0  # broadcast and send_recv: every byte crosses one link once


# -- peak FLOP/s and MFU ------------------------------------------------------------------

# Dense (no 2:4 sparsity) peak FLOP/s per GPU, from NVIDIA's datasheets and the H100 whitepaper.
# The datasheets print tensor-core figures "with sparsity" (an asterisk); dense is half of those.
# fp32 is the CUDA-core figure, which is what a run at precision fp32 (TF32 switched off) can reach.
#   H100 SXM5: whitepaper table 3 / datasheet: fp32 66.9, tf32 494.7 (989 sparse), bf16/fp16
#              989.4 (1,979 sparse), fp8 1,978.9 (3,958 sparse). torch: "NVIDIA H100 80GB HBM3".
#   H100 PCIe: fp32 51.2, tf32 378 (756 sparse), bf16/fp16 756 (1,513 sparse), fp8 1,513
#              (3,026 sparse).
#   H200 SXM:  the H200 datasheet: fp32 67, tf32 989*, bf16/fp16 1,979*, fp8 3,958* (* sparse),
#              so dense 494.5, 989.5 and 1,979: the H100 SXM5's GH100 compute, with other
#              memory. torch: "NVIDIA H200".
#   A100 (SXM4 and PCIe alike): fp32 19.5, tf32 156 (312 sparse), bf16/fp16 312 (624 sparse);
#              no float8 tensor cores (compute capability 8.0), so no fp8 figure.
_H100_SXM = {"fp32": 66.9, "tf32": 494.7, "16-bit": 989.4, "fp8": 1978.9}
_H100_PCIE = {"fp32": 51.2, "tf32": 378.0, "16-bit": 756.0, "fp8": 1513.0}
_H200_SXM = {"fp32": 67.0, "tf32": 494.5, "16-bit": 989.5, "fp8": 1979.0}
_A100 = {"fp32": 19.5, "tf32": 156.0, "16-bit": 312.0}
# Tried in order, first substring of the upper-cased device name wins; None marks a variant
# with other clocks (H100 NVL, H200 NVL) that must not fall through to the SXM figures.
_PEAK_TFLOPS: tuple[tuple[str, dict[str, float] | None], ...] = (
    ("H100 PCIE", _H100_PCIE),
    ("H100 NVL", None),
    ("H100", _H100_SXM),
    ("H200 NVL", None),
    ("H200", _H200_SXM),
    ("A100", _A100),
)
# The tensor-core figure each precision computes at. fp8 is measured against the float8 peak,
# which only its converted matmuls can reach (attention and the head run in bf16), so an fp8
# run's MFU reads lower than a bf16 run's at the same speed: compare the two by tokens/s.
_PRECISION_COLUMN = {"fp32": "fp32", "tf32": "tf32", "fp16": "16-bit", "bf16": "16-bit", "bf16-pure": "16-bit",
                     "fp8": "fp8"}
# Words in the CPU names devices.device_name() reads from /proc/cpuinfo; no GPU name has them.
_CPU_WORDS = ("CPU", "PROCESSOR", "XEON", "EPYC", "RYZEN", "CORE(TM)")


def peak_flops(device_name: str, precision: str) -> tuple[float | None, str | None]:
    """One GPU's dense peak FLOP/s at a precision, from parakit's small table.

    fp32 runs with TF32 switched off, so it gets the CUDA-core fp32 peak; tf32 the TF32
    tensor-core peak; fp16, bf16 and bf16-pure the 16-bit tensor-core peak; fp8 the float8
    tensor-core peak. Sparse (2:4) figures are never used: training does not run sparse.

    Args:
        device_name: the torch device name, e.g. ``"NVIDIA H100 80GB HBM3"`` (the SXM part).
        precision: fp32, tf32, fp16, bf16, bf16-pure or fp8 (a string or a ``Precision``).

    Returns:
        ``(flop_per_s, None)``, or ``(None, reason)`` for a CPU, a GPU not in the table, a GPU
        without that format (fp8 before Ada and Hopper) or an unknown precision.
    """
    name = device_name.upper()
    if name.strip() in ("", "CPU") or any(word in name for word in _CPU_WORDS):
        return None, "no peak FLOP/s for CPUs: MFU is for GPUs"
    column = _PRECISION_COLUMN.get(str(precision))
    if column is None:
        return None, f"unknown precision {precision!r}; one of {', '.join(_PRECISION_COLUMN)}"
    for key, peaks in _PEAK_TFLOPS:
        if key in name:
            if peaks is None:
                break
            if column not in peaks:
                return None, f"{device_name} has no {precision} tensor cores"
            return peaks[column] * TERA, None
    return None, f"peak FLOP/s of {device_name!r} is not in parakit's table"


def peak_tflops_by_precision(device_name: str) -> dict[str, float]:
    """One GPU's dense peak TFLOP/s at every precision parakit runs and the GPU has (the
    advisor's presets are built from it); empty for a device not in the table."""
    found = {q: peak_flops(device_name, q)[0] for q in _PRECISION_COLUMN}
    return {q: flops / TERA for q, flops in found.items() if flops is not None}


def achieved_flops_per_s(flops_per_step: float | None, step_time_s: float | None, world_size: int) -> float | None:
    """Model FLOP/s each GPU achieved: the step's model FLOPs over its time and the GPUs.

    Args:
        flops_per_step: model FLOPs of one optimizer step over the global batch.
        step_time_s: seconds of that step.
        world_size: the GPUs (ranks) that shared it.

    Returns:
        FLOP/s per GPU (divide by ``TERA`` for TFLOP/s); None when the FLOPs or the time are
        unknown, or the time is not positive.
    """
    if flops_per_step is None or step_time_s is None or not step_time_s > 0:
        return None
    return flops_per_step / step_time_s / world_size


def mfu(flops_per_step: float | None, step_time_s: float | None, world_size: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s per GPU / that GPU's peak FLOP/s.

    ``mfu = flops_per_step / step_time_s / world_size / peak`` (PaLM, appendix B).

    Args:
        flops_per_step: model FLOPs of one optimizer step over the global batch.
        step_time_s: seconds of that step.
        world_size: the GPUs (ranks) that shared it.
        peak: one GPU's peak FLOP/s (``peak_flops``).

    Returns:
        A share in [0, 1] (above 1 means the FLOPs or the peak are wrong); None when any
        input is unknown.
    """
    achieved = achieved_flops_per_s(flops_per_step, step_time_s, world_size)
    if achieved is None or not peak:
        return None
    return achieved / peak


# -- PowerSGD -----------------------------------------------------------------------------

POWERSGD_MIN_RATE = 2.0
"""torch's PowerSGDState default ``min_compression_rate``: a matrix is compressed only when
that shrinks it more than this many times. The engine passes it to torch, so the advisor's
``powersgd_compresses`` and torch's hook decide alike."""


def powersgd_compresses(rows: int, cols: int, rank: int) -> bool:
    """Whether torch's PowerSGD hook sends a rows x cols gradient matrix as P and Q.

    torch's ``_should_compress``: ``(rows + cols) * r * POWERSGD_MIN_RATE < rows * cols``, with
    ``r = min(rank, rows, cols)`` as the hook clamps it. A matrix that fails this is
    all-reduced whole.

    Args:
        rows: the first dimension of the gradient.
        cols: the product of its other dimensions.
        rank: PowerSGD's matrix approximation rank.

    Returns:
        True when P (rows x r) and Q (cols x r) are sent instead of the matrix.
    """
    r = min(rank, rows, cols)
    return (rows + cols) * r * POWERSGD_MIN_RATE < rows * cols


# -- energy -------------------------------------------------------------------------------


def per_joule(count: float, energy_j: float | None) -> float | None:
    """``count`` per joule (e.g. samples per joule), or None when the energy is unknown or zero.

    Args:
        count: how many of something were done in the window (samples, tokens, bytes, steps).
        energy_j: the window's energy in joules, e.g. PowerMeasurement.energy_j.

    Returns:
        count / energy_j (count per joule), or None.
    """
    if energy_j is None or energy_j <= 0:
        return None
    return count / energy_j


def ring_bytes_per_step(*, batch_size: int, seq_len: int, width: int, depth: int, ranks: int,
                        value_bytes: int = 4) -> float:
    """Bytes each context rank sends round the ring in one step (engine/strategies/ring.py): per
    block, the keys and values of its tokens (2 x batch x seq_len/ranks x width values) pass on
    ranks-1 times forward, ranks-1 times again in backward, and their gradients ranks times, the
    last pass taking each home: 3 ranks - 2 passes of that size."""
    keys_and_values = 2 * batch_size * seq_len / ranks * width * value_bytes
    return depth * keys_and_values * (3 * ranks - 2)
