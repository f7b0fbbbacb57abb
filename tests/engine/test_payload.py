"""The user's code keeps its name on the engines: tracebacks and stacks of a callable shipped by
value say the file (or notebook cell) and line it was written at, whatever cloudpickle version
is installed (3.1.3 renamed every such file "<dynamic-code>")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback

import pytest
import torch
from torch import nn

from parakit.config.run import RunConfig
from parakit.engine.payload import pack, unpack

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))  # tests/engine/ -> the repository


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def forward(self, x):
        raise RuntimeError("forward fails on purpose")


def broken_data(step, batch):
    def inner():
        raise ValueError("data fails on purpose")  # the line the traceback must name

    return inner()


def _line_of(text: str) -> int:
    with open(HERE) as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


def _innermost(exc_info_call) -> traceback.FrameSummary:
    try:
        exc_info_call()
    except Exception as e:  # noqa: BLE001 - any failure's traceback is what is checked
        return traceback.extract_tb(e.__traceback__)[-1]
    raise AssertionError("the call did not fail")


def test_a_callable_shipped_by_value_keeps_its_file_and_line():
    config = unpack(pack(RunConfig(model=Net, data=broken_data, loss=None)))
    # The test module is not importable on an engine, so it travels by value: a new function.
    assert config.data is not broken_data and config.data.__module__ == __name__
    frame = _innermost(lambda: config.data(0, 4))
    assert (frame.filename, frame.lineno, frame.name) == (HERE, _line_of("the line the traceback"), "inner")
    frame = _innermost(lambda: config.model()(torch.zeros(1, 3)))
    assert (frame.filename, frame.name) == (HERE, "forward")
    assert frame.lineno == _line_of('raise RuntimeError("forward fails')


def test_pack_leaves_the_by_value_registry_as_it_found_it():
    import cloudpickle

    this = sys.modules[__name__]
    assert __name__ not in cloudpickle.list_registry_pickle_by_value()
    pack(RunConfig(data=broken_data))  # registered for the pack, unregistered after
    assert __name__ not in cloudpickle.list_registry_pickle_by_value()
    cloudpickle.register_pickle_by_value(this)  # the user's own registration ...
    try:
        pack(RunConfig(data=broken_data))
        assert __name__ in cloudpickle.list_registry_pickle_by_value()  # ... stays theirs
    finally:
        cloudpickle.unregister_pickle_by_value(this)


def test_a_notebook_cell_is_named_as_ipython_names_it():
    from IPython.core.interactiveshell import InteractiveShell

    ours = not InteractiveShell.initialized()  # another test module's shell stays as it was
    shell = InteractiveShell.instance()
    try:
        shell.run_cell("x = 1", store_history=True)
        shell.run_cell("def cell_data(step, batch):\n    return 1 / 0\n", store_history=True)
        cell = shell.execution_count - 1
        config = unpack(pack(RunConfig(data=shell.user_ns["cell_data"])))
    finally:
        if ours:
            InteractiveShell.clear_instance()
    frame = _innermost(lambda: config.data(0, 1))
    assert (frame.filename, frame.lineno) == (f"Cell In[{cell}]", 2)


CHECK = f"""
import sys, traceback
sys.path.insert(0, {ROOT!r})
import cloudpickle
from parakit.config.run import RunConfig
from parakit.engine.payload import pack, unpack
from tests.engine.test_payload import broken_data
try:
    unpack(pack(RunConfig(data=broken_data))).data(0, 1)
except ValueError as e:
    f = traceback.extract_tb(e.__traceback__)[-1]
    print(cloudpickle.__version__, f.filename, f.lineno)
"""


def _declared_lowest() -> str:
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        return re.search(r'"cloudpickle>=([0-9.]+)"', f.read())[1]


@pytest.mark.parametrize("which", ["lowest declared", "newest on the index"])
def test_every_cloudpickle_from_the_lowest_declared_to_the_newest_keeps_the_name(which, tmp_path):
    wanted = f"cloudpickle=={_declared_lowest()}" if which == "lowest declared" else "cloudpickle"
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--target", str(tmp_path), wanted], capture_output=True, text=True, timeout=120)
    if got.returncode != 0:
        pytest.skip(f"pip could not install {wanted} (no package index?): {got.stderr.strip()[-200:]}")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    version, filename, line = out.stdout.split()
    if which == "lowest declared":
        assert version == _declared_lowest()
    assert (filename, int(line)) == (HERE, _line_of("the line the traceback"))
