"""The power meter on a real GPU: energy of a ~3 s matmul loop, and what the sampler costs.

Part 1 runs bf16 matmuls for --seconds under a PowerMeter on cuda:0 and prints the energy (from
the driver's counter), the average power, the samples and the sampler's own CPU time.
Part 2 times a small training-like loop (a few small matmuls and a sync per step) with the
meter off and on, alternating rounds so machine noise falls on both, and prints the ratio of
median step times (on / off; 1.00 means the sampler costs nothing).

Needs only torch with CUDA and pynvml (nvidia-ml-py); no ipyparallel.

    python benchmarks/power_check.py
    python benchmarks/power_check.py --seconds 5 --sample-hz 100 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from parakit.engine.power import PowerMeter, normalise_gpu_uuid  # after the path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="length of the matmul window (default 3)")
    p.add_argument("--size", type=int, default=8192, help="matmul size for part 1 (default 8192)")
    p.add_argument("--sample-hz", type=float, default=20.0, help="sampler rate (default 20)")
    p.add_argument("--rounds", type=int, default=6, help="off/on rounds in part 2 (default 6)")
    p.add_argument("--steps", type=int, default=300, help="steps per round in part 2 (default 300)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def torch_gpu_uuid(torch) -> str:
    """cuda:0's UUID in NVML's spelling. torch prints it without the 'GPU-' prefix."""
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    return uuid if uuid.upper().startswith(("GPU-", "MIG-")) else "GPU-" + uuid


def nvml_uuids() -> list[str]:
    """Every GPU NVML sees, by index (NVML ignores CUDA_VISIBLE_DEVICES)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        uuids = [pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
                 for i in range(pynvml.nvmlDeviceGetCount())]
        return [u.decode() if isinstance(u, bytes) else u for u in uuids]
    except Exception as e:  # noqa: BLE001 - a report, not a failure
        return [f"(NVML unavailable: {type(e).__name__}: {e})"]


def matmul_window(torch, uuid: str, args) -> dict:
    a = torch.randn(args.size, args.size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(args.size, args.size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):  # warm-up: cuBLAS picks its kernel, clocks ramp
        a @ b
    torch.cuda.synchronize()
    meter = PowerMeter("cuda:0", uuid=uuid, sample_hz=args.sample_hz)
    meter.begin()
    started, matmuls = time.perf_counter(), 0
    while time.perf_counter() - started < args.seconds:
        for _ in range(10):
            a @ b
        matmuls += 10
        torch.cuda.synchronize()  # note: a sync every 10 matmuls keeps the queue short and the clock honest
    m = meter.end()
    flops = 2 * args.size**3 * matmuls
    return {
        "energy_j": m.energy_j,
        "avg_power_w": m.avg_power_w,
        "duration_s": m.duration_s,
        "sampled_energy_j": m.sampled_energy_j,
        "sample_hz_achieved": m.sample_hz_achieved,
        "power_source": m.power_source,
        "samples": len(m.samples),
        "max_sample_w": max((s[1] for s in m.samples), default=None),
        "mean_util_percent": statistics.fmean([s[2] for s in m.samples if s[2] is not None] or [float("nan")]),
        "sampler_overhead_percent": 100 * m.overhead_s / m.duration_s,
        "scope": m.scope,
        "reason": m.reason,
        "tflops": flops / m.duration_s / 1e12,
        "tflop_per_j": flops / 1e12 / m.energy_j if m.energy_j else None,
    }


def small_loop_median_s(torch, steps: int, meter: PowerMeter | None) -> float:
    """Median step time of a small step (sync per step, as a training loop that reads its loss)."""
    x = torch.randn(256, 1024, device="cuda")
    w = [torch.randn(1024, 1024, device="cuda") for _ in range(4)]
    if meter is not None:
        meter.begin()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        y = x
        for wi in w:
            y = torch.relu(y @ wi)
        y.sum().item()  # note: a host-device sync point, once per step
        times.append(time.perf_counter() - t)
    if meter is not None:
        meter.end()
    return statistics.median(times[10:])  # the first steps warm up


def side_by_side(torch, uuid: str, args) -> dict:
    small_loop_median_s(torch, 30, None)  # warm-up
    off, on = [], []
    for _ in range(args.rounds):
        off.append(small_loop_median_s(torch, args.steps, None))
        on.append(small_loop_median_s(torch, args.steps, PowerMeter("cuda:0", uuid=uuid, sample_hz=args.sample_hz)))
    return {
        "step_ms_meter_off": 1e3 * statistics.median(off),
        "step_ms_meter_on": 1e3 * statistics.median(on),
        "step_time_ratio_on_over_off": statistics.median(on) / statistics.median(off),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError as e:
        print(f"power_check needs torch: {e}")
        return 2
    if not torch.cuda.is_available():
        print("power_check needs a CUDA GPU; torch sees none "
              f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        return 2
    uuid = torch_gpu_uuid(torch)
    import machine  # benchmarks/machine.py, beside this file

    report = {
        "machine": machine.describe(), "date": machine.today(),  # for benchmarks/run_all.py's row
        "gpu": torch.cuda.get_device_name(0),
        "torch_uuid": uuid,
        "nvml_uuids": nvml_uuids(),
        "sample_hz": args.sample_hz,
    }
    report["uuid_found_in_nvml"] = any(normalise_gpu_uuid(u) == normalise_gpu_uuid(uuid) for u in report["nvml_uuids"])
    report["matmul"] = matmul_window(torch, uuid, args)
    report["small_loop"] = side_by_side(torch, uuid, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["matmul"]["samples"] else 1


def print_report(r: dict) -> None:
    def fmt(v, spec):
        return "None" if v is None else format(v, spec)

    m, s = r["matmul"], r["small_loop"]
    print(f"{r['gpu']}  torch uuid {r['torch_uuid']}  found in NVML: {r['uuid_found_in_nvml']}")
    print(f"NVML sees: {', '.join(r['nvml_uuids'])}")
    print(f"matmul {m['duration_s']:.2f} s at {m['tflops']:.0f} TFLOP/s:")
    print(f"  energy_j            {fmt(m['energy_j'], '.1f')}  (counter)   sampled_energy_j {fmt(m['sampled_energy_j'], '.1f')}")
    print(f"  avg_power_w         {fmt(m['avg_power_w'], '.1f')}   max sample {fmt(m['max_sample_w'], '.1f')} W"
          f"   mean util {m['mean_util_percent']:.0f}%")
    print(f"  samples             {m['samples']} at {fmt(m['sample_hz_achieved'], '.1f')} Hz"
          f" (asked {r['sample_hz']:g})   power_source {m['power_source']}")
    print(f"  sampler overhead    {m['sampler_overhead_percent']:.3f}% of wall time (its CPU time)")
    print(f"  TFLOP per J         {fmt(m['tflop_per_j'], '.2f')}")
    print(f"  scope {m['scope']};  reason: {m['reason']}")
    print(f"small loop: {s['step_ms_meter_off']:.3f} ms/step meter off, {s['step_ms_meter_on']:.3f} ms/step on,"
          f" ratio {s['step_time_ratio_on_over_off']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
