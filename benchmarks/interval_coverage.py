"""Are parakit's 95 % intervals honest? Run notebook-sized comparisons many times, in fresh
sessions, against a long reference measured alternately, and count how often the interval
covers the reference (goal >= 0.9), with the interval's median relative width beside it (an
interval always right because it is huge is no better).

The comparison is notebook 05's strong-scaling cell: ddp, gpt width 128, global batch 32,
8 steps (2 warm-up), 2 workers against 1. Each fresh session alternates:
  - short pairs: a 1-worker and a 2-worker run of 8 steps (the order flips every pair), each
    pair compared with ``parakit.compare``, the rule every front end uses;
  - long pairs: the same runs with 40 steps, the reference.
The reference is the ratio of the long runs' median throughputs over every session. The script
also reports the spread between identical runs that one run's steps cannot see (the figure
``records.intervals.RUN_TO_RUN_SD`` is set from), and whether the sessions' own intervals from
their short runs (repeats) overlap each other.

    python benchmarks/interval_coverage.py                  # 6 sessions x 4 pairs, ~5 min on 2 cores
    python benchmarks/interval_coverage.py --sessions 3 --pairs 2 --json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import parakit  # noqa: E402
from parakit.records.intervals import RUN_TO_RUN_SD, compare  # noqa: E402

CELL = dict(model="gpt", model_options={"width": 128}, strategy="ddp", batch_size=32)
SHORT, LONG = 8, 40


def one_session(pairs: int, long_pairs: int, runs_dir: str, index: int) -> dict:
    """A fresh session's short and long runs, alternated; throughput and within-run noise each."""
    short: dict[int, list] = {1: [], 2: []}
    long: dict[int, list] = {1: [], 2: []}
    with parakit.Session(2, device="cpu", runs_dir=runs_dir, progress=False) as session:
        for k in range(max(pairs, long_pairs)):
            order = (1, 2) if (k + index) % 2 == 0 else (2, 1)  # ABBA across pairs and sessions
            for steps, into, wanted in ((SHORT, short, pairs), (LONG, long, long_pairs)):
                if k >= wanted:
                    continue
                for workers in order:
                    into[workers].append(session.run(**CELL, workers=workers, steps=steps))
    return {"short": short, "long": long}


def measures(sessions: list[dict]) -> dict:
    longs = {w: [r.summary["samples_per_s"] for s in sessions for r in s["long"][w]] for w in (1, 2)}
    reference = statistics.median(longs[2]) / statistics.median(longs[1])
    covered, widths, rows = 0, [], []
    for i, s in enumerate(sessions):
        for one, two in zip(s["short"][1], s["short"][2]):
            c = compare(two, one)
            hit = c.low <= reference <= c.high
            covered += hit
            widths.append((c.high - c.low) / c.ratio)
            rows.append({"session": i, "ratio": c.ratio, "low": c.low, "high": c.high, "verdict": c.verdict,
                         "covers": hit, "first_in_session": one is s["short"][1][0]})
    per_session = [compare(s["short"][2], s["short"][1]) for s in sessions]  # repeats within a session
    overlap = all(a.low <= b.high and b.low <= a.high for a in per_session for b in per_session)
    return {
        "reference_speedup": reference,
        "comparisons": len(rows),
        "coverage": covered / len(rows),
        "median_relative_width": statistics.median(widths),
        "first_run_coverage": _share([r["covers"] for r in rows if r["first_in_session"]]),
        "run_to_run_sd": {str(w): between_sd([[r for r in s["short"][w]] for s in sessions]) for w in (1, 2)},
        "run_to_run_sd_used": RUN_TO_RUN_SD,
        "sessions_overlap": overlap,
        "per_session": [{"ratio": c.ratio, "low": c.low, "high": c.high, "repeats": c.repeats[0]}
                        for c in per_session],
        "rows": rows,
    }


def between_sd(sessions: list[list]) -> float:
    """The spread of log(samples/s) between identical short runs beyond their own steps' noise,
    pooled over every run of every session (a fresh session's shift included)."""
    logs = [math.log(r.summary["samples_per_s"]) for runs in sessions for r in runs]
    within = statistics.fmean([r.summary["within_run_sd"] ** 2 for runs in sessions for r in runs])
    return math.sqrt(max(statistics.variance(logs) - within, 0.0))


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=6, help="fresh sessions (default 6)")
    parser.add_argument("--pairs", type=int, default=4, help="short 1-vs-2 worker pairs per session (default 4)")
    parser.add_argument("--long-pairs", type=int, default=2, help="long reference pairs per session (default 2)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    sessions = []
    with tempfile.TemporaryDirectory() as runs:
        for i in range(args.sessions):
            sessions.append(one_session(args.pairs, args.long_pairs, runs, i))
            print(f"session {i + 1}/{args.sessions} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        out = figures(sessions)
    out.update(machine=f"{platform.machine()}, {__import__('os').cpu_count()} cores", seconds=time.monotonic() - started,
               measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"reference speed-up (long runs, {args.sessions} sessions): {out['reference_speedup']:.3f}")
    print(f"coverage of the 95 % interval: {out['coverage']:.2f} over {out['comparisons']} comparisons "
          f"(first pair of each session: {out['first_run_coverage']:.2f}); "
          f"median relative width {out['median_relative_width']:.2f}")
    print(f"run-to-run sd beyond the steps' own noise: 1 worker {out['run_to_run_sd']['1']:.3f}, "
          f"2 workers {out['run_to_run_sd']['2']:.3f} (used: {RUN_TO_RUN_SD})")
    print("per session (its short pairs as repeats): " + ", ".join(
        f"{p['ratio']:.2f} ({p['low']:.2f}-{p['high']:.2f})" for p in out["per_session"])
          + f"; all overlap: {out['sessions_overlap']}")
    for r in out["rows"]:
        print(f"  session {r['session']}: {r['ratio']:.2f} ({r['low']:.2f}-{r['high']:.2f}) {r['verdict']}"
              f"{'' if r['covers'] else '  MISSES'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
