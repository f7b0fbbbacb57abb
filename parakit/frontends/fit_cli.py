"""``parakit fit`` (and ``%parakit fit``, which shares these options): the largest model per
layout under a memory limit (``Session.fit``), printed as a table and written as a figure.
Inputs are checked before an engine starts: one line and exit code 2."""

from __future__ import annotations

import argparse
from typing import Any

from parakit.frontends import options


def layout(text: str) -> dict[str, Any]:
    """An argparse type for one layout: "fsdp" or "fsdp:zero=2:activation_checkpointing=full"."""
    name, *pairs = text.strip().split(":")
    out: dict[str, Any] = {"strategy": name}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"a layout is STRATEGY[:KEY=VALUE...], e.g. fsdp:zero=2 (got {text!r})")
        out[key.replace("-", "_")] = int(value) if value.isdigit() else value
    return out


def add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gpt", help="mlp or gpt (vary depth or width), or your own by name (vary batch_size)")
    p.add_argument("--model-option", type=options.model_option, action="append", default=[], metavar="KEY=INT",
                   help="the other sizes of the built-in model, e.g. --model-option width=256")
    p.add_argument("--data", default=None, help="your own data, by name")
    p.add_argument("--loss", default=None, help="your own loss, by name")
    p.add_argument("--vary", default="depth", help="depth, width or batch_size")
    p.add_argument("--memory-limit", default="1GB", help="bytes per rank, e.g. 64MB or 8GB")
    p.add_argument("--strategies", type=options.comma_list(layout), default=[{"strategy": "ddp"}, {"strategy": "fsdp"}],
                   metavar="LAYOUT,...", help="layouts to try, e.g. ddp,ddp:zero=1,fsdp:zero=2,fsdp:zero=3")
    p.add_argument("--workers", type=int, default=None, help="ranks per run (default: every engine)")
    p.add_argument("--start", type=int, default=None, help="the first value tried (default: the smallest that runs)")
    p.add_argument("--high", type=int, default=None, help="the largest value worth trying")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (when not varied)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--activation-checkpointing", default="none", help="none, full or selective, for every layout")


def fit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``Session.fit``'s keyword arguments from the parsed options."""
    settings: dict[str, Any] = {"precision": args.precision, "activation_checkpointing": args.activation_checkpointing}
    if args.model_option:
        settings["model_options"] = dict(args.model_option)
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    settings.update({k: getattr(args, k) for k in ("data", "loss") if getattr(args, k) is not None})
    return dict(model=args.model, vary=args.vary, memory_limit=args.memory_limit, strategies=args.strategies,
                workers=args.workers, start=args.start, high=args.high, **settings)


def fit_text(result: Any) -> str:
    """The fit as the command and the magic print it."""
    table = result.table()
    return (f"largest {result.vary} under {result.memory_limit / 2**20:.0f} MiB per rank ({result.measure}):\n"
            + table.to_string(index=False, float_format=lambda v: f"{v:.1f}", na_rep="-"))


def add_fit_parser(sub) -> None:
    p = sub.add_parser("fit", help="the largest model per layout under a memory limit, by short real runs")
    add_fit_options(p)
    p.add_argument("--plot", default=None, metavar="PATH.html", help="also write the figure there")
    options.add_engine_options(p)


def fit_command(args: argparse.Namespace) -> int:
    from parakit.config.fit import check_fit
    from parakit.frontends import names
    from parakit.plots.fit import fit_figure
    from parakit.session.preflight import engines_here
    from parakit.session.session import Session

    where = options.engine_settings(args)
    settings = fit_settings(args)
    with options.checked_input():
        settings = names.resolve(settings)
        here = engines_here(**where, workers=args.workers)
        workers = args.workers or here.workers
        model, vary, limit, strategies = (settings.pop(k) for k in ("model", "vary", "memory_limit", "strategies"))
        extra = {k: settings.pop(k) for k in ("workers", "start", "high")}
        check_fit(model, vary, limit, strategies, workers, extra["start"], extra["high"], settings)
    with Session(workers, **where) as session:
        result = session.fit(model, vary, limit, strategies, workers, start=extra["start"], high=extra["high"], **settings)
    print(fit_text(result))
    if args.plot:
        fit_figure(result).write_html(args.plot, include_plotlyjs=True)
        print(f"figure: {args.plot}")
    return 0 if all(l.largest is not None for l in result.layouts) else 1
