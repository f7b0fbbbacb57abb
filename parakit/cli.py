"""The ``parakit`` command: ``parakit run`` for one run, ``parakit demo`` for the main job.

Every setting is checked before an engine starts; a mistake is one line on stderr naming the
fix, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from parakit.cluster import placement
from parakit.config import RunConfig, Strategy
from parakit.store import DEFAULT_RUNS_DIR


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _model_option(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    try:
        return key.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=INT, e.g. width=256, got {text!r}") from None


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
    p.add_argument("--gpus", type=_int_list, help="GPU indices to pin engines to, e.g. 0,2")
    p.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="run store folder (default ./parakit-runs)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="parakit", description="See what parallel training does.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="one training run on local engines")
    run.add_argument("--workers", type=int, default=None, help="ranks (default: 1 for single, else 2 or one per GPU)")
    run.add_argument("--strategy", default="ddp", help="single or ddp")
    run.add_argument("--model", default="mlp", help="mlp, cnn or gpt")
    run.add_argument("--model-option", type=_model_option, action="append", default=[],
                     metavar="KEY=INT", help="size of the built-in model, e.g. --model-option width=256")
    run.add_argument("--steps", type=int, default=20)
    run.add_argument("--warmup-steps", type=int, default=2)
    run.add_argument("--batch-size", type=int, default=64, help="global batch size")
    run.add_argument("--lr", type=float, default=1e-3)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", action="store_true", help="print the RunResult as JSON (only JSON on stdout)")
    _add_engine_options(run)

    demo = sub.add_parser("demo", help="compare 1 and more workers; print a table, write an HTML report")
    demo.add_argument("--workers", type=_int_list, default=None, help="worker counts to compare, e.g. 1,2,4")
    demo.add_argument("--steps", type=int, default=None, help="steps per run (default sized to the device)")
    demo.add_argument("--report", default=None, help="HTML report path (default RUNS_DIR/demo-report.html)")
    _add_engine_options(demo)
    return parser


@contextlib.contextmanager
def checked_input():
    """Turn a setting's ValueError into a UsageError. Only the checking phase is wrapped, so a
    ValueError raised later, inside a run, is reported as the bug it is."""
    try:
        yield
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_command(args: argparse.Namespace) -> int:
    from parakit.session import Session

    with checked_input():
        facts = placement.host_facts()
        gpus = placement.choose_gpus(args.device, args.gpus, facts)
        strategy = Strategy.parse(args.strategy, "strategy")
        workers = args.workers if args.workers is not None else (1 if strategy is Strategy.SINGLE else max(len(gpus), 2))
        if workers >= 1:
            placement.check_workers(workers, facts)  # first: a clearer message than the batch's
        config = RunConfig(
            model=args.model, model_options=dict(args.model_option), strategy=strategy, workers=workers,
            steps=args.steps, warmup_steps=args.warmup_steps, batch_size=args.batch_size, lr=args.lr,
            seed=args.seed,
        )
    with Session(workers, device=args.device, gpus=args.gpus, runs_dir=args.runs_dir) as session:
        settings = {k: v for k, v in vars(config).items() if k not in ("data", "loss")}
        result = session.run(**settings)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(summary_line(result))
    return 0 if result.ok else 1


def summary_line(result: Any) -> str:
    c, s = result.config, result.summary
    if not result.ok:
        return f"{result.run_id} {result.status}: {result.error.splitlines()[0] if result.error else ''}"
    return (
        f"{result.run_id} ok: {c['strategy']} x{result.world_size} {c['model']} on {result.device[0]} "
        f"({result.backend or 'no process group'}): {s['samples_per_s']:.1f} samples/s, "
        f"step {s['step_time_s'] * 1e3:.1f} ms, loss {s['loss_first']:.4f} -> {s['loss_last']:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "demo":
            from parakit.demo import demo_command

            return demo_command(args)
        return run_command(args)
    except UsageError as e:
        print(f"parakit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parakit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
