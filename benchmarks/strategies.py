"""Every strategy on the same engines, side by side: loss parity against single, step time,
per-rank parameter + optimizer bytes, and the pipeline bubble against its ideal.

Usage: python benchmarks/strategies.py [--workers 2] [--device auto] [--steps 20]
"""

from __future__ import annotations

import argparse

import parakit

LAYOUTS = [
    dict(strategy="ddp"), dict(strategy="fsdp"), dict(strategy="tensor"),
    dict(strategy="pipeline", schedule="gpipe"), dict(strategy="pipeline", schedule="1f1b"),
    dict(strategy="pipeline", schedule="interleaved"),
]
HYBRIDS = [dict(strategy="hybrid", hybrid=h, mesh="2x2") for h in ("fsdp+tensor", "ddp+tensor", "pipeline+ddp")]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2, help="engines; 4 adds the 2-D hybrids")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="fp32")
    args = p.parse_args()
    base = dict(model="gpt", model_options={"depth": 4, "width": 256, "heads": 8, "seq_len": 128},
                steps=args.steps, batch_size=32, seed=0, precision=args.precision)
    layouts = [dict(d, workers=2) for d in LAYOUTS]  # 1-D layouts on 2 ranks; hybrids on 4
    if args.workers >= 4:
        layouts += [dict(d, workers=4) for d in HYBRIDS]
    with parakit.Session(workers=args.workers, device=args.device, runs_dir="parakit-runs/strategies", progress=False) as s:
        single = s.run(strategy="single", **base)
        print(f"{'layout':34s} {'status':7s} {'max rel loss diff':>17s} {'step ms':>8s} {'state MiB/rank':>14s} {'bubble':>7s} {'ideal':>6s}")
        for layout in [{"strategy": "single"}] + layouts:
            try:
                r = single if layout == {"strategy": "single"} else s.run(**base, **layout)
            except ValueError as e:  # a layout this machine or model cannot take: say so, go on
                print(f"{str(layout):34s} refused: {e}")
                continue
            name = " ".join(str(v) for k, v in layout.items() if k != "workers") + f" x{r.world_size}"
            if not r.ok:
                print(f"{name:34s} {r.status:7s} {r.error.splitlines()[0][:160]}")
                continue
            rel = max(abs(a.loss - b.loss) / abs(b.loss) for a, b in zip(r.steps, single.steps))
            sm = r.summary
            state = (sm["param_bytes"] + sm["optimizer_bytes"]) / 2**20
            bubble = f"{sm['bubble']:.2f}" if sm.get("bubble") is not None else "-"
            ideal = f"{sm['bubble_ideal']:.2f}" if sm.get("bubble_ideal") is not None else "-"
            print(f"{name:34s} {r.status:7s} {rel:17.2e} {sm['step_time_s'] * 1e3:8.1f} {state:14.1f} {bubble:>7s} {ideal:>6s}"
                  f"  [{r.backend}, {r.device_names[0]}]")


if __name__ == "__main__":
    main()
