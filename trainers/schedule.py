"""The shared schedules: linear warm-up then cosine decay, as a ``LambdaLR`` factor (saved in checkpoints)."""

from __future__ import annotations

import math
from dataclasses import dataclass


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total`` and after)."""
    progress = min(max(step / max(1, total), 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


@dataclass
class WarmupCosine:
    """Learning-rate factor of step ``s``: ``s / warmup`` during warm-up, then cosine from 1 to ``min_lr / lr``
    at ``total``. A plain-data callable, so ``LambdaLR.state_dict()`` stores its fields."""

    warmup: int
    total: int
    floor: float  # min_lr / lr

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return cosine(step - self.warmup, self.total - self.warmup, 1.0, self.floor)
