"""Guidance: wrappers that turn one or two denoisers into a guided denoiser ``D(x, sigma, cond)``.

Both wrappers return an ``nn.Module`` with the denoiser interface (``x (B, ...)``, ``sigma (B,)``,
output shaped like ``x``), so they plug into every sampler in :mod:`vantage.diffusion.samplers`
and ``.to()`` / ``.eval()`` reach the wrapped networks.

- :func:`cfg_denoiser`: classifier-free guidance (Ho & Salimans 2022). In x0 form
  ``D̃ = D_u + w·(D_c − D_u)`` (``w = 1``: conditional model alone, ``w = 0``: unconditional). The
  paper's ε form ``ε̃ = (1 + w')·ε_c − w'·ε_u`` is the same thing with ``w = 1 + w'``: in σ-space
  ``ε = (x − D)/σ`` is affine in ``D`` with weights that sum to one, so both forms give the same
  ``D̃`` (``w' = 0`` means no guidance). The "guidance scale" of diffusers / Stable Diffusion is
  the x0-form ``w``.
- :func:`guide_by_network`: guidance by a second network, ``D̃ = D_g + w·(D − D_g)``: autoguidance
  with a smaller / less-trained guide (Karras et al. 2024, "Guiding a diffusion model with a bad
  version of itself"), and VIVID's guidance network.

Both take ``interval=(sigma_lo, sigma_hi)``: guidance is applied only where
``sigma_lo <= σ <= sigma_hi`` (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval");
elsewhere the wrapper returns the main denoiser's output and skips the extra evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from vantage.diffusion.denoisers import DenoiserWrapper, broadcast_sigma

__all__ = ["CFGDenoiser", "NetworkGuidedDenoiser", "cfg_denoiser", "guide_by_network"]

DenoiserFn = Callable[[Tensor, Tensor, Any], Tensor]


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValueError(f"guidance scale must be a finite number, got {scale!r}")
    return float(scale)


def _check_interval(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval must be a pair (sigma_lo, sigma_hi), got {interval!r}") from None
    if not (0 <= lo <= hi) or math.isnan(hi):
        raise ValueError(f"interval must satisfy 0 <= sigma_lo <= sigma_hi, got ({lo}, {hi})")
    return lo, hi


def _check_out(out: Any, x: Tensor, who: str) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{who} must return an x0 estimate shaped like x {tuple(x.shape)}, got {got}")
    return out


def _concat_cond(c: Any, n: Any, batch: int, path: str = "cond") -> Any:
    """Concatenate ``cond`` and ``null_cond`` along the batch dim (cond rows first).

    Tensors must agree in ``shape[1:]``; a null tensor with batch 1 is expanded to ``batch``.
    Dicts must have the same keys, lists/tuples the same length; other leaves must be equal.
    """
    if isinstance(c, Tensor) or isinstance(n, Tensor):
        if not (isinstance(c, Tensor) and isinstance(n, Tensor)):
            raise TypeError(f"{path}: cond is {type(c).__name__} but null_cond is {type(n).__name__}")
        if c.ndim == 0 or c.shape[0] != batch:
            raise ValueError(f"{path}: cond tensor must have batch size {batch} (as x), got shape {tuple(c.shape)}")
        if n.ndim != c.ndim or n.shape[1:] != c.shape[1:] or n.shape[0] not in (1, batch):
            raise ValueError(
                f"{path}: null_cond shape {tuple(n.shape)} does not match cond shape {tuple(c.shape)}; "
                f"expected (1 or {batch}, {', '.join(map(str, c.shape[1:]))})"
            )
        return torch.cat([c, n.to(device=c.device, dtype=c.dtype).expand_as(c)])
    if isinstance(c, Mapping) and isinstance(n, Mapping):
        if set(c) != set(n):
            raise ValueError(f"{path}: cond keys {sorted(map(str, c))} != null_cond keys {sorted(map(str, n))}")
        return {k: _concat_cond(c[k], n[k], batch, f"{path}[{k!r}]") for k in c}
    if isinstance(c, list | tuple) and isinstance(n, list | tuple):
        if len(c) != len(n):
            raise ValueError(f"{path}: cond has {len(c)} entries but null_cond has {len(n)}")
        return type(c)(_concat_cond(a, b, batch, f"{path}[{i}]") for i, (a, b) in enumerate(zip(c, n)))
    if c is n or (type(c) is type(n) and c == n):
        return c
    raise TypeError(
        f"{path}: cannot batch cond ({type(c).__name__}) with null_cond ({type(n).__name__}); "
        "pass batched=False to run the conditional and unconditional calls separately"
    )


def _bdims(mask: Tensor, x: Tensor) -> Tensor:
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


class _Guided(DenoiserWrapper):
    """Shared parts: scale, interval and (from the base) the passthrough of the σ range."""

    def __init__(self, denoiser: DenoiserFn, scale: float, interval: tuple[float, float] | None) -> None:
        super().__init__(denoiser)
        self.scale = _check_scale(scale)
        self.interval = _check_interval(interval)

    def _active(self, x: Tensor, sigma: Tensor | float) -> Tensor | None:
        """``(B,)`` bool mask of samples inside the guidance interval, or None when all are."""
        if self.interval is None:
            return None
        s = broadcast_sigma(sigma, x)
        return (s >= self.interval[0]) & (s <= self.interval[1])

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Any = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 1:
            raise ValueError(f"x must be a tensor of shape (B, ...), got {type(x).__name__}")
        active = self._active(x, sigma)
        if self.scale == 1.0 or (active is not None and not bool(active.any())):
            return _check_out(self.denoiser(x, sigma, cond), x, "denoiser")
        d_main, d_other = self._pair(x, sigma, cond)
        guided = d_other + self.scale * (d_main - d_other)
        if active is not None and not bool(active.all()):
            guided = torch.where(_bdims(active, x), guided, d_main)
        return guided

    def _pair(self, x: Tensor, sigma: Tensor | float, cond: Any) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


class CFGDenoiser(_Guided):
    """Classifier-free guidance ``D̃ = D_u + w·(D_c − D_u)``; see :func:`cfg_denoiser`."""

    def __init__(
        self,
        denoiser: DenoiserFn,
        scale: float,
        null_cond: Any,
        form: Literal["x0", "eps"] = "x0",
        *,
        batched: bool = True,
        interval: tuple[float, float] | None = None,
    ) -> None:
        if form not in ("x0", "eps"):
            raise ValueError(f"form must be 'x0' (D_u + w(D_c - D_u)) or 'eps' ((1+w)eps_c - w eps_u), got {form!r}")
        scale = _check_scale(scale)
        super().__init__(denoiser, scale if form == "x0" else 1.0 + scale, interval)
        self.form = form
        self.user_scale = scale  # as given; ``self.scale`` is the equivalent x0-form weight
        if null_cond is None and self.scale != 1.0:
            raise ValueError(
                f"guidance scale {scale} ({form} form) needs a null condition: pass null_cond (the unconditional "
                "input, e.g. zeros for a dropped-out condition, or a callable cond -> null_cond)"
            )
        self.null_cond = null_cond
        self.batched = batched

    def _pair(self, x: Tensor, sigma: Tensor | float, cond: Any) -> tuple[Tensor, Tensor]:
        null = self.null_cond(cond) if callable(self.null_cond) else self.null_cond
        if not self.batched:
            d_c = _check_out(self.denoiser(x, sigma, cond), x, "denoiser (conditional call)")
            d_u = _check_out(self.denoiser(x, sigma, null), x, "denoiser (unconditional call)")
            return d_c, d_u
        B = x.shape[0]
        both = _concat_cond(cond, null, B)
        s = broadcast_sigma(sigma, x)
        out = self.denoiser(torch.cat([x, x]), torch.cat([s, s]), both)
        if not isinstance(out, Tensor) or out.shape != (2 * B, *x.shape[1:]):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"denoiser on the batched (cond, null) input must return shape {(2 * B, *x.shape[1:])}, "
                             f"got {got}")
        return out[:B], out[B:]


class NetworkGuidedDenoiser(_Guided):
    """Guidance by a second network ``D̃ = D_g + w·(D − D_g)``; see :func:`guide_by_network`."""

    def __init__(
        self, denoiser: DenoiserFn, guide_denoiser: DenoiserFn, scale: float, *,
        interval: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(denoiser, scale, interval)
        if not callable(guide_denoiser):
            raise TypeError(f"guide_denoiser must be callable D(x, sigma, cond), got {type(guide_denoiser).__name__}")
        self.guide = guide_denoiser

    def _pair(self, x: Tensor, sigma: Tensor | float, cond: Any) -> tuple[Tensor, Tensor]:
        d = _check_out(self.denoiser(x, sigma, cond), x, "denoiser")
        return d, _check_out(self.guide(x, sigma, cond), x, "guide_denoiser")


def cfg_denoiser(
    denoiser: DenoiserFn,
    scale: float,
    null_cond: Any,
    form: Literal["x0", "eps"] = "x0",
    *,
    batched: bool = True,
    interval: tuple[float, float] | None = None,
) -> CFGDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022) around ``denoiser``.

    Args:
        denoiser: ``D(x, sigma, cond) -> x0_hat``, trained with condition dropout.
        scale: ``w``. ``form="x0"``: ``D̃ = D_u + w·(D_c − D_u)`` (1 = no guidance).
            ``form="eps"``: ``ε̃ = (1 + w)·ε_c − w·ε_u`` (0 = no guidance); equal to x0 form with
            ``w_x0 = 1 + w_eps``.
        null_cond: the unconditional condition: a tensor, a dict / list / tuple of tensors (same
            structure as ``cond``; tensors with batch 1 are broadcast to ``B``), or a callable
            ``cond -> null_cond`` (e.g. masking the conditioning views). Required unless the scale
            means "no guidance".
        batched: evaluate cond and null cond as one network call on ``2B`` rows (``x``, ``sigma`` and
            every tensor in the condition concatenated along dim 0, conditional rows first). Set
            False for conditions that cannot be concatenated, or to halve peak memory.
        interval: ``(sigma_lo, sigma_hi)``; outside it only the conditional model runs.

    Returns:
        A :class:`CFGDenoiser` (an ``nn.Module`` denoiser).
    """
    return CFGDenoiser(denoiser, scale, null_cond, form, batched=batched, interval=interval)


def guide_by_network(
    denoiser: DenoiserFn,
    guide_denoiser: DenoiserFn,
    scale: float,
    *,
    interval: tuple[float, float] | None = None,
) -> NetworkGuidedDenoiser:
    """Guidance by a second network: ``D̃ = D_g + w·(D − D_g)`` (Karras et al. 2024, autoguidance;
    VIVID's guide network). ``w = 1`` returns ``D`` alone; both networks get the same ``cond``.

    Args:
        denoiser: the main model ``D``.
        guide_denoiser: the guide ``D_g`` (a weaker / smaller / earlier version of ``D``).
        scale: ``w``; typical values 1.5–3.
        interval: ``(sigma_lo, sigma_hi)``; outside it only ``D`` runs.
    """
    return NetworkGuidedDenoiser(denoiser, guide_denoiser, scale, interval=interval)
