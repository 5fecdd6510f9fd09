"""Learning-rate schedule: linear warm-up, then cosine decay, stepped once per training step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Return the learning-rate multiplier at ``step`` (0-based).

    The multiplier rises linearly from 1 / warmup_steps to 1 over the first
    ``warmup_steps`` steps, then follows half a cosine from 1 down to ``min_ratio``
    at ``total_steps``. Steps past ``total_steps`` keep ``min_ratio``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LRScheduler):
    """Per-step warm-up and cosine decay from each group's base learning rate.

    ``min_lr`` is the absolute learning rate at the end of the decay. The state
    (``last_epoch``, which counts steps here) is saved by ``state_dict``, so a
    resumed run continues at the same learning rate.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int,
        min_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"warmup_steps must lie in [0, total_steps={total_steps}], got {warmup_steps}"
            )
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """Return the learning rate of every parameter group at the current step."""
        lrs = []
        for base_lr in self.base_lrs:
            min_ratio = min(1.0, self.min_lr / base_lr) if base_lr > 0 else 0.0
            factor = warmup_cosine_factor(
                self.last_epoch, self.total_steps, self.warmup_steps, min_ratio
            )
            lrs.append(base_lr * factor)
        return lrs
