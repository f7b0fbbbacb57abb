"""Finding the first step whose loss is NaN or infinite, while the run goes, without a
host-device sync per step: the losses are checked in batches every ``CHECK_EVERY`` steps, and
on a GPU each batch's answer is read at the next check, when its copy has long finished."""

from __future__ import annotations

import math

import torch

CHECK_EVERY = 8  # steps between checks (and between the ranks' looks at a stop agreement)


def is_check_step(steps_done: int) -> bool:
    return steps_done % CHECK_EVERY == 0


class DivergenceWatch:
    """Watches this rank's losses; ``first_step`` is the first non-finite one it has seen."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.first_step: int | None = None
        self._checked = 0  # losses before this index have been looked at
        self._pending: tuple[list[int], torch.Tensor, torch.cuda.Event] | None = None

    def check(self, losses: list[torch.Tensor | None]) -> int | None:
        """Look at the losses not seen yet (a list of detached 0-d tensors, None for steps where
        this rank computes none). Returns the first diverged step known so far, or None."""
        new = [(i, l) for i, l in enumerate(losses[self._checked:], self._checked) if l is not None]
        self._checked = len(losses)
        if self.first_step is not None:
            return self.first_step
        if not self.cuda:
            # On a CPU the value is there already: .item() is a plain read, no sync.
            self.first_step = next((i for i, l in new if not math.isfinite(l.item())), None)
            return self.first_step
        self._read_pending()
        if new and self.first_step is None:
            bad = ~torch.isfinite(torch.stack([l.float() for _, l in new]))
            host = torch.empty(bad.shape, dtype=torch.bool, pin_memory=True)
            host.copy_(bad, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self._pending = ([i for i, _ in new], host, done)
        return self.first_step

    def _read_pending(self) -> None:
        if self._pending is None:
            return
        steps, host, done = self._pending
        self._pending = None
        done.synchronize()  # note: waits for the copy queued a check ago, long finished by now
        self.first_step = next((s for s, bad in zip(steps, host.tolist()) if bad), None)
