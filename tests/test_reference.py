"""The reference pages (docs/reference/, written by docs/reference.py) are what the code gives
now, and have an entry for everything a user can type: every RunConfig field, built-in model
and model option, every ``%parakit`` subcommand and its options, every ``parakit`` command and
its options, every name of ``parakit.__all__``. The entries are counted from the code here, not
from the generator, so a generator that left something out fails too."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

import parakit
from parakit.config.models import MODEL_OPTIONS
from parakit.config.run import RunConfig
from parakit.frontends.cli import build_parser
from parakit.frontends.magics import ParakitMagics
from parakit.plots.runs import PLOTS

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reference", ROOT / "docs" / "reference.py")
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)


def committed() -> dict[str, str]:
    return {name: (reference.OUT / name).read_text(encoding="utf-8") for name in reference.PAGES}


def sections(page: str) -> dict[str, str]:
    """{heading text: the text under it, up to the next heading of any level}."""
    parts = re.split(r"^#{2,3} (.+)$", page, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def options_of(parser: argparse.ArgumentParser) -> list[str]:
    """What a user types for each option (its longest spelling), or a positional's choices."""
    found = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        found += [max(action.option_strings, key=len)] if action.option_strings else list(action.choices or [])
    return found


def missing_entries(pages: dict[str, str]) -> list[str]:
    """Everything a user can type that the pages have no entry for, as 'page: what'."""
    missing = []

    def need(page: str, heading: str, words: list[str]) -> None:
        body = sections(pages[page]).get(heading)
        if body is None:
            missing.append(f"{page}: {heading}")
            return
        missing.extend(f"{page}: {heading}: {w}" for w in words
                       if not re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", body))

    docs = reference.field_docs(RunConfig)
    for field in dataclasses.fields(RunConfig):
        need("settings.md", field.name, [])
        if not docs[field.name][1]:
            missing.append(f"parakit/config/run.py: {field.name} has no docstring")
    for model, sizes in MODEL_OPTIONS.items():
        need("settings.md", "Built-in models", [model.value, *(f"{k}={v}" for k, v in sizes.items())])
    magics = ParakitMagics(shell=None)
    for name, handler in magics._subcommands.items():
        need("magics.md", f"%parakit {name}", options_of(handler.parser))
    need("magics.md", "%%parakit (cell magic)", options_of(magics._cell_options.parser))
    need("magics.md", "%parakit plot", list(PLOTS))  # the kinds: a positional without choices
    for words, parser, _ in reference.commands(build_parser()):
        need("cli.md", " ".join(words), options_of(parser))
    for name in parakit.__all__:
        need("python-api.md", f"parakit.{name}", [])
        if "\n::: " not in sections(pages["python-api.md"]).get(f"parakit.{name}", "\n::: "):
            missing.append(f"python-api.md: parakit.{name} is not rendered from its docstring")
    return missing


def test_the_committed_reference_is_what_the_code_gives():
    assert reference.stale() == [], "run python docs/reference.py and commit docs/reference/"


def test_every_setting_model_subcommand_command_and_option_has_an_entry():
    assert missing_entries(committed()) == []


@pytest.mark.parametrize("page, entry, cut", [
    ("settings.md", "settings.md: batch_size", "### batch_size"),
    ("magics.md", "magics.md: %parakit switch", "## %parakit switch"),
    ("magics.md", "magics.md: %parakit run: --seed", "--seed"),
    ("magics.md", "magics.md: %parakit plot: loss-time", "loss-time"),
    ("cli.md", "cli.md: parakit bench comm: --collectives", "--collectives"),
    ("settings.md", "settings.md: Built-in models: cnn", "`cnn`"),
    ("python-api.md", "python-api.md: parakit.compare", "## parakit.compare"),
])
def test_an_entry_left_out_is_named(page, entry, cut):
    """What the completeness test says when the generator drops an entry (or a docstring
    drops a setting)."""
    pages = committed()
    pages[page] = pages[page].replace(cut, "`removed`")
    assert entry in " | ".join(missing_entries(pages))


def test_a_new_option_makes_the_committed_page_stale(monkeypatch):
    from parakit.frontends import options

    add = options.add_run_options

    def with_one_more(p):
        add(p)
        p.add_argument("--brand-new", type=int, default=None, help="an option nobody documented")

    monkeypatch.setattr(options, "add_run_options", with_one_more)
    assert "cli.md" in reference.stale()
    assert "--brand-new" in reference.cli_page()
