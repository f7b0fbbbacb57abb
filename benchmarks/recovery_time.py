"""A run that loses a worker, measured (issue 36's "done when"): on 2 CPU engines, a ddp x2 mlp
run of 60 steps with ``checkpoint_every=10`` whose rank 1 is SIGKILLed at step 33
(``fault="kill:1@33"``), against the same run unfailed; then ``on_failure="shrink"``.

Each repeat runs, in this order: the unfailed run; the killed run with the spare engine just
started (the run before it did not recover, which stops a spare: the replacement still has to
register, ~6 s of imports on 2 cores); the killed run again, its spare registered during the
run before (a run longer than that, or a session's second); a shrink. Per run: the largest
loss difference from the unfailed run, the checkpoint it went on from, ``recover_s`` (the
survivors' loop end to the resumed first step) and ``lost_s`` (the checkpoint's step end to it).

    python benchmarks/recovery_time.py                 # ~1.5 min on 2 CPU cores
    python benchmarks/recovery_time.py --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import parakit  # noqa: E402

RUN = dict(model="mlp", strategy="ddp", workers=2, batch_size=8, seed=0, profile_every=0, warmup_steps=1, steps=60)
KILLED = dict(checkpoint_every=10, on_failure="resume", fault="kill:1@33")


def row(case: str, run, unfailed) -> dict:
    gap = max(abs(a.loss - b.loss) for a, b in zip(run.steps, unfailed.steps))
    recovery = run.recovered[0] if run.recovered else None
    return {"case": case, "status": run.status, "steps": len(run.steps), "loss_gap": gap,
            "workers": [g.world_size for g in run.segments],
            **({k: recovery[k] for k in ("checkpoint_step", "steps_retrained", "recover_s", "lost_s")}
               if recovery else {})}


def measure(repeats: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as runs, parakit.Session(2, device="cpu", runs_dir=runs, progress=False) as s:
        for _ in range(repeats):
            unfailed = s.run(**RUN)  # recovers nothing: stops a spare left by the last repeat
            rows.append(row("resume, spare just started", s.run(**RUN, **KILLED), unfailed))
            rows.append(row("resume, spare registered", s.run(**RUN, **KILLED), unfailed))
            shrink = s.run(**{**RUN, "steps": 20}, checkpoint_every=5, on_failure="shrink", fault="kill:1@12")
            rows.append(row("shrink", shrink, unfailed))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a busy machine's warnings: the figures are printed
        rows = measure(args.repeats)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
           "torch": __import__("torch").__version__, "rows": rows}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{'case':<28}{'status':>7}{'workers':>9}{'loss gap':>10}{'from step':>10}{'recover s':>10}{'lost s':>8}")
    for r in rows:
        print(f"{r['case']:<28}{r['status']:>7}{'>'.join(map(str, r['workers'])):>9}{r['loss_gap']:>10.1e}"
              f"{r.get('checkpoint_step', '-'):>10}{r.get('recover_s', 0):>10.2f}{r.get('lost_s', 0):>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
