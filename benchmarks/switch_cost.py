"""What a switch costs: the time to move a run's state from one layout to another, per MB of
model state (parameters and AdamW's two moments, fp32).

For gpt at a few widths, a ddp x2 run switches at its middle step to each target (fsdp x2,
tensor x2, single x1) and the record's own figures are read: the slowest rank's DCP save, the
rest of the pause in training (results back, the next launch, the model built), the slowest
rank's load and re-layout (records/segments.py). Each
case is repeated and the median taken; the cases alternate, so a noisy moment hits them alike.

    python benchmarks/switch_cost.py                      # ~2 min on 2 CPU cores
    python benchmarks/switch_cost.py --widths 128,512 --repeats 5 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import parakit  # noqa: E402

TARGETS = {"fsdp x2": {"strategy": "fsdp"}, "tensor x2": {"strategy": "tensor"}, "single x1": {"workers": 1}}
# One GPU: one engine (NCCL refuses two ranks on one GPU), so the switch there is a precision one.
GPU_TARGETS = {"bf16 x1": {"precision": "bf16"}}
ADAM_COPIES = 3  # the parameters and AdamW's two moments, all fp32


def state_mb(width: int, depth: int) -> float:
    """MB of model state of the gpt at this size: its parameters, counted on a CPU copy, x3."""
    from parakit.engine.workloads import build_model  # torch: only when measuring

    model = build_model("gpt", {"width": width, "depth": depth})
    return sum(p.numel() for p in model.parameters()) * 4 * ADAM_COPIES / 1e6


def measure(widths: list[int], depth: int, repeats: int, steps: int, device: str = "cpu") -> list[dict]:
    samples: dict[tuple[int, str], list[dict]] = {}
    gpu = device != "cpu"
    start = {"strategy": "single", "workers": 1} if gpu else {"strategy": "ddp", "workers": 2}
    with tempfile.TemporaryDirectory() as runs, parakit.Session(1 if gpu else 2, device=device, runs_dir=runs,
                                                                progress=False) as session:
        for _ in range(repeats):
            for width in widths:
                for target, change in (GPU_TARGETS if gpu else TARGETS).items():  # alternated: same noise
                    run = session.run(model="gpt", model_options={"width": width, "depth": depth}, batch_size=8,
                                      steps=steps, warmup_steps=1, profile_every=0, switch={steps // 2: change},
                                      **start)
                    if not run.ok:
                        raise SystemExit(f"width {width} -> {target} failed: {run.error}")
                    seg = run.segments[1]
                    got = {k: seg[k] for k in ("switch_s", "state_save_s", "state_load_s")}
                    got["launch_s"] = got["switch_s"] - got["state_save_s"] - got["state_load_s"]
                    samples.setdefault((width, target), []).append(got)
    rows = []
    for (width, target), got in samples.items():
        mb = state_mb(width, depth)
        median = {k: statistics.median(g[k] for g in got) for k in got[0]}
        rows.append({"width": width, "depth": depth, "target": target, "state_mb": mb, "repeats": len(got),
                     **median, "switch_s_per_mb": median["switch_s"] / mb})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="128,512,1024", help="gpt widths, comma separated")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--device", default="cpu", help="cpu (ddp x2 to fsdp, tensor, single) or cuda (single, to bf16)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = measure([int(w) for w in args.widths.split(",")], args.depth, args.repeats, args.steps, args.device)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
           "torch": __import__("torch").__version__, "rows": rows}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{'width':>6}{'state MB':>10}  {'switch to':<11}{'save s':>8}{'rest s':>10}{'load s':>8}"
          f"{'switch s':>10}{'s / MB':>9}")
    for r in rows:
        print(f"{r['width']:>6}{r['state_mb']:>10.1f}  {r['target']:<11}{r['state_save_s']:>8.3f}{r['launch_s']:>10.3f}"
              f"{r['state_load_s']:>8.3f}{r['switch_s']:>10.3f}{r['switch_s_per_mb']:>9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
