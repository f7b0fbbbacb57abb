"""How long a stop takes when a helper process is gone (target: 5 s, docs/reliability.md).

Two cases, each repeated, on one 2-engine CPU session (ddp, the built-in mlp, a run of a
million steps in a thread, as a panel's run is):

- nanny: the nanny of rank 1's engine is SIGKILLed after step 3; the time is from
  ``Session.stop()`` to ``run`` returning (the run stopped, its steps kept).
- controller: the controller and its schedulers are SIGKILLed after step 3; the time is from
  the kill to ``run`` returning (the run failed in one line), and, apart, to the next run's end
  (new controller and engines started within it).

    python benchmarks/stop_time.py --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time

import psutil

import parakit
from parakit.cluster.controller import controller_pid

QUICK = dict(model="mlp", strategy="ddp", workers=2, batch_size=8)
TARGET_S = 5.0


def _run_in_thread(session):
    out, progress = {}, []
    thread = threading.Thread(target=lambda: out.update(r=session.run(steps=10**6, on_progress=progress.append, **QUICK)))
    thread.start()
    deadline = time.monotonic() + 120
    while not (progress and progress[-1]["step"] >= 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    return thread, out


def nanny_case(session) -> dict:
    session.restart()  # engines with their nannies (a killed one stays a zombie of its engine)
    engine = psutil.Process(session._engines.pids()[1])
    nanny = next(p for p in engine.children() if "ipyparallel.engine.nanny" in " ".join(p.cmdline()))
    thread, out = _run_in_thread(session)
    nanny.kill()
    time.sleep(0.5)
    asked = time.monotonic()
    session.stop()
    thread.join(120)
    r = out["r"]
    return {"stop_s": round(time.monotonic() - asked, 2), "status": r.status, "steps_kept": len(r.steps)}


def controller_case(session) -> dict:
    controller = psutil.Process(controller_pid(session._engines))
    everything = [controller, *controller.children(recursive=True)]
    thread, out = _run_in_thread(session)
    for p in everything:
        p.kill()
    killed = time.monotonic()
    thread.join(120)
    ended = time.monotonic() - killed
    r = out["r"]
    started = time.monotonic()
    ok = session.run(steps=3, **QUICK).ok
    return {"end_s": round(ended, 2), "status": r.status, "error": r.error,
            "next_run_s": round(time.monotonic() - started, 2), "next_run_ok": ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as runs, parakit.Session(workers=2, device="cpu", runs_dir=runs,
                                                                progress=False, hang_timeout_s=30) as s:
        nanny = [nanny_case(s) for _ in range(args.repeats)]
        controller = [controller_case(s) for _ in range(args.repeats)]
    report = {
        "target_s": TARGET_S,
        "nanny_stop_s_median": statistics.median(n["stop_s"] for n in nanny),
        "controller_end_s_median": statistics.median(c["end_s"] for c in controller),
        "nanny": nanny, "controller": controller,
    }
    print(json.dumps(report, indent=1) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
