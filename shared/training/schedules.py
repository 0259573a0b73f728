"""Learning-rate schedules shared by every Lightning module."""

from __future__ import annotations

import math


def warmup_cosine(total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0):
    """LR multiplier per step: linear 0 -> 1 over the warm-up, then cosine 1 -> min_lr_ratio."""
    total = max(int(total_steps), 1)
    warmup = min(max(int(warmup_steps), 0), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
