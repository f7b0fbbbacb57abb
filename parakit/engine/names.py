"""A model's module names as the settings that name them read them: a ``*`` matching any one
name between dots (``"model.layers.*.mlp"``, as ``parallelize_module`` matches its plan), and
the nearest names for one the model does not have, so a typo is answered with the fix."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)")


def matching(pattern: str, names: Iterable[str]) -> list[str]:
    """The names ``pattern`` matches, in the order given: atom by atom between dots, each
    atom of the pattern a shell pattern (``*``, ``?``, ``[ab]``) matching one atom."""
    atoms = pattern.split(".")
    return [name for name in names
            if len(name.split(".")) == len(atoms) and all(map(fnmatchcase, name.split("."), atoms))]


def nearest(name: str, names: Iterable[str], n: int = 3) -> str:
    """"the nearest are a, b, c": the model's names closest to ``name`` (difflib's ratio). A
    pattern with ``*`` is compared with the names their indices written as ``*``, so that
    ``layers.*.attn.q`` finds ``layers.*.self_attn.q_proj``."""
    names = [k for k in names if k]
    if "*" in name:
        names = list(dict.fromkeys(_INDEX.sub("*", k) for k in names))
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.3)
    return f"the nearest are {', '.join(close)}" if close else "see model.named_modules() for its names"
