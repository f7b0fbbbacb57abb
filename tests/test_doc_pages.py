"""The pages read as one course: the README links every guide and notebook, every guide links
the reference, each notebook says what it teaches and links the next, every repository path a
page names exists, and a number quoted from a benchmark is the one its committed results hold.
(That the links resolve on the site is tests/test_docs.py's strict build.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
GUIDES = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "notebooks" / "README.md", *GUIDES, *sorted((ROOT / "docs" / "reference").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A path inside backticks or a link, under a top-level folder (or parakit's own, as the pages
# name modules: `engine/compose.py`), with a file's extension or a trailing folder name.
PACKAGES = "config|records|engine|cluster|session|advisor|plots|frontends"
PATH = re.compile(rf"(?<![\w./-])((?:\.\./)*(?:tests|parakit|benchmarks|docs|notebooks|\.ci|{PACKAGES})/[\w./-]*\w)")
# A path a reader fills in, as in `parakit preflight notebooks/NN-name.ipynb`.
PLACEHOLDER = re.compile(r"(?<![A-Za-z])NN(?![A-Za-z])")
# Written by a command a page describes, once it has run on the lent GPU machine: named before
# they exist. Each leaves this list when its file is committed (the test says so).
NOT_WRITTEN_YET = {
    "benchmarks/results/cpu_scaling.json": "docs/benchmarks.md: python benchmarks/cpu_scaling.py, pending the device",
    "benchmarks/results/gpu_precisions.json": "docs/benchmarks.md: python benchmarks/gpu_suite.py, pending the device",
    "docs/images/cpu_scaling.svg": "docs/benchmarks.md: python benchmarks/cpu_scaling.py, pending the device",
}
# Written by another change under way; each mark goes when the page has its link.
NOT_LINKED_YET: dict[str, str] = {}


def cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def texts(markdown_only: bool = False) -> list[tuple[Path, str]]:
    """(page, text) for every page, and for every notebook cell (markdown cells only, for links:
    ``a[i](x)`` in code is no link)."""
    found = [(page, page.read_text(encoding="utf-8")) for page in PAGES]
    return found + [(nb, "".join(c["source"])) for nb in NOTEBOOKS for c in cells(nb)
                    if c["cell_type"] == "markdown" or not markdown_only]


def links(text: str) -> list[str]:
    """Relative link targets, without their anchors."""
    targets = [t.split("#")[0] for t in LINK.findall(text)]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


def exists(page: Path, path: str) -> bool:
    return any(p.exists() for p in (ROOT / path, page.parent / path, ROOT / "parakit" / path))


def test_every_repository_path_a_page_names_exists():
    named = {(page, m.group(1).rstrip(".")) for page, text in texts() for m in PATH.finditer(text)}
    named |= {(page, target) for page, text in texts(markdown_only=True) for target in links(text)}
    missing = sorted(f"{page.relative_to(ROOT)}: {path}" for page, path in named
                     if not exists(page, path) and path not in NOT_WRITTEN_YET and not PLACEHOLDER.search(path))
    assert missing == []
    written = [path for path in NOT_WRITTEN_YET if (ROOT / path).exists()]
    assert written == [], "committed now: remove them from NOT_WRITTEN_YET"


def test_the_readme_links_every_notebook_and_every_guide():
    readme = ROOT / "README.md"
    linked = {(readme.parent / target).resolve() for target in links(readme.read_text(encoding="utf-8"))}
    assert [p.name for p in NOTEBOOKS + GUIDES if p.resolve() not in linked] == []


def _not_yet(name: str):
    if name in NOT_LINKED_YET:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=NOT_LINKED_YET[name]))
    return name


@pytest.mark.parametrize("name", [_not_yet(p.name) for p in GUIDES])
def test_each_guide_links_the_reference(name):
    assert any(t.startswith("reference/") for t in links((ROOT / "docs" / name).read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", [_not_yet(p.name) for p in NOTEBOOKS])
def test_each_notebook_opens_with_what_it_teaches_and_ends_with_a_link_to_the_next(name):
    """The first cell is markdown under a title; the last markdown cell links the next notebook
    (the last one links the notebooks' index), and at most the cell that stops the engines
    follows it (notebook 01's must be last: tests/frontends/test_browser.py runs the others)."""
    book = cells(ROOT / "notebooks" / name)
    first = "".join(book[0]["source"])
    assert book[0]["cell_type"] == "markdown" and first.startswith("# ") and len(first.split()) > 20
    later = [p.name for p in NOTEBOOKS if p.name > name]
    last_text = max(i for i, c in enumerate(book) if c["cell_type"] == "markdown")
    assert (later[0] if later else "README.md") in links("".join(book[last_text]["source"]))
    after = ["".join(c["source"]).strip() for c in book[last_text + 1:]]
    assert after in ([], ["%parakit stop"], ["session.close()"])


def _cpu():
    return json.loads((ROOT / "benchmarks/results/advisor_accuracy_cpu.json").read_text())


def _cuda():
    return json.loads((ROOT / "benchmarks/results/advisor_accuracy_cuda.json").read_text())


def _gpu_row(precision: str, compiled: bool) -> dict:
    rows = json.loads((ROOT / "benchmarks/results/gpu_suite.json").read_text())["rows"]
    return next(r for r in rows if r["size"] == "125M" and r["precision"] == precision and r["compile"] is compiled)


# (page, the words quoted there, made from the committed results by this function)
QUOTED = [
    ("README.md", lambda: "median error {:.1f} % over {} configurations".format(
        100 * _cpu()["median"]["summary"]["median_abs_error"], _cpu()["median"]["summary"]["configurations"])),
    ("README.md", lambda: "{:.1f} % over {} on one H100".format(
        100 * _cuda()["median"]["summary"]["median_abs_error"], _cuda()["median"]["summary"]["configurations"])),
    ("README.md", lambda: "went from {:.1f} to {:.1f} ms a step (MFU {:.1f} → {:.1f} %".format(
        1e3 * _gpu_row("bf16", False)["step_time_s"], 1e3 * _gpu_row("bf16", True)["step_time_s"],
        100 * _gpu_row("bf16", False)["mfu"], 100 * _gpu_row("bf16", True)["mfu"])),
    ("docs/advisor.md", lambda: "a bf16 row costs {:.2f}x an fp32 one".format(
        _cpu()["median"]["calibration"]["precision_scale"]["bf16"])),
    ("docs/advisor.md", lambda: "**{:.1f} %** | bf16-pure; run again".format(
        100 * _cuda()["median"]["summary"]["median_abs_error"])),
    ("docs/advisor.md", lambda: "median step | **{:.1f} %** (goal <= 10 %: met)".format(
        100 * _cpu()["median"]["summary"]["median_abs_error"])),
    ("docs/advisor.md", lambda: "**{:.2f}** at the median step".format(_cpu()["median"]["summary"]["rank_correlation"])),
    ("docs/advisor.md", lambda: "the first choice was **{:.2f}x** the best".format(
        _cpu()["rechecked"]["2"]["first_over_best"])),
    ("docs/advisor.md", lambda: "fp32 {:.1f} ms, against {:.1f} ms for bf16".format(
        1e3 * _cpu()["rechecked"]["1"]["step_time_s"]["single x1 fp32"],
        1e3 * _cpu()["rechecked"]["1"]["step_time_s"]["single x1 bf16"])),
    ("docs/advisor.md", lambda: "expert x2 was predicted **{:.0f} %** off".format(100 * _new("expert", "expert x2"))),
    ("docs/advisor.md", lambda: "context x2 **{:.0f} %** off".format(100 * _new("context", "context x2"))),
]


def _new(layout: str, label: str) -> float:
    record = json.loads((ROOT / "benchmarks/results/advisor_new_layouts_cpu.json").read_text())
    return next(v["error"] for v in record["cases"][layout]["verified"] if v["label"] == label)


@pytest.mark.parametrize("page, quote", QUOTED)
def test_a_number_quoted_from_a_benchmark_is_its_committed_result(page, quote):
    assert quote() in (ROOT / page).read_text(encoding="utf-8")


def test_the_conda_environment_installs_what_ci_installs():
    """environment.yml's pip list: the torch that .ci/run installs first, then the package held
    to constraints.txt, as CI holds it; a conda user gets the versions the suite passed with."""
    pip = [line.strip()[2:] for line in (ROOT / "environment.yml").read_text().splitlines()
           if line.startswith("      - ")]
    ci = (ROOT / ".ci/run").read_text()
    torch_pin = next(p for p in pip if p.startswith("torch=="))
    assert f"pip install -q {torch_pin}" in ci and f"{torch_pin}\n" in (ROOT / "constraints.txt").read_text()
    assert pip.index(torch_pin) < pip.index("-e .[dev]") and "-c constraints.txt" in pip
