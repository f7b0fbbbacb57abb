"""The one-way layers of STYLE.md: imports only go down, and engine code never needs the
notebook's packages."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "parakit"

# Lower number = lower layer. A module may import its own layer or lower ones.
LAYERS = {
    "config": 0, "choices": 0, "levers": 0, "layouts": 0, "records": 1, "measures": 1, "store": 1, "scaling": 1, "engine": 2, "cluster": 3, "progress": 4,
    "session": 4, "bench": 4, "plots": 5, "plot_base": 5, "measure_plots": 5, "report": 6, "cli": 6, "demo": 6, "magics": 6, "panel": 6,
    "terminal": 6,
    "__init__": 7, "__main__": 7, "data": 0, "hosts": 0,
    # the advisor: pure cost model low, orchestration beside session, figures, front end
    "advisor_hardware": 0, "advisor_inputs": 0, "advisor_comm": 1, "advisor_memory": 1, "advisor_costs": 1,
    "advisor_candidates": 1, "advisor_record": 1, "advisor_shape": 4, "advisor_calibrate": 4, "advisor": 4,
    "advisor_plots": 5, "advisor_cli": 6,
}


def layer_of(module: str) -> int:
    return LAYERS[module.split(".")[1] if "." in module else "__init__"]


def parakit_imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("parakit"):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("parakit"))


def test_imports_only_go_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = "parakit." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if module.endswith(".__init__") and module != "parakit.__init__":
            module = module[: -len(".__init__")]
        own = layer_of(module) if module != "parakit.__init__" else LAYERS["__init__"]
        for target in parakit_imports(path):
            if target != "parakit" and layer_of(target) > own:
                upward.append(f"{module} imports {target}")
    assert upward == []


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
