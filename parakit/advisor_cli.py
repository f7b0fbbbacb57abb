"""``parakit advise``: the advisor's options (shared with ``%parakit advise``), the command, and
its table as text. Inputs are checked before an engine starts: one line and exit code 2."""

from __future__ import annotations

import argparse
import json
from typing import Any

from parakit.advisor_candidates import label
from parakit.cli import _model_option, _str_list, checked_input

TABLE_ROWS = 20


def _hardware(text: str) -> Any:
    """A preset name, or KEY=VALUE,... figures (numbers; device and name as text)."""
    if "=" not in text:
        return text
    figures: dict[str, Any] = {}
    for item in _str_list(text):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. peak_tflops=400, got {item!r}")
        key = key.strip()
        try:
            figures[key] = value.strip() if key in ("device", "name") else (
                int(value) if key == "ranks_per_node" else float(value))
        except ValueError:
            raise argparse.ArgumentTypeError(f"hardware figure {key} must be a number, got {value!r}") from None
    return figures


def _calibration(path: str) -> dict[str, Any]:
    """A saved advice (``RUNS_DIR/advice/*.json``) or calibration, read as JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"cannot read a calibration from {path!r}: {e}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError(f"{path!r} holds no calibration")
    return data.get("calibration", data)


def add_advise_options(p: argparse.ArgumentParser) -> None:
    """The advisor's settings; shared by ``parakit advise`` and ``%parakit advise``."""
    p.add_argument("--model", default="mlp", help="mlp, cnn or gpt")
    p.add_argument("--model-option", type=_model_option, action="append", default=[], metavar="KEY=INT",
                   help="size of the built-in model, e.g. --model-option depth=4")
    p.add_argument("--workers", type=int, default=2, help="the worker count to advise for (1 to 1024)")
    p.add_argument("--hardware", type=_hardware, default="engines",
                   help="engines (measured), h100-nvlink, h100-ib, a100-pcie, cpu-ethernet, or figures: "
                        "peak_tflops=400,memory_gib=80,alpha_s=1e-5,beta_bytes_per_s=1e11")
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--precisions", type=_str_list, default=None, help="precisions to try (default: all the device has)")
    p.add_argument("--compressions", type=_str_list, default=None,
                   help="compressions to try (default none,fp16,bf16,powersgd:4,topk:0.01,randomk:0.01)")
    p.add_argument("--strategies", type=_str_list, default=None, help="strategies to try (default: all)")
    p.add_argument("--verify", action="store_true", help="run the top configurations and compare with the prediction")
    p.add_argument("--top", type=int, default=3, help="configurations verified and projected")
    p.add_argument("--project-to", type=int, default=64, help="largest worker count of the projection (<= 1024)")
    p.add_argument("--steps", type=int, default=10, help="steps of each calibration and verification run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--statistic", default="median", choices=["median", "min"],
                   help="a run's median step, or its fastest (on a machine shared with other work)")
    p.add_argument("--calibration", type=_calibration, default=None, metavar="ADVICE.json",
                   help="predict from a saved advice's calibration instead of calibrating (no engine "
                        "unless --verify)")


def advise_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``parakit.advise`` keyword arguments from parsed options (engines and store left out)."""
    return {"model": args.model, "model_options": dict(args.model_option), "workers": args.workers,
            "hardware": args.hardware, "batch_size": args.batch_size, "precisions": args.precisions,
            "compressions": args.compressions, "strategies": args.strategies, "verify": args.verify,
            "top": args.top, "project_to": args.project_to, "steps": args.steps, "seed": args.seed,
            "statistic": args.statistic, "calibration": args.calibration}


def add_advise_parser(sub) -> None:
    from parakit.cli import _add_engine_options

    p = sub.add_parser("advise", help="predict every configuration's step time, memory and bytes; rank them")
    add_advise_options(p)
    p.add_argument("--plot", default=None, metavar="PATH.html", help="write the projection (and verification) figures")
    p.add_argument("--json", action="store_true", help="print the advice as JSON (only JSON on stdout)")
    _add_engine_options(p)


def advise_command(args: argparse.Namespace) -> int:
    from parakit.advisor import advise, check_request
    from parakit.cli import engine_checks
    from parakit.session import check_runs_dir

    settings = advise_settings(args)
    with checked_input():
        settings["calibration"] = checked_calibration(settings["calibration"])
        request = check_request(**{k: v for k, v in settings.items() if k != "calibration"})
        launch, _, _ = engine_checks(args, request.workers if request.hardware is None else 1)
        check_runs_dir(args.runs_dir)
    advice = advise(**settings, device=args.device, gpus=args.gpus, runs_dir=args.runs_dir, progress=not args.json,
                    **launch)
    if args.plot:
        _write_figures(advice, args.plot)
    print(json.dumps(advice.to_dict(), indent=1) if args.json else advice_table(advice))
    return 0


def checked_calibration(data: dict[str, Any] | None):
    """The Calibration of ``--calibration``'s JSON (ValueError naming a wrong field), or None."""
    from parakit.advisor_inputs import Calibration

    return None if data is None else Calibration.from_dict(data)


def _write_figures(advice, path: str) -> None:
    from parakit.advisor_plots import projection, verification

    figures = [projection(advice)] if advice.projections else []
    if advice.verified:
        figures.append(verification(advice))
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(fig.to_html(full_html=i == 0 and len(figures) == 1, include_plotlyjs="cdn" if i == 0 else False) for i, fig in enumerate(figures))


def advice_table(advice) -> str:
    """The advice as text: the summary, then a line per configuration (the first TABLE_ROWS that
    fit, then those that do not, with why)."""
    lines = [advice.summary(), "",
             (f"{'rank':>4} {'configuration':<36}{'step ms':>9}{'samples/s':>11}{'MiB/rank':>10}"
             f"{'MiB sent':>10}{'measured':>10}")]
    measured = {v["label"]: v for v in advice.verified}
    fitting = [e for e in advice.estimates if e.fits]
    for i, e in enumerate(fitting[:TABLE_ROWS], start=1):
        seen = measured.get(label(e.settings), {}).get("measured_step_time_s")
        lines.append(f"{i:>4} {label(e.settings):<36}{e.step_time_s * 1e3:>9.2f}{e.samples_per_s:>11.1f}"
                     f"{e.memory_bytes / 2**20:>10.0f}{e.collective_bytes_per_step / 2**20:>10.3f}"
                     + (f"{seen * 1e3:>10.2f}" if seen else f"{'':>10}"))
    if len(fitting) > TABLE_ROWS:
        lines.append(f"     ... {len(fitting) - TABLE_ROWS} more that fit (--json for all)")
    lines += [f"   - {label(e.settings):<36}{e.reason}" for e in advice.estimates if not e.fits]
    for p in advice.projections:
        curve = ", ".join(f"{q['workers']}: {q['speedup']:.2f}x" for q in p["points"])
        lines.append(f"projection {p['label']}: {curve}" + (f" ({p['stopped']})" if p["stopped"] else ""))
    return "\n".join(lines)
