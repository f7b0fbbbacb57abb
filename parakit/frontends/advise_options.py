"""The advisor's option group, shared by ``parakit advise`` and ``%parakit advise``: what to
advise for, the hardware to predict (a preset or figures), and a saved calibration to predict
from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from parakit.frontends.options import add_price_options, model_option, price_settings, str_list


def hardware_figures(text: str) -> Any:
    """A preset name, or KEY=VALUE,... figures (numbers; device and name as text)."""
    if "=" not in text:
        return text
    figures: dict[str, Any] = {}
    for item in str_list(text):
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


def calibration_file(path: str) -> dict[str, Any]:
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
    p.add_argument("--model-option", type=model_option, action="append", default=[], metavar="KEY=INT",
                   help="size of the built-in model, e.g. --model-option depth=4")
    p.add_argument("--workers", type=int, default=2, help="the worker count to advise for (1 to 1024)")
    p.add_argument("--hardware", type=hardware_figures, default="engines",
                   help="engines (measured), h100-nvlink, h100-ib, a100-pcie, cpu-ethernet, or figures: "
                        "peak_tflops=400,memory_gib=80,alpha_s=1e-5,beta_bytes_per_s=1e11")
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--precisions", type=str_list, default=None, help="precisions to try (default: all the device has)")
    p.add_argument("--compressions", type=str_list, default=None,
                   help="compressions to try (default none,fp16,bf16,powersgd:4,topk:0.01,randomk:0.01)")
    p.add_argument("--strategies", type=str_list, default=None, help="strategies to try (default: all)")
    p.add_argument("--verify", action="store_true", help="run the top configurations and compare with the prediction")
    p.add_argument("--top", type=int, default=3, help="configurations verified and projected")
    p.add_argument("--project-to", type=int, default=64, help="largest worker count of the projection (<= 1024)")
    p.add_argument("--steps", type=int, default=10, help="steps of each calibration and verification run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--statistic", default="median", choices=["median", "min"],
                   help="a run's median step, or its fastest (on a machine shared with other work)")
    p.add_argument("--calibration", type=calibration_file, default=None, metavar="ADVICE.json",
                   help="predict from a saved advice's calibration instead of calibrating (no engine "
                        "unless --verify)")
    p.add_argument("--rank-by", default="time", choices=["time", "cost"],
                   help="fastest first, or cheapest per 1000 samples first (device-hours x their price)")
    add_price_options(p, energy=False)


def advise_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``parakit.advise`` keyword arguments from parsed options (engines and store left out)."""
    return {"model": args.model, "model_options": dict(args.model_option), "workers": args.workers,
            "hardware": args.hardware, "batch_size": args.batch_size, "precisions": args.precisions,
            "compressions": args.compressions, "strategies": args.strategies, "verify": args.verify,
            "top": args.top, "project_to": args.project_to, "steps": args.steps, "seed": args.seed,
            "statistic": args.statistic, "calibration": args.calibration, "rank_by": args.rank_by,
            "prices": price_settings(args)}


def checked_calibration(data: dict[str, Any] | None):
    """The Calibration of ``--calibration``'s JSON (ValueError naming a wrong field), or None."""
    from parakit.advisor.inputs import Calibration

    return None if data is None else Calibration.from_dict(data)
