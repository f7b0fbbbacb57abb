"""Site hook (mkdocs.yml `hooks:`): the site is the repository as GitHub shows it.

README.md (the home page) and notebooks/ (its README.md and the example notebooks) live outside
``docs_dir``, so they are added here, read in place, and every page keeps its repository path:
docs/advisor.md is ``docs/advisor.md`` on the site too. A relative link that works on GitHub
(``docs/benchmarks.md`` from the README, ``../notebooks/01-quickstart.ipynb`` from a doc) thus
resolves on the site, and ``mkdocs build --strict`` fails on one that does not.

The notebooks are shown with their committed outputs (never executed). Their plotly figures are
stored as ``application/vnd.plotly.v1+json``, which nbconvert cannot render, so each notebook is
handed to mkdocs-jupyter as a copy in which every such output also carries the figure as HTML (a
div and ``Plotly.newPlot``), and the pages with figures load the plotly.js that ships with the
plotly package, copied into the site: the figures stay interactive, also offline.

The menu reads in course order: Home, Concepts, Guides, Reference (docs/reference/, written
from the code by docs/reference.py), Notebooks.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files, file_sort_key

ROOT = Path(__file__).resolve().parent.parent
PLOTLY = "application/vnd.plotly.v1+json"
PLOTLY_JS = "assets/javascripts/plotly.min.js"
REFERENCE_ORDER = ["settings.md", "magics.md", "cli.md", "python-api.md"]  # docs/reference/, in the menu

_tmp: tempfile.TemporaryDirectory | None = None


def _outside_docs() -> tuple[list[str], list[str]]:
    """The pages that live outside docs_dir, as repository paths: (markdown, notebooks)."""
    notebooks = ROOT / "notebooks"
    pages = [p for p in (ROOT / "README.md", notebooks / "README.md") if p.is_file()]
    return (
        [p.relative_to(ROOT).as_posix() for p in pages],
        [p.relative_to(ROOT).as_posix() for p in sorted(notebooks.glob("*.ipynb"))],
    )


def _with_html_figures(src: Path, dest: Path) -> int:
    """Copy the notebook at src to dest, each plotly output also as HTML; returns the count."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    count = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            figure = output.get("data", {}).get(PLOTLY)
            if figure is None:
                continue
            import plotly.io as pio

            # no plotly.js here: the page loads it once (on_page_content)
            output["data"]["text/html"] = pio.to_html(
                figure, include_plotlyjs=False, full_html=False, validate=False,
                div_id=f"{src.stem}-figure-{count}", default_height=500,
            )
            count += 1
    dest.write_text(json.dumps(nb), encoding="utf-8")
    return count


@event_priority(100)  # before mkdocs-jupyter, which turns the .ipynb files into pages
def on_files(files: Files, config) -> Files:
    global _tmp
    docs_dir = Path(config.docs_dir).resolve()
    prefix = docs_dir.relative_to(ROOT).as_posix()
    site = (config.site_dir, config.use_directory_urls)
    pages = []
    for f in files:
        if f.src_dir and Path(f.src_dir).resolve() == docs_dir:
            # docs/<x> keeps its repository path; its inclusion (exclude_docs) is already set
            f = File(f"{prefix}/{f.src_path}", str(ROOT), *site, inclusion=f.inclusion)
        pages.append(f)
    markdown, notebooks = _outside_docs()
    pages += [File(path, str(ROOT), *site) for path in markdown]
    _cleanup()
    _tmp = tempfile.TemporaryDirectory(prefix="parakit-docs-")
    figures = 0
    for path in notebooks:
        copy = Path(_tmp.name, path)
        copy.parent.mkdir(parents=True, exist_ok=True)
        figures += _with_html_figures(ROOT / path, copy)
        # a File read from the copy's folder (mkdocs-jupyter reads File.src_dir, which a
        # File.generated lacks), under the notebook's repository path
        pages.append(File(path, _tmp.name, *site))
    if figures:
        import plotly

        bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        pages.append(File.generated(config, PLOTLY_JS, abs_src_path=str(bundle)))
    pages.sort(key=file_sort_key)  # the home page first, then docs/, then notebooks/
    return Files(pages)


def on_serve(server, config, builder):
    """`mkdocs serve` rebuilds when a page outside docs_dir changes too (only the pages: the
    runs the notebooks write under notebooks/ do not count)."""
    markdown, notebooks = _outside_docs()
    for path in markdown + notebooks:
        server.watch(str(ROOT / path))
    return server


def on_nav(nav, config, files):
    """The menu in reading order: Home, Concepts, the guides, the reference, the notebooks.
    The nav is built from the files (no ``nav:`` to keep in step with them); this only names
    the sections and lifts docs/concepts.md and docs/reference/ out of the guides."""
    lifted = []
    for item in nav.items:
        if item.is_page and item.file.src_uri == "README.md":
            item.title = "Home"  # in the menu and the tab; the page's heading stays "parakit"
        elif item.is_section and item.title == "Docs":
            item.title = "Guides"  # the docs/ folder's section, named for what it holds
            lifted = [c for c in item.children if _lifted(c)]
            item.children = [c for c in item.children if not _lifted(c)]
    concepts = [c for c in lifted if c.is_page]
    reference = [c for c in lifted if c.is_section]
    home = nav.items[:1]
    nav.items = home + concepts + [i for i in nav.items[1:] if not _is_notebooks(i)] + reference \
        + [i for i in nav.items if _is_notebooks(i)]
    for item in concepts + reference:
        item.parent = None
    for section in reference:  # what a user reaches for first, first
        section.children.sort(key=lambda page: REFERENCE_ORDER.index(Path(page.file.src_uri).name)
                              if Path(page.file.src_uri).name in REFERENCE_ORDER else len(REFERENCE_ORDER))
    nav.pages = list(_pages(nav.items))
    for before, page, after in zip([None, *nav.pages], nav.pages, [*nav.pages[1:], None]):
        page.previous_page, page.next_page = before, after
    return nav


def _lifted(item) -> bool:
    if item.is_page:
        return item.file.src_uri == "docs/concepts.md"
    return item.is_section and item.title == "Reference"


def _is_notebooks(item) -> bool:
    return item.is_section and item.title == "Notebooks"


def _pages(items):
    for item in items:
        if item.is_page:
            yield item
        elif item.is_section:
            yield from _pages(item.children)


def on_page_content(html: str, page, config, files: Files) -> str:
    bundle = files.get_file_from_path(PLOTLY_JS)
    if bundle is None or "Plotly.newPlot(" not in html:
        return html
    return f'<script src="{bundle.url_relative_to(page.file)}"></script>\n{html}'


def _cleanup() -> None:
    global _tmp
    if _tmp is not None:
        _tmp.cleanup()
        _tmp = None


def on_post_build(config) -> None:
    _cleanup()


def on_build_error(error) -> None:
    _cleanup()
