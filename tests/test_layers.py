"""The one-way layers of STYLE.md: imports only go down, never in a circle (imports made
inside functions count too), and engine code never needs the notebook's packages."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "parakit"

# One package per layer; lower number = lower layer. A module may import its own layer or
# lower ones. parakit/__init__.py and __main__.py sit on top.
LAYERS = {
    "data": 0, "config": 0, "records": 1, "engine": 2, "cluster": 3, "session": 4,
    "advisor": 5, "plots": 6, "frontends": 7, "__init__": 8, "__main__": 8,
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("parakit",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The parakit modules a file imports, at the top or inside a function: ``from parakit.x
    import y`` counts as importing ``parakit.x.y`` where that is a module, else ``parakit.x``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("parakit"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                out.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("parakit"))
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if module == "parakit" else LAYERS[parts[1]]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
    assert {m.split(".")[1] for m in modules() if m != "parakit"} <= set(LAYERS)


def test_imports_only_go_down():
    upward = [f"{module} imports {target}"
              for module, targets in import_graph().items()
              for target in targets if target != "parakit" and layer_of(target) > layer_of(module)]
    assert upward == []


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_more_than_ten_modules_directly_under_parakit():
    assert len([p for p in PACKAGE.glob("*.py")]) <= 10


def test_engine_imports_without_notebook_packages():
    code = (
        "import sys\n"
        "for name in ('IPython', 'ipywidgets', 'plotly', 'ipykernel'):\n"
        "    sys.modules[name] = None  # makes any import of them fail\n"
        "import parakit.engine.train, parakit.engine.strategies, parakit.engine.workloads\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_checking_settings_does_not_import_torch():
    code = (
        "import sys\n"
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
