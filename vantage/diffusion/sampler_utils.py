"""Shared pieces of the samplers: validation, the denoiser call, churn, ancestral step sizes, LMS
coefficients and an NFE counter. Public names are re-exported by :mod:`vantage.diffusion.samplers`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vantage.diffusion.noise import GeneratorLike, check_generator, randn_like

__all__ = [
    "Callback",
    "CountingDenoiser",
    "DenoiserFn",
    "SigmasLike",
    "ancestral_sigmas",
    "check_sigmas",
    "lms_coefficients",
]

DenoiserFn = Callable[[Tensor, Tensor, Any], Tensor]
Callback = Callable[[dict[str, Any]], None]
SigmasLike = Tensor | Sequence[float] | np.ndarray


class CountingDenoiser:
    """Wraps a denoiser and counts its network function evaluations.

    Attributes:
        calls: number of calls (NFE for one batch).
        samples: total number of rows evaluated (sum of batch sizes over the calls).
    """

    def __init__(self, denoiser: DenoiserFn) -> None:
        self.denoiser = denoiser
        self.calls = 0
        self.samples = 0

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        self.calls += 1
        self.samples += int(x.shape[0])
        return self.denoiser(x, sigma, cond)

    def reset(self) -> None:
        self.calls = 0
        self.samples = 0


# --------------------------------------------------------------------------- validation / helpers
def check_sigmas(sigmas: SigmasLike) -> list[float]:
    """Validate a σ schedule and return it as Python floats.

    Expected: a 1-D sequence of at least 2 finite values, ``sigmas[0] > 0``, strictly decreasing,
    last value exactly 0 (e.g. ``karras_sigmas(...)`` with its trailing zero).
    """
    t = torch.as_tensor(np.asarray(sigmas) if not isinstance(sigmas, Tensor) else sigmas.detach())
    if t.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D sequence of noise levels, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("sigmas is empty; expected a 1-D decreasing sequence ending with 0, e.g. [80.0, ..., 0.0]")
    if t.numel() < 2:
        raise ValueError(f"sigmas needs at least 2 values (one step), e.g. [sigma_max, 0.0]; got {t.tolist()}")
    vals = [float(v) for v in t.double().tolist()]
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"sigmas must be finite, got {vals}")
    if vals[0] <= 0:
        raise ValueError(f"sigmas[0] must be > 0 (the starting noise level), got {vals[0]}")
    if vals[-1] != 0:
        raise ValueError(
            f"sigmas must end with 0 so that the last step returns a clean sample; got last value {vals[-1]}. "
            "Append a zero, e.g. torch.cat([sigmas, sigmas.new_zeros(1)])"
        )
    bad = [i for i in range(len(vals) - 1) if not vals[i + 1] < vals[i]]
    if bad:
        i = bad[0]
        raise ValueError(
            f"sigmas must be strictly decreasing; sigmas[{i}] = {vals[i]} is followed by "
            f"sigmas[{i + 1}] = {vals[i + 1]}"
        )
    return vals


def _prepare(x: Tensor, sigmas: SigmasLike, generator: GeneratorLike) -> list[float]:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor (B, ...), got {type(x).__name__}")
    if x.ndim < 1 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor (B, ...), got dtype {x.dtype} shape {tuple(x.shape)}")
    check_generator(generator, x.shape[0])
    return check_sigmas(sigmas)


def _denoise(denoiser: DenoiserFn, x: Tensor, sigma: float, cond: Any) -> Tensor:
    """Call ``denoiser(x, sigma * ones(B), cond)`` and check the output shape."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = denoiser(x, torch.full((x.shape[0],), sigma, dtype=dtype, device=x.device), cond)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"denoiser must return an x0 estimate shaped like x {tuple(x.shape)}, got {got}")
    return out


def _info(i: int, x: Tensor, sigma: float, sigma_hat: float, sigma_next: float, denoised: Tensor) -> dict[str, Any]:
    return {"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma_hat, "sigma_next": sigma_next, "denoised": denoised}


def _steps(n: int, progress: bool, name: str) -> Sequence[int] | Any:
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=name, leave=False)


def _check_churn(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    if s_churn < 0 or s_noise < 0:
        raise ValueError(f"s_churn and s_noise must be >= 0, got s_churn={s_churn}, s_noise={s_noise}")
    if s_tmin > s_tmax:
        raise ValueError(f"s_tmin must be <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")


def _churn(
    x: Tensor, sigma: float, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float, gen: Any
) -> tuple[Tensor, float]:
    """EDM Algorithm 2, lines 4-6: raise σ to σ̂ = σ(1+γ) by adding fresh noise (γ = 0: no-op, no draw)."""
    gamma = min(s_churn / n_steps, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (gamma + 1.0)
    return x + randn_like(x, gen) * (s_noise * math.sqrt(sigma_hat**2 - sigma**2)), sigma_hat


def ancestral_sigmas(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step σ → σ' into a deterministic step to σ_down plus fresh noise of std σ_up.

    ``σ_up = min(σ', η·σ'·sqrt(σ² − σ'²)/σ)``, ``σ_down = sqrt(σ'² − σ_up²)``. This is DDIM's
    ``σ_t(η)`` (Song et al. 2021, Eq. 16) in σ-space: dividing Eq. 12 by ``sqrt(ᾱ_{t-1})`` with
    ``ᾱ = 1/(1+σ²)`` gives ``x' = x̂0 + sqrt(σ'² − s²)·ε̂ + s·z`` with ``s = σ_t(η)/sqrt(ᾱ_{t-1})
    = η·σ'·sqrt(σ² − σ'²)/σ``; the ᾱ's cancel. η = 1 is the DDPM posterior variance (Ho et al. 2020).
    """
    if eta == 0 or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(max(sigma**2 - sigma_next**2, 0.0)) / sigma)
    return math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0)), sigma_up


def lms_coefficients(sigmas: Sequence[float], i: int, order: int) -> list[float]:
    """Adams–Bashforth coefficients for variable steps in σ: ``c_j = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ``.

    ``ℓ_j`` is the Lagrange basis polynomial on the nodes ``σ_i, σ_{i−1}, …, σ_{i−order+1}`` that is 1
    at ``σ_{i−j}``. The integrand has degree ``order − 1``, so Gauss–Legendre with ``order`` points is
    exact (closed form up to rounding).
    """
    if order < 1 or order - 1 > i:
        raise ValueError(f"order must be in [1, i+1] = [1, {i + 1}], got {order}")
    a, b = sigmas[i], sigmas[i + 1]
    nodes, weights = np.polynomial.legendre.leggauss(order)
    tau = 0.5 * (b - a) * nodes + 0.5 * (a + b)
    coeffs = []
    for j in range(order):
        ell = np.ones_like(tau)
        for k in range(order):
            if k != j:
                ell *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        coeffs.append(float(0.5 * (b - a) * np.dot(weights, ell)))
    return coeffs
