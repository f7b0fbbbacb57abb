"""What travels to the engines: a RunConfig with the user's callables, cloudpickled so that
their code keeps the name of the file, or notebook cell, it was written in.

cloudpickle 3.1.3 replaced every by-value code object's ``co_filename`` with
``"<dynamic-code>"`` (its payloads are deterministic that way). A traceback, a hang report or a
failure text of the user's own data callable then said ``<dynamic-code>:53``. So each code
object travels with its original location beside cloudpickle's own reduction of it, and is
rebuilt on the engine with that location put back; any cloudpickle version gives the same text.
"""

from __future__ import annotations

import io
import sys
import sysconfig
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

_CLOUDPICKLE_CODE_REDUCE: Callable = cloudpickle.CloudPickler.dispatch_table[types.CodeType]


def rebuild_code(make: Callable, args: tuple, filename: str) -> types.CodeType:
    """On the engine: cloudpickle's code object, with the file it was defined in put back."""
    return make(*args).replace(co_filename=filename)


def where_defined(filename: str) -> str:
    """The file a code object came from, or ``Cell In[N]`` for a notebook cell, as IPython's own
    tracebacks name it (ipykernel compiles each cell to a temporary file of its own)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    cells = getattr(getattr(shell, "compile", None), "_filename_map", None) or {}
    return f"Cell In[{cells[filename]}]" if filename in cells else filename


def _reduce_code(code: types.CodeType):
    make, args = _CLOUDPICKLE_CODE_REDUCE(code)
    return rebuild_code, (make, args, where_defined(code.co_filename))


class _LocatedPickler(cloudpickle.CloudPickler):
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.CloudPickler.dispatch_table)


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({paths["stdlib"], paths["purelib"], paths["platlib"]})


def _modules_to_send(objects) -> list[types.ModuleType]:
    """Modules of the user's callables that the engines may not be able to import (a test file,
    a script beside the notebook): they travel by value. Notebook cells (``__main__``) do anyway."""
    roots = _installed_roots()
    found = {}
    for obj in objects:
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        path = getattr(module, "__file__", None) or ""
        if module and module.__name__ != "__main__" and path and not path.startswith(roots):
            found[module.__name__] = module
    # Only modules registered here are unregistered after: a user's own registration stays.
    # (list_registry_pickle_by_value: public in every cloudpickle from 2.0, names only.)
    registered = cloudpickle.list_registry_pickle_by_value()
    return [m for name, m in found.items() if name not in registered]


def pack(config: Any) -> bytes:
    """The run's config (or a dict of names, for a cell) as bytes for the engines, with the
    user's code located (see above)."""
    objects = config.values() if isinstance(config, dict) else (config.model, config.data, config.loss,
                                                                 *(config.blocks or ()))
    ours = _modules_to_send(objects)
    for module in ours:
        cloudpickle.register_pickle_by_value(module)
    try:
        buffer = io.BytesIO()
        _LocatedPickler(buffer, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(config)
        return buffer.getvalue()
    finally:
        for module in ours:
            cloudpickle.unregister_pickle_by_value(module)


def unpack(payload: bytes) -> Any:
    """On the engine: the config that ``pack`` sent."""
    return cloudpickle.loads(payload)
