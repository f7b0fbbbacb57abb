"""``parakit advise``: the subcommand and what it writes (its options are in options.py, shared
with ``%parakit advise``). Inputs are checked before an engine starts: one line and exit code 2."""

from __future__ import annotations

import argparse
import json

from parakit.frontends import advise_options, options, text


def add_advise_parser(sub) -> None:
    p = sub.add_parser("advise", help="predict every configuration's step time, memory and bytes; rank them")
    advise_options.add_advise_options(p)
    p.add_argument("--plot", default=None, metavar="PATH.html", help="write the projection (and verification) figures")
    p.add_argument("--json", action="store_true", help="print the advice as JSON (only JSON on stdout)")
    options.add_engine_options(p)


def advise_command(args: argparse.Namespace) -> int:
    from parakit.advisor.advice import advise, check_request
    from parakit.session.preflight import engines_here

    settings = advise_options.advise_settings(args)
    where = options.engine_settings(args)
    with options.checked_input():
        settings["calibration"] = advise_options.checked_calibration(settings["calibration"])
        request = check_request(**{k: v for k, v in settings.items() if k != "calibration"})
        engines_here(workers=request.workers if request.hardware is None else 1, **where)
    advice = advise(**settings, progress=not args.json, **where)
    if args.plot:
        _write_figures(advice, args.plot)
    print(json.dumps(advice.to_dict(), indent=1) if args.json else text.advice_table(advice))
    return 0


def _write_figures(advice, path: str) -> None:
    from parakit.plots.advisor import projection, verification

    figures = [projection(advice)] if advice.projections else []
    if advice.verified:
        figures.append(verification(advice))
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(fig.to_html(full_html=i == 0 and len(figures) == 1, include_plotlyjs="cdn" if i == 0 else False) for i, fig in enumerate(figures))


