"""A frozen record that reads as a Mapping under the names it is stored by. It lets a record that
used to be a dict (a run's summary, a switched run's segments) be typed and frozen while the
readers written for the dict (``r.summary["samples_per_s"]``, ``.get``, ``in``, ``dict(...)``,
``==`` against a dict) keep working. Dicts stay at the JSON boundary: ``to_dict`` / ``from_dict``."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="RecordView")


class RecordView(Mapping):
    """Base of a ``@dataclass(frozen=True, kw_only=True, eq=False, repr=False)`` record that is
    also a read-only Mapping of its fields.

    - Keys are the names the fields are stored by (JSON, the runs frame's columns): the
      attribute's own name, or the older name in ``STORED_AS`` for an attribute renamed to carry
      its unit.
    - A field in ``ONLY_WHERE_IT_APPLIES`` is a key only while it holds a value, as the dict
      only had the key then (``fp8_layers`` under fp8).
    - A record with an ``extra`` field keeps there what ``from_dict`` did not know (a key an
      older or newer parakit wrote) and shows it as keys, so a record read and saved again
      loses nothing.
    - A record that holds nothing (every field None, no extra) has no keys and is false, as the
      empty dict of a run that measured no step was.
    - It equals any Mapping of the same items (Mapping's ``__eq__``; ``eq=False`` keeps the
      dataclass from replacing it), so ``r.summary == {...}`` compares as it did; it shows as
      its view (``repr=False`` keeps the dataclass's one-line repr of every field away).
    """

    STORED_AS: ClassVar[Mapping[str, str]] = {}
    """Attribute -> the name it is stored and read by, where the two differ."""
    ONLY_WHERE_IT_APPLIES: ClassVar[frozenset[str]] = frozenset()
    """Attributes that are no key while None."""
    READERS: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}
    """Attribute -> how its stored (JSON) value becomes the typed one: a nested record."""

    def __post_init__(self) -> None:
        shadowed = sorted(set(self._extra()) & set(_attributes(type(self))))
        if shadowed:  # two values under one key: the view could show only one of them
            raise ValueError(f"extra holds {', '.join(map(repr, shadowed))}, a field of {type(self).__name__}")

    # -- the Mapping view -----------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        attribute = _attributes(type(self)).get(key)
        if attribute is not None:
            value = getattr(self, attribute)
            if value is not None or not (attribute in self.ONLY_WHERE_IT_APPLIES or self._holds_nothing()):
                return value
        elif key in self._extra():
            return self._extra()[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        if self._holds_nothing():
            return iter(())
        keys = [key for key, attribute in _attributes(type(self)).items()
                if attribute not in self.ONLY_WHERE_IT_APPLIES or getattr(self, attribute) is not None]
        return iter([*keys, *self._extra()])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """In IPython and Jupyter: laid out as the dict it was, a key a line."""
        printer.text(f"{type(self).__name__}(")
        printer.pretty(dict(self))
        printer.text(")")

    def _extra(self) -> Mapping[str, Any]:
        return getattr(self, "extra", None) or {}

    def _holds_nothing(self) -> bool:
        return not self._extra() and all(getattr(self, a) is None for a in _attributes(type(self)).values())

    # -- the JSON boundary ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data under its stored names, nested records included."""
        return {key: _plain(value) for key, value in self.items()}

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record from its stored form (``to_dict``'s, or an older parakit's): keys by their
        stored names, nested records read by ``READERS``, a key missing left at its default.

        Raises:
            TypeError: ``data`` is not a mapping, or holds a key this record does not know and
                it has no ``extra`` to keep it in (the store then skips the file as damaged).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a {cls.__name__} is read from a JSON object, not {type(data).__name__}")
        known = _attributes(cls)
        values = {known[k]: _read(cls.READERS.get(known[k]), v) for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown and "extra" not in {f.name for f in dataclasses.fields(cls)}:
            raise TypeError(f"unknown field(s) {', '.join(map(repr, unknown))} for a {cls.__name__}")
        return cls(**values, **({"extra": unknown} if unknown else {}))


@functools.cache
def _attributes(cls: type) -> dict[str, str]:
    """Stored name -> attribute, in the fields' order; ``extra`` is no key of its own."""
    return {cls.STORED_AS.get(f.name, f.name): f.name for f in dataclasses.fields(cls) if f.name != "extra"}


def _read(reader: Callable[[Any], Any] | None, value: Any) -> Any:
    return reader(value) if reader is not None and value is not None else value


def _plain(value: Any) -> Any:
    """JSON data of a value: records by their own ``to_dict``, other dataclasses (a RankInfo)
    field by field, containers copied so the dict shares nothing with the frozen record."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
