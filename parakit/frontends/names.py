"""Your own model, data and loss by name, from the front ends that take text: ``%parakit run
--model Tiny --data batches --loss my_loss`` looks names up in the notebook's namespace, the
``parakit`` command imports ``package.module:name``. Built-in names (mlp, cnn, gpt) stay text.

An unknown name is one line that lists the built-ins and the namespace's candidates, raised
before any engine is touched."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from parakit.config.run import Workload

_BUILT_INS = {w.value for w in Workload}
# What each setting must be, to list the namespace's candidates for it.
_WANTS = {
    "model": "a zero-argument callable or an nn.Module class",
    "data": "a callable (step, global_batch_size) -> (inputs, targets), or a Dataset",
    "loss": "a callable (outputs, targets) -> scalar",
}


def resolve(settings: dict[str, Any], namespace: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``settings`` with the text values of model, data and loss replaced by the objects they name.

    Args:
        settings: run settings as a front end parsed them (model, data, loss may be text).
        namespace: where names are looked up (a notebook's ``user_ns``); ``module:name`` is
            imported whatever the namespace.

    Returns:
        A copy with the named objects in place (built-in model names left as text).

    Raises:
        ValueError: naming the unknown name, the built-ins and the namespace's candidates.
    """
    out = dict(settings)
    for key in _WANTS:
        value = out.get(key)
        if isinstance(value, list):  # a sweep's list of models
            out[key] = [_one(key, v, namespace) for v in value]
        elif isinstance(value, str):
            out[key] = _one(key, value, namespace)
    return out


def _one(key: str, name: Any, namespace: Mapping[str, Any] | None) -> Any:
    if not isinstance(name, str) or (key == "model" and name in _BUILT_INS):
        return name
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"{key} {name!r} cannot be imported ({e}); give package.module:name") from None
    if namespace is not None and name in namespace:
        found = namespace[name]
        if key == "data" or callable(found):
            return found
        raise ValueError(f"{key} {name!r} is a {type(found).__name__}, not {_WANTS[key]}")
    built_ins = f"the built-ins are {Workload.allowed()}; " if key == "model" else ""
    here = candidates(key, namespace)
    where = f"in this notebook: {', '.join(here)}" if here else (
        "nothing in this notebook fits" if namespace is not None else "give package.module:name")
    raise ValueError(f"unknown {key} {name!r}: {built_ins}{where}")


def candidates(key: str, namespace: Mapping[str, Any] | None) -> list[str]:
    """Names in ``namespace`` that could be given as ``key``: a model is a class deriving from
    nn.Module or a function; data and loss are functions (or a Dataset for data)."""
    if not namespace:
        return []
    found = []
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, type(importlib)):
            continue
        if key == "model" and isinstance(value, type) and _is_module_class(value):
            found.append(name)
        elif callable(value) and not isinstance(value, type) and getattr(value, "__module__", None) == "__main__":
            found.append(name)
        elif key == "data" and hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(value, (str, bytes, dict, list, tuple)):
            found.append(name)
    return sorted(found)


def _is_module_class(cls: type) -> bool:
    return any(base.__module__.startswith("torch.nn") and base.__name__ == "Module" for base in cls.__mro__)
