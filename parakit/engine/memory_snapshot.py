"""A run's CUDA memory snapshot (``memory_snapshot=True``): the caching allocator's history of
allocations and frees over the run's steps, with the Python stack of each, as the pickle that
pytorch.org/memory_viz opens. The bytes travel back in the rank's report, like the profiler's
traces, and the session writes them beside the run file (``records.store``).

torch records this on CUDA devices only: on a CPU nothing is recorded and ``finish`` says why.
"""

from __future__ import annotations

import os
import tempfile

import torch

NO_CUDA = "CPU: torch records memory history for the CUDA caching allocator only"

# The history keeps the last MAX_ENTRIES allocation events (a ring buffer; torch's default is
# unbounded). A small model's step makes a few hundred, so a run's steps fit; each costs a few
# KB of the engine's host memory and of the file.
MAX_ENTRIES = 100_000


class MemorySnapshot:
    """Records the CUDA allocator's history from construction (before the run's steps) until
    ``finish``, which returns the snapshot pickle's bytes."""

    def __init__(self, device: torch.device):
        self.recording = device.type == "cuda"
        if self.recording:
            # Python frames only: C++ frames ("all") are symbolised when the snapshot is taken,
            # which takes minutes on a large binary like libtorch. The history starts empty, so an
            # engine's earlier run (one interrupted before it stopped recording) is not in it.
            torch.cuda.memory._record_memory_history(
                enabled="all", context="all", stacks="python", max_entries=MAX_ENTRIES, clear_history=True)

    def finish(self) -> tuple[bytes | None, str | None]:
        """Stop recording; the snapshot as bytes, or None and why there is none."""
        if not self.recording:
            return None, NO_CUDA
        self.recording = False
        try:
            with tempfile.TemporaryDirectory(prefix="parakit-memory-") as folder:
                path = os.path.join(folder, "snapshot.pickle")
                torch.cuda.memory._dump_snapshot(path)
                with open(path, "rb") as f:
                    return f.read(), None
        except Exception as e:  # noqa: BLE001 - a diagnostic that failed must not lose the run's report
            return None, f"the memory snapshot could not be taken: {type(e).__name__}: {e}"
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)  # stops; the history is dropped
