"""Widget callbacks whose errors are seen: Jupyter sends an exception raised in an ipywidgets
callback to the kernel's log, which nobody reads, so a panel's callbacks write theirs under it."""

from __future__ import annotations

import functools
import traceback
from typing import Any


def reported(method):
    """A widget callback whose errors go to its object's ``log`` (an ``ipywidgets.Output``), not
    the kernel's unseen log."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:  # noqa: BLE001 - shown to the user, whatever it is
            self.log.append_stderr(traceback.format_exc())
            return None

    return wrapper
