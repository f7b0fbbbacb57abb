"""The fault lever (``fault="kill:RANK@STEP"``, config/recovery.py): a rank's engine ends by
SIGKILL at a chosen step, as one lost to the OOM killer or a dead host would, mid-run. Real,
not a mock: the process is gone, its peers' collectives break, the session sees a dead engine."""

from __future__ import annotations

import os
import signal


def kill_if_asked(fault, rank: int, global_step: int) -> None:
    """End this engine now if ``fault`` names this rank and ``global_step``."""
    if fault is not None and fault.rank == rank and fault.step == global_step:
        os.kill(os.getpid(), signal.SIGKILL)
