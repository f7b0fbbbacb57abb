"""The small parts every config module shares: string enums that list their values in errors,
and integer checks. Standard library only."""

from __future__ import annotations

import enum
from typing import Any


class Choice(str, enum.Enum):
    """A string enum whose parse error lists the allowed values."""

    @classmethod
    def parse(cls, value: Any, what: str) -> "Choice":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"{what} must be one of {cls.allowed()} (got {value!r})") from None

    @classmethod
    def allowed(cls) -> str:
        return ", ".join(m.value for m in cls)

    def __str__(self) -> str:
        return self.value


def check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer (got {value!r})")
    if value < low:
        raise ValueError(f"{name} must be >= {low} (got {value})")
