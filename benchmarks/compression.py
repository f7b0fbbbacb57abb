"""Gradient bytes on the wire and step time for each compression, side by side on the same
engines: gpt, ddp on 2 workers. Bytes are counted in the hooks, per step and rank.

Usage: python benchmarks/compression.py [--device auto] [--steps 12]
"""

from __future__ import annotations

import argparse

import parakit

KINDS = ["none", "fp16", "bf16", "powersgd:4", "topk:0.01", "randomk:0.01"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    gpt = dict(model="gpt", model_options={"width": 512, "depth": 4, "heads": 8, "seq_len": 64},
               strategy="ddp", workers=2, steps=args.steps, batch_size=16)
    with parakit.Session(workers=2, device=args.device, runs_dir="parakit-runs/compression", progress=False) as s:
        runs = {k: s.run(compression=k, **gpt) for k in KINDS}
    none = runs["none"].summary
    print(f"gpt width 512 depth 4 ({none['param_bytes'] / 2**20:.1f} MiB of fp32 parameters), ddp x2, {args.steps} steps")
    print(f"{'compression':14s} {'bytes/step/rank':>16s} {'fewer than none':>16s} {'step ms':>8s}")
    for k, r in runs.items():
        if not r.ok:
            print(f"{k:14s} {r.status}: {r.error.splitlines()[0]}")
            continue
        sm = r.summary
        fewer = none["comm_bytes_per_step"] / sm["comm_bytes_per_step"]
        print(f"{k:14s} {sm['comm_bytes_per_step']:16,.0f} {fewer:15.1f}x {sm['step_time_s'] * 1e3:8.1f}")


if __name__ == "__main__":
    main()
