"""Learning-rate schedules: linear warm-up, then constant, cosine or inverse-square-root decay.

All in optimizer steps; ``step`` is the 0-based index of the step about to be taken.

* warm-up: ``lr * min(1, (step + 1) / warmup_steps)`` (no zero-lr first step).
* ``cosine``: after the warm-up, ``lr * (r + (1 - r) * (1 + cos(pi * p)) / 2)`` with
  ``p = (step - warmup) / (total - warmup)`` clamped to [0, 1] and ``r = lr_min_ratio``.
* ``inv_sqrt`` (EDM2, Karras et al. 2024): ``lr / sqrt(max(step / decay_ref, 1))``.
* ``constant``: ``lr``.
"""

from __future__ import annotations

import math

from vantage.train.config import TrainConfig, TrainPlan

__all__ = ["learning_rate", "lr_at"]


def learning_rate(lr: float, step: int, *, schedule: str = "cosine", total_steps: int = 1, warmup_steps: int = 0,
                  min_ratio: float = 0.0, decay_ref_steps: int = 1) -> float:
    """Learning rate of step ``step`` (0-based) under ``schedule`` (see the module docstring)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        decay = 1.0
    elif schedule == "cosine":
        p = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        p = min(max(p, 0.0), 1.0)
        decay = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    elif schedule == "inv_sqrt":
        decay = 1.0 / math.sqrt(max(step / max(decay_ref_steps, 1), 1.0))
    else:
        raise ValueError(f"unknown lr schedule '{schedule}'")
    return lr * warm * decay


def lr_at(config: TrainConfig, plan: TrainPlan, step: int) -> float:
    """:func:`learning_rate` with the values of a config and its plan."""
    return learning_rate(config.lr, step, schedule=config.lr_schedule, total_steps=plan.total_steps,
                         warmup_steps=plan.warmup_steps, min_ratio=config.lr_min_ratio,
                         decay_ref_steps=plan.decay_ref_steps)
