"""What the measurement layer reports on a GPU: step time, the time breakdown, energy from the
NVML counter, average power, samples per joule, TFLOP/s and MFU, for one gpt model in each
precision and under ddp / fsdp / tensor on 2 engines that share the GPU (gloo: NCCL refuses
two ranks on one GPU). All runs on the same engines, side by side, so ratios compare.

Usage: python benchmarks/measure_gpu.py [--steps 30] [--runs-dir DIR]
"""

from __future__ import annotations

import argparse

import parakit

GPT = {"depth": 6, "width": 512, "heads": 8, "seq_len": 256}


def row(r) -> str:
    s = r.summary
    if not r.ok:
        return f"{r.config['strategy']:>7} {r.config['precision']:>5} x{r.world_size}  {r.status}: {r.error}"

    def f(key, scale=1.0, fmt="{:.1f}"):
        return "null" if s.get(key) is None else fmt.format(s[key] * scale)

    return (f"{r.config['strategy']:>7} {r.config['precision']:>5} x{r.world_size}  "
            f"step {f('step_time_s', 1e3)} ms  compute {f('compute_time_s', 1e3)}  comm {f('comm_time_s', 1e3)}  "
            f"exposed {f('exposed_comm_time_s', 1e3)}  idle {f('idle_time_s', 1e3)}  check {f('breakdown_check', 1, '{:.3f}')}  "
            f"energy {f('energy_j')} J  power {f('avg_power_w')} W  samples/J {f('samples_per_j', 1, '{:.2f}')}  "
            f"TFLOP/s {f('tflops_per_device')}  MFU {f('mfu', 100)}%  sampler {f('power_sampler_overhead', 100, '{:.3f}')}%  "
            f"profiler {f('profiler_overhead', 100)}%")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--runs-dir", default="parakit-runs")
    args = p.parse_args()
    base = dict(model="gpt", model_options=GPT, steps=args.steps, warmup_steps=3, batch_size=32)
    with parakit.Session(workers=2, runs_dir=args.runs_dir, progress=False) as s:
        print("engines:", [(e["device"], e["device_name"]) for e in s.status()])
        results = [s.run(strategy="single", workers=1, precision=p, **base) for p in ("fp32", "tf32", "bf16")]
        results += [s.run(strategy=st, workers=2, precision="bf16", **base) for st in ("ddp", "fsdp", "tensor")]
        for r in results:
            print(row(r), flush=True)
            if r.unmeasured:
                print("    unmeasured:", r.unmeasured)
        first = results[0].summary.get("method", {})
        for key in ("step_time_s", "compute_time_s", "energy_j", "mfu"):
            print(f"  how {key}: {first.get(key)}")


if __name__ == "__main__":
    main()
