"""The asynchronous sync modes against every-step ddp, on loopback and over a shaped link: bytes
each rank sends per step, communication not hidden behind compute, the loss reached, and the
time each run took to reach a target loss (records.timeline.time_to_loss).

Every mode trains the same gpt (default sizes, batch 128: ~0.2 s of compute a step on 2 CPU
cores) for the same steps with the same seed; the link is a network namespace joined by a veth
pair shaped by tc (needs root; where it cannot be made, that part is skipped and says why).

    python benchmarks/async_sync.py                  # loopback and link=100mbit, ~3 min on 2 cores
    python benchmarks/async_sync.py --steps 64 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import parakit  # noqa: E402
from parakit.records.timeline import time_to_loss  # noqa: E402

MODES = {"every-step": {}, "powersgd:4": {"compression": "powersgd:4"}, "delayed:1": {"sync": "delayed:1"},
         "diloco:8": {"sync": "diloco:8"}, "local-sgd:8": {"sync": "local-sgd:8"}}


def measure(link: str | None, steps: int, target: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as runs, parakit.Session(2, device="cpu", link=link, runs_dir=runs,
                                                                progress=False) as session:
        for name, extra in MODES.items():
            r = session.run(model="gpt", batch_size=128, steps=steps, strategy="ddp", workers=2,
                            profile_every=4, **extra)
            s = r.summary
            rows.append({"link": link or "loopback", "sync": name, "ok": r.ok,
                         "bytes_per_step": s.get("comm_bytes_per_step"),
                         "exposed_comm_ms": None if s.get("exposed_comm_time_s") is None else s["exposed_comm_time_s"] * 1e3,
                         "step_ms": s.get("step_time_s", 0) * 1e3, "loss_last": s.get("loss_last"),
                         "seconds": r.steps[-1].time_s if r.steps else None,
                         "time_to_target_s": time_to_loss(r, target),
                         "error": None if r.ok else (r.error or r.status)})  # kept: a failure says why
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--target", type=float, default=3.0, help="the loss each run's time is taken to")
    p.add_argument("--link", default="100mbit")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = measure(None, args.steps, args.target)
    try:
        rows += measure(args.link, args.steps, args.target)
    except ValueError as e:  # no root, no iproute2: the link is refused before anything starts
        print(f"link={args.link!r} skipped: {e}", file=sys.stderr)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
           "steps": args.steps, "target_loss": args.target, "rows": rows}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{'link':<10}{'sync':<13}{'MB/step':>9}{'exposed ms':>12}{'step ms':>9}{'loss':>8}{'run s':>7}"
          f"{f'to {args.target:g} s':>9}")
    for r in rows:
        if not r["ok"]:
            print(f"{r['link']:<10}{r['sync']:<13}failed: {(r['error'] or '').splitlines()[-1:]}")
            continue
        to = "-" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.1f}"
        print(f"{r['link']:<10}{r['sync']:<13}{r['bytes_per_step'] / 2**20:>9.3f}{r['exposed_comm_ms']:>12.1f}"
              f"{r['step_ms']:>9.1f}{r['loss_last']:>8.3f}{r['seconds']:>7.1f}{to:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
