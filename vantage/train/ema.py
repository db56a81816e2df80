"""Exponential moving averages of the weights: EDM half-life, fixed decay, EDM2 power function.

After each optimizer step ``theta_ema <- beta * theta_ema + (1 - beta) * theta``; buffers are
copied. ``beta`` per step:

* ``halflife`` (EDM, Karras et al. 2022): ``beta = 0.5 ** (batch / h)`` where ``h`` is the
  half-life in images, optionally capped by ``rampup * images_seen_before_this_step`` (so the
  very first update copies the weights).
* ``decay``: a fixed ``beta``.
* ``power`` (EDM2, Karras et al. 2024): the average over the whole run weighted by a power
  function ``w(tau) ~ tau ** gamma``. With ``t`` = steps done after this update,
  ``beta_t = (1 - 1 / t) ** (gamma + 1)``; unrolled, step ``tau``'s weights get exactly
  ``(tau**(gamma+1) - (tau-1)**(gamma+1)) / t**(gamma+1)``. ``gamma`` follows from the relative
  standard deviation sigma_rel of the profile by solving
  ``sigma_rel**2 = (gamma+1) / ((gamma+2)**2 (gamma+3))`` (:func:`power_gamma`).
* ``none``: ``beta = 0`` (the average is the current weights).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

__all__ = ["EMA", "power_gamma", "power_std", "halflife_beta", "power_beta"]


def power_std(gamma: float) -> float:
    """Relative standard deviation sigma_rel of the power-function EMA profile with exponent ``gamma``."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def power_gamma(std: float) -> float:
    """The exponent ``gamma`` whose profile has relative width ``std`` (the largest real root)."""
    s = std * std
    # s (g+2)^2 (g+3) - (g+1) = 0  ->  s g^3 + 7 s g^2 + (16 s - 1) g + (12 s - 1) = 0
    roots = np.roots([s, 7 * s, 16 * s - 1, 12 * s - 1])
    real = [float(r.real) for r in roots if abs(r.imag) < 1e-9 and r.real > -1]
    if not real:
        raise ValueError(f"no power-function EMA has sigma_rel={std} (valid: 0 < sigma_rel < 0.30)")
    return max(real)


def halflife_beta(batch: int, halflife_images: float, images_before: int, rampup: float | None) -> float:
    """EDM's per-step decay for a half-life in images, with the optional ramp-up."""
    h = halflife_images
    if rampup is not None:
        h = min(h, images_before * rampup)
    return 0.5 ** (batch / max(h, 1e-8))


def power_beta(gamma: float, steps_done: int) -> float:
    """EDM2's per-step decay after ``steps_done >= 1`` updates."""
    return (1.0 - 1.0 / steps_done) ** (gamma + 1.0)


class EMA:
    """An averaged copy of a module (``self.module``, in eval mode, no gradients).

    Args:
        model: the module to average (copied now; the copy is what checkpoints save as weights).
        mode: ``"halflife"``, ``"decay"``, ``"power"`` or ``"none"`` (see the module docstring).
        batch: global batch size (images per step).
        halflife_images, rampup: ``"halflife"`` parameters.
        decay: ``"decay"`` parameter.
        std: ``"power"`` parameter (sigma_rel).
    """

    def __init__(self, model: nn.Module, mode: str = "halflife", *, batch: int = 1, halflife_images: float = 500e3,
                 rampup: float | None = 0.05, decay: float = 0.9999, std: float = 0.05) -> None:
        if mode not in ("halflife", "decay", "power", "none"):
            raise ValueError(f"unknown EMA mode '{mode}'")
        self.mode, self.batch, self.halflife_images, self.rampup = mode, int(batch), float(halflife_images), rampup
        self.decay, self.std = float(decay), float(std)
        self.gamma = power_gamma(std) if mode == "power" else None
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    def beta(self, steps_done: int) -> float:
        """Decay used by the update that completes step ``steps_done`` (1-based)."""
        if self.mode == "none":
            return 0.0
        if self.mode == "decay":
            return self.decay
        if self.mode == "power":
            return power_beta(self.gamma, steps_done)
        return halflife_beta(self.batch, self.halflife_images, (steps_done - 1) * self.batch, self.rampup)

    @torch.no_grad()
    def update(self, model: nn.Module, steps_done: int) -> float:
        """Average ``model``'s current weights in; returns the ``beta`` used."""
        beta = self.beta(steps_done)
        src = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            p.lerp_(src[name].detach().to(p.dtype), 1.0 - beta)
        src_b = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(src_b[name])
        self.updates += 1
        return beta

    def state_dict(self) -> dict:
        """Tensors and primitives only (loadable with ``torch.load(weights_only=True)``)."""
        return {"module": self.module.state_dict(), "mode": self.mode, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"the saved EMA is of mode '{state.get('mode')}', this run uses '{self.mode}'")
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
