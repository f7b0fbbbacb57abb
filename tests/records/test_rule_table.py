"""The rule table (records.RULES): each entry names a function that exists, and the rules that
are easy to write twice are written once."""

import importlib
import re
from pathlib import Path

from parakit.records import RULES

ROOT = Path(__file__).resolve().parents[2]


def test_every_rule_names_a_function():
    for figure, where in RULES.items():
        module, name = where.split(":")
        assert callable(getattr(importlib.import_module(module), name, None)), f"{figure}: {where}"


def _sources():
    for folder in ("parakit", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            yield path.relative_to(ROOT).as_posix(), path.read_text()


def test_the_core_count_and_the_mesh_are_read_in_one_place():
    cores = [p for p, text in _sources() if "sched_getaffinity" in text]
    assert cores == ["parakit/config/hosts.py"]
    meshes = [p for p, text in _sources() if re.search(r"""\.split\(["']x["']\)""", text)]
    assert meshes == ["parakit/config/layouts.py"]


def test_the_finite_number_check_is_written_once():
    checks = [p for p, text in _sources() if re.search(r"isinstance\(\w+, bool\)[^\n]*isfinite", text)]
    assert checks == ["parakit/config/choices.py"]


def test_the_docs_show_the_table_as_it_is():
    text = (ROOT / "docs" / "measuring.md").read_text()
    assert [line for line in text.splitlines() if line.startswith("| ") and " | `parakit." in line] == [
        f"| {figure} | `{where}` |" for figure, where in RULES.items()]
