"""The one-way layers of STYLE.md, held strictly: each layer imports only the layers STYLE
names for it (written out below as data), never one above, never in a circle (imports made
inside functions count too, relative ones are resolved, and ``from parakit import x`` inside the
package counts as importing the top), and engine code never needs the notebook's packages."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "parakit"
TOP = "top"  # parakit/__init__.py and __main__.py: the public face, above every layer

# STYLE.md's table as data: what each layer may import besides itself. config is the base every
# layer may read (it is the vocabulary of a run); STYLE lists only the nearest layers below.
ALLOWED = {
    "config": set(),
    "records": {"config"},
    "engine": {"config", "records"},
    "cluster": {"config", "records", "engine"},
    "session": {"config", "records", "cluster"},
    "advisor": {"config", "records", "session"},
    "plots": {"config", "records"},
    "frontends": {"config", "records", "session", "advisor", "plots"},
    TOP: {"config", "records", "engine", "cluster", "session", "advisor", "plots", "frontends"},
}

# Edges STYLE does not list, each kept for a reason. Each must be made inside a function, so the
# importing module still loads without torch (the engine side needs it, the notebook side not).
EXCEPTIONS = {
    ("parakit.session.fit", "parakit.engine.shape"):
        "the fit measures the model's parameters and activations by building it with torch",
    ("parakit.advisor.advice", "parakit.engine.shape"):
        "the advisor's cost model reads the same measured shape as the fit",
    ("parakit.session.tools", "parakit.engine.commbench"):
        "the benchmark function is shipped to the engines; the session names it when one starts",
    ("parakit.session.preflight", "parakit.engine.gpus"):
        "the preflight asks NVML (no CUDA context) for the GPUs' compute capability",
    ("parakit.session.preflight", "parakit.engine.model_check"):
        "the preflight checks the module names a run gives (tp_plan, split, blocks) on the model built on meta",
    ("parakit.session.tools", "parakit.advisor.advice"):
        "Session.advise forwards to the advisor, which is built on the session (the one edge up)",
}
# Edges up a layer: lazy forwards from the facade, so no module needs the other to load. The
# circle they close is not an import-time one, and the circle check leaves them out.
FORWARDS = {edge for edge in EXCEPTIONS if edge[0].split(".")[1] == "session" and edge[1].split(".")[1] == "advisor"}


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in package.rglob("*.py"):
        parts = ("parakit",) + path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The dotted module an ImportFrom names, relative ones resolved against the importer."""
    if not node.level:
        return node.module
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: dict[str, Path]) -> dict[str, bool]:
    """The parakit modules a file imports -> whether every such import sits inside a function.
    ``from parakit.x import y`` counts as importing ``parakit.x.y`` where that is a module, else
    ``parakit.x``; ``from parakit import y`` is the top unless ``y`` is a subpackage."""
    out: dict[str, bool] = {}

    def visit(node: ast.AST, in_function: bool) -> None:
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, path, node)
            if source and (source == "parakit" or source.startswith("parakit.")):
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    targets.append(child if child in known else source)
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "parakit"]
        for target in targets:
            out[target] = out.get(target, True) and in_function
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    out.pop(module, None)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, bool]]:
    known = modules(package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return TOP if len(parts) == 1 or parts[1] in ("__init__", "__main__") else parts[1]


def breaches(package: Path = PACKAGE) -> list[str]:
    """Every import STYLE's table does not allow, and every listed exception made at the top."""
    found = []
    for module, targets in import_graph(package).items():
        for target, lazy in sorted(targets.items()):
            mine, theirs = layer_of(module), layer_of(target)
            if theirs == mine and theirs != TOP:
                continue
            if (module, target) in EXCEPTIONS:
                if not lazy:
                    found.append(f"{module} imports {target} at the top (an exception must be lazy)")
            elif theirs not in ALLOWED[mine]:
                found.append(f"{module} ({mine}) imports {target} ({theirs})")
    return found


def cycles(graph: dict) -> list[list[str]]:
    """Each import circle once, as the modules along it (depth-first search, iterative)."""
    found, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path, stack = [start], {start}, [iter(sorted(graph.get(start, ())))]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                done.add(path.pop())
                on_path = set(path)
                stack.pop()
            elif target in on_path:
                found.append(path[path.index(target):] + [target])
            elif target not in done and target in graph:
                path.append(target)
                on_path.add(target)
                stack.append(iter(sorted(graph[target])))
    return found


def test_every_package_has_a_layer():
    assert {layer_of(m) for m in modules()} <= set(ALLOWED) | {"data"}


def test_imports_follow_the_table():
    assert breaches() == []


def test_every_exception_is_still_needed():
    graph = import_graph()
    stale = [edge for edge in EXCEPTIONS if edge[1] not in graph.get(edge[0], {})]
    assert stale == [], f"listed exceptions no code makes any more: {stale}"


def test_no_import_circles():
    graph = {m: {t for t in targets if (m, t) not in FORWARDS} for m, targets in import_graph().items()}
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _scratch(tmp_path: Path, relative: str, source: str) -> Path:
    """A copy of the package's source with one more module in it."""
    copy = tmp_path / "parakit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.txt"))
    (copy / relative).write_text(source)
    return copy


def _added(copy: Path) -> list[str]:
    """What the scratch copy breaches that the package itself does not."""
    before = set(breaches())
    return [b for b in breaches(copy) if b not in before]


def test_the_table_refuses_a_plots_to_session_import(tmp_path):
    copy = _scratch(tmp_path, "plots/scratch.py", "from parakit.session.progress import note\n")
    assert _added(copy) == ["parakit.plots.scratch (plots) imports parakit.session.progress (session)"]


def test_the_table_refuses_relative_and_top_level_back_doors(tmp_path):
    copy = _scratch(tmp_path, "records/scratch.py",
                    "def later():\n    from ..session import progress\n    from .. import Session\n")
    assert _added(copy) == ["parakit.records.scratch (records) imports parakit (top)",
                              "parakit.records.scratch (records) imports parakit.session.progress (session)"]


def test_an_exception_made_at_the_top_is_refused(tmp_path):
    source = (PACKAGE / "session" / "fit.py").read_text() + "\nfrom parakit.engine.shape import model_shape\n"
    copy = _scratch(tmp_path, "session/fit.py", source)
    assert _added(copy) == [
        "parakit.session.fit imports parakit.engine.shape at the top (an exception must be lazy)"]


def test_no_more_than_ten_modules_directly_under_parakit():
    assert len([p for p in PACKAGE.glob("*.py")]) <= 10


def test_config_needs_only_the_standard_library():
    third_party = sorted(
        f"{path.name}: {name}" for path in (PACKAGE / "config").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if name.split(".")[0] not in sys.stdlib_module_names | {"parakit", "__future__"})
    assert third_party == []


def test_every_engine_module_imports_without_notebook_packages():
    """Every engine module, the lazily loaded strategies included, found by walk_packages."""
    code = (
        "import importlib, pkgutil, sys\n"
        "for name in ('IPython', 'ipywidgets', 'plotly', 'ipykernel'):\n"
        "    sys.modules[name] = None  # makes any import of them fail\n"
        "import parakit.engine as engine\n"
        "names = [m.name for m in pkgutil.walk_packages(engine.__path__, 'parakit.engine.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names), 'parakit.engine.strategies.pipeline' in names)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    count, found_pipeline = out.stdout.split()
    assert int(count) > 30 and found_pipeline == "True"


def test_checking_settings_does_not_import_torch():
    code = (
        "import sys\n"
        "import parakit.advisor.advice  # the session's own import is lazy there\n"
        "from parakit.session.preflight import check_run, engines_here\n"
        "check_run(engines_here(device='auto'), strategy='ddp', workers=2, precision='bf16')\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_tests_follow_the_packages():
    """A package's tests are in tests/<package>/, so a reader finds them at once."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__")) and p.name != "artifacts"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists() and p.name != "data"}
    assert folders <= packages, folders - packages
    assert all(any((tests / name).glob("test_*.py")) for name in packages - {"data"}), sorted(
        name for name in packages if not any((tests / name).glob("test_*.py")))
