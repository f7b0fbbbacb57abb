"""The small parts every config module shares: string enums that list their values in errors,
and integer checks. Standard library only."""

from __future__ import annotations

import enum
import math
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


def is_number(value: Any, *, low: float | None = None, above: float | None = None) -> bool:
    """The one check for a setting that is a finite real number (True/False are not numbers,
    nor are NaN and inf), at least ``low`` and more than ``above`` where they are given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (low is None or value >= low) and (above is None or value > above)
