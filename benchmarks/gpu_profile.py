"""Where a gpu_suite case's time goes: the case's training step rebuilt in this process from
parakit's own engine parts (model, precision, compile, fp8 conversion, fused AdamW), a few
steps run to compile and warm up, then a few recorded by torch.profiler, and the 10 kernels with
the most self time (CUDA time on a GPU, CPU time on a CPU), with their share of the recorded
time. gpu_suite.py calls it for a goal it missed, after its engine is gone.

    python benchmarks/gpu_profile.py --size 350M --precision bf16      # one case by hand
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

TOP = 10


def top_kernels(options: dict[str, int], precision: str, compiled: bool, batch: int, device: str, *,
                label: str = "", warmup_steps: int = 3, steps: int = 3, top: int = TOP) -> dict[str, Any]:
    """Profile one gpt case and return its ``top`` kernels by self time.

    Args:
        options: the gpt's model options.
        precision: fp32, tf32, fp16, bf16, bf16-pure or fp8.
        compiled: torch.compile each block, as ``compile=True`` does.
        batch: sequences per step.
        device: "cuda" or "cpu".
        label: how the report names the case.
        warmup_steps: steps run first, unrecorded (the first compiles).
        steps: steps recorded.
        top: how many kernels to keep.

    Returns:
        {"case", "device", "recorded_s", "kernels": [{"name", "self_ms", "share", "calls"}]}, or
        {"case", "error"} when the case could not be run here.
    """
    import torch
    from torch.nn import functional as F
    from torch.profiler import ProfilerActivity, profile

    from parakit.config.levers import Precision
    from parakit.engine import precision as precisions
    from parakit.engine.compiling import apply_compile
    from parakit.engine.workloads import build_model

    try:
        mode, dev = Precision(precision), torch.device(device)
        precisions.set_math_flags(mode)
        torch.manual_seed(0)
        model = precisions.cast_model(build_model("gpt", options).to(dev), mode)
        if compiled:
            apply_compile(model)
        if mode is Precision.FP8:
            from parakit.engine.fp8 import apply_fp8

            apply_fp8(model, dev)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
        vocab, seq = model.tok_emb.num_embeddings, options["seq_len"]
        inputs = torch.randint(0, vocab, (batch, seq), device=dev)
        targets = torch.randint(0, vocab, (batch, seq), device=dev)

        def step() -> None:
            with precisions.autocast(mode, dev):
                loss = F.cross_entropy(model(inputs).flatten(0, -2), targets.flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(warmup_steps):
            step()
        cuda = dev.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        began = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize(dev)  # note: a host-device sync, so the recording holds every kernel
        recorded_s = time.perf_counter() - began
    except Exception as e:  # noqa: BLE001 - a profile that cannot run must not lose the suite's rows
        return {"case": label, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"case": label, "device": device, "recorded_s": recorded_s, "steps": steps,
            "kernels": kernel_table(prof.key_averages(), cuda, top)}


def self_us(event: Any, cuda: bool) -> float:
    """An averaged event's self time in microseconds: on the device for a GPU (torch names it
    ``self_device_time_total`` now, ``self_cuda_time_total`` before), else on the CPU."""
    if not cuda:
        return float(event.self_cpu_time_total)
    return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0))


def kernel_table(averages: Any, cuda: bool, top: int = TOP) -> list[dict[str, Any]]:
    """The ``top`` events by self time, each with its share of all events' self time."""
    events = [e for e in averages if self_us(e, cuda) > 0]
    total = sum(self_us(e, cuda) for e in events) or 1.0
    events.sort(key=lambda e: self_us(e, cuda), reverse=True)
    return [{"name": e.key, "self_ms": self_us(e, cuda) / 1e3, "share": self_us(e, cuda) / total, "calls": e.count}
            for e in events[:top]]


def format_profile(profile: dict[str, Any]) -> str:
    if "error" in profile:
        return f"profile of {profile['case']}: could not run ({profile['error']})"
    lines = [f"top kernels of {profile['case']} by self time on {profile['device']} "
             f"({profile['steps']} steps, {profile['recorded_s']:.2f} s recorded):"]
    lines += [f"  {k['share']:6.1%} {k['self_ms']:10.2f} ms {k['calls']:6d}x  {k['name'][:90]}" for k in profile["kernels"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import gpu_suite

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="350M", help=f"one of {', '.join(gpu_suite.SIZES | gpu_suite.TINY)}")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--eager", action="store_true", help="without torch.compile")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    options = (gpu_suite.SIZES | gpu_suite.TINY)[args.size]
    profile = top_kernels(options, args.precision, not args.eager, args.batch_size, args.device,
                          label=f"{args.size} {args.precision} {'eager' if args.eager else 'compiled'}")
    print(format_profile(profile))
    return profile


if __name__ == "__main__":
    main()
