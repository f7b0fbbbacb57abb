"""A model's repeated blocks, found wherever they sit: the one decision fsdp (each block its own
unit, gathered alone), activation checkpointing and compile (each block recomputed and compiled
on its own), the pipeline's default cuts and the memory model (engine/shape.py) all read.

Where they are looked for, first match wins:

1. the user's ``blocks=`` setting: module names (a ModuleList or Sequential stands for its
   children), or classes, or class names;
2. the classes a transformers model names in ``_no_split_modules`` (its decoder or encoder
   layers): the model's author saying which modules must stay whole, which is what a unit is
   (accelerate's FSDP wraps transformers models by the same list);
3. the model's first top-level list: a ModuleList, or a Sequential whose children are all one
   class (parakit's built-in models; nanoGPT and torchtitan write theirs so);
4. the largest list of one class at any depth, by the parameters it holds: a wrapped model's
   ``model.layers``, a ResNet's stages.

None found, the model is one unit: FSDP gathers every weight at once and checkpointing
recomputes the whole forward; the run says so (records/summary_words.py).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from parakit.engine.names import nearest


def find_blocks(model: nn.Module, blocks: Any = None) -> list[tuple[str, nn.Module]]:
    """The model's repeated blocks, by qualified name, in the order the model holds them.

    Args:
        model: the model as built (before any wrapping).
        blocks: the run's ``blocks`` setting: None to find them; a module name, a class, a
            class name, or a list of these.

    Returns:
        [(name, module)] of the blocks; [] where none were found (the model is one unit).

    Raises:
        ValueError: ``blocks`` names something the model does not have, with the nearest names.
    """
    if blocks is not None:
        return named_blocks(model, blocks)
    for finder in (_no_split_blocks, _top_level_list, _largest_list):
        found = finder(model)
        if found:
            return found
    return []


def repeated_blocks(model: nn.Module, blocks: Any = None) -> list[nn.Module]:
    """``find_blocks``' modules without their names: the units fsdp, checkpointing and compile take."""
    return [module for _, module in find_blocks(model, blocks)]


def named_blocks(model: nn.Module, blocks: Any) -> list[tuple[str, nn.Module]]:
    """The blocks a ``blocks=`` setting names (see ``find_blocks``)."""
    wanted = [blocks] if isinstance(blocks, (str, type)) else list(blocks)
    modules = dict(model.named_modules())
    names_by_class = {type(m).__name__ for m in modules.values()}
    chosen: list[tuple[str, nn.Module]] = []
    for item in wanted:
        if isinstance(item, str) and item in modules:
            module = modules[item]
            is_list = isinstance(module, (nn.ModuleList, nn.Sequential))
            chosen += [(f"{item}.{n}" if item else n, c) for n, c in module.named_children()] if is_list \
                else [(item, module)]
        elif isinstance(item, type) or item in names_by_class:
            chosen += _outermost(model, lambda m, item=item: type(m) is item if isinstance(item, type)
                                 else type(m).__name__ == item)
        else:
            raise ValueError(f"blocks names {item!r}, which the model does not have; {nearest(item, modules)}")
    if not chosen:
        named = [b.__name__ if isinstance(b, type) else b for b in wanted]
        raise ValueError(f"blocks={named!r} found no module of the model; name its blocks' list or their class")
    order = {id(m): i for i, m in enumerate(modules.values())}
    unique = {id(m): (n, m) for n, m in chosen}
    return sorted(unique.values(), key=lambda nm: order[id(nm[1])])


def _no_split_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    classes = set(getattr(model, "_no_split_modules", None) or ())
    return _outermost(model, lambda m: type(m).__name__ in classes) if classes else []


def _top_level_list(model: nn.Module) -> list[tuple[str, nn.Module]]:
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList) and len(child):
            return [(f"{name}.{n}", c) for n, c in child.named_children()]
        if _is_list_of_one_class(child) and isinstance(child, nn.Sequential):
            return [(f"{name}.{n}", c) for n, c in child.named_children()]
    return []


def _largest_list(model: nn.Module) -> list[tuple[str, nn.Module]]:
    lists = [(sum(p.numel() for p in m.parameters()), name, m) for name, m in model.named_modules()
             if _is_list_of_one_class(m)]
    lists = [entry for entry in lists if entry[0] > 0]
    if not lists:
        return []
    _, name, found = max(lists, key=lambda entry: entry[0])  # max keeps the first of equals
    return [(f"{name}.{n}" if name else n, c) for n, c in found.named_children()]


def _is_list_of_one_class(module: nn.Module) -> bool:
    children = list(module.children())
    return (isinstance(module, (nn.ModuleList, nn.Sequential)) and len(children) > 1
            and len({type(c) for c in children}) == 1)


def _outermost(model: nn.Module, matches) -> list[tuple[str, nn.Module]]:
    """The modules ``matches`` picks that sit inside no other it picks."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        # not the model itself: it is always the outermost unit (fsdp's root) already
        if name and matches(module) and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, module))
    return found


def block_names(model: nn.Module, blocks: Any = None) -> list[str]:
    """The qualified names of ``find_blocks``' blocks."""
    return [name for name, _ in find_blocks(model, blocks)]

