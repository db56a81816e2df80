"""Samplers in σ-space: plain functions over a denoiser ``D(x, sigma, cond) -> x0_hat``.

Convention (see ``docs/diffusion.md``): ``x_σ = x_0 + σ·ε``. ``x`` is the initial noisy sample
``(B, ...)``, already scaled by ``sigmas[0]`` (e.g. ``randn(shape, gens) * sigmas[0]``), and
``sigmas`` is a 1-D strictly decreasing sequence ending with 0. Every sampler has the signature::

    sample_<name>(denoiser, x, sigmas, cond=None, *, generator=None, callback=None,
                  progress=False, **options) -> Tensor   # (B, ...) sample at σ = 0

- The denoiser is always called as ``denoiser(x, sigma, cond)`` with a ``(B,)`` sigma tensor
  (float32, or float64 when ``x`` is float64) and must return a tensor shaped like ``x``.
- ``generator``: ``None``, one ``torch.Generator`` or a list of ``B`` generators (one per sample,
  which makes each sample independent of the batch size; see :mod:`vantage.diffusion.noise`).
- ``callback(info)`` runs once per step after the step's first denoiser call, with ``info`` =
  ``{"i", "x", "sigma", "sigma_hat", "sigma_next", "denoised"}``: ``x`` is the point where the
  denoiser was evaluated (after churn), ``sigma``/``sigma_next`` are ``sigmas[i]``/``sigmas[i+1]``
  as Python floats, ``sigma_hat`` the (churned) noise level used, ``denoised`` the x0 estimate the
  step uses (after clipping, for DDIM/DDPM with ``clip_denoised``).
- ``progress=True`` shows a tqdm bar. Sampling runs under ``torch.no_grad()``.

A discrete DDPM model wrapped into σ-space (``σ_t = sqrt((1-ᾱ_t)/ᾱ_t)``, input scaled by
``1/sqrt(1+σ²)``) needs no special sampler: DDIM(η) is :func:`sample_euler_ancestral` with that η
(η=0: Euler; Song et al. 2021, Eq. 12/16 rewritten in σ-space, see :func:`ancestral_sigmas`), and
DDPM ancestral sampling (Ho et al. 2020) is η=1 with ε recomputed from the (clipped) x0. The three
share one code path (``_first_order``); the diffusers fixtures check it.

The step logic is our own; it follows the published algorithms cited in each docstring and
reproduces k-diffusion's and diffusers' numbers (``tests/test_samplers.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vantage.diffusion.noise import GeneratorLike, randn_like
from vantage.diffusion.sampler_utils import (
    Callback,
    CountingDenoiser,
    DenoiserFn,
    SigmasLike,
    _check_churn,
    _churn,
    _denoise,
    _info,
    _prepare,
    _steps,
    ancestral_sigmas,
    check_sigmas,
    lms_coefficients,
)

__all__ = [
    "SAMPLERS",
    "CountingDenoiser",
    "ancestral_sigmas",
    "check_sigmas",
    "get_sampler",
    "lms_coefficients",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpm_2",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_lms",
]


# --------------------------------------------------------------------------- first-order family
def _first_order(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any,
    generator: GeneratorLike,
    callback: Callback | None,
    progress: bool,
    name: str,
    *,
    eta: float = 0.0,
    s_noise: float = 1.0,
    churn: tuple[float, float, float] | None = None,
    clip_denoised: float | None = None,
    eps_from_clipped: bool = False,
) -> Tensor:
    """Euler / stochastic Euler / Euler-ancestral / DDIM(η) / DDPM: one loop.

    Per step: optional churn σ → σ̂; ``D = denoiser(x, σ̂)``; ``x̂0 = clamp(D)`` if clipping;
    ``d = (x − D)/σ̂`` (or ``(x − x̂0)/σ̂`` when ``eps_from_clipped``); then
    ``x' = x̂0 + σ_down·d + σ_up·s_noise·z`` with ``(σ_down, σ_up) = ancestral_sigmas(σ̂, σ', η)``.
    Without clipping this is written as the Euler update ``x + (σ_down − σ̂)·d``.
    """
    sig = _prepare(x, sigmas, generator)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if clip_denoised is not None and not clip_denoised > 0:
        raise ValueError(f"clip_denoised must be a bound c > 0 (x0 is clamped to [-c, c]) or None, got {clip_denoised}")
    if s_noise < 0:
        raise ValueError(f"s_noise must be >= 0, got {s_noise}")
    n = len(sig) - 1
    with torch.no_grad():
        for i in _steps(n, progress, name):
            sigma, sigma_next = sig[i], sig[i + 1]
            x, sigma_hat = _churn(x, sigma, n, *churn, s_noise, generator) if churn else (x, sigma)
            denoised = _denoise(denoiser, x, sigma_hat, cond)
            x0 = denoised if clip_denoised is None else denoised.clamp(-clip_denoised, clip_denoised)
            d = (x - (x0 if eps_from_clipped else denoised)) / sigma_hat
            if callback is not None:
                callback(_info(i, x, sigma, sigma_hat, sigma_next, x0))
            sigma_down, sigma_up = ancestral_sigmas(sigma_hat, sigma_next, eta)
            x = x + d * (sigma_down - sigma_hat) if clip_denoised is None else x0 + d * sigma_down
            if sigma_up > 0 and s_noise > 0:
                x = x + randn_like(x, generator) * (s_noise * sigma_up)
    return x


def sample_euler(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any = None,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Euler's method on the probability-flow ODE ``dx/dσ = (x − D(x, σ))/σ`` (Karras et al. 2022, Alg. 1
    without the Heun correction). With ``s_churn > 0`` it is EDM's "stochastic Euler": Alg. 2 with
    churn ``γ = min(s_churn/N, √2−1)`` for σ in ``[s_tmin, s_tmax]`` and no second-order step.
    NFE = number of steps."""
    _check_churn(s_churn, s_tmin, s_tmax, s_noise)
    churn = (s_churn, s_tmin, s_tmax) if s_churn > 0 else None
    return _first_order(denoiser, x, sigmas, cond, generator, callback, progress, "euler", churn=churn, s_noise=s_noise)


def sample_euler_ancestral(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any = None,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler-ancestral: an Euler step to σ_down, then fresh noise of std σ_up (see :func:`ancestral_sigmas`).
    η = 1 is DDPM ancestral sampling (Ho et al. 2020) and general η is DDIM(η) (Song et al. 2021, Eq. 12/16)
    on a wrapped discrete model. NFE = number of steps."""
    return _first_order(
        denoiser, x, sigmas, cond, generator, callback, progress, "euler_ancestral", eta=eta, s_noise=s_noise
    )


def sample_ddim(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any = None,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 0.0,
    clip_denoised: float | None = None,
    eps_from_clipped: bool = False,
) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12 with σ_t(η) of Eq. 16) in σ-space.

    For the σ's of a discrete schedule (``σ_t = sqrt((1−ᾱ_t)/ᾱ_t)``) this is the same update as
    the discrete DDIM step, with ``x_σ = x_t·sqrt(1+σ²)``. η = 0 is exactly :func:`sample_euler`;
    η > 0 adds noise ``σ_up = η·σ'·sqrt(σ²−σ'²)/σ``.

    Args:
        eta: stochasticity η ≥ 0.
        clip_denoised: clamp the x0 estimate to ``[-c, c]`` (diffusers ``clip_sample=True`` is ``c = 1``).
        eps_from_clipped: recompute ε from the clipped x0 for the direction term (diffusers
            ``use_clipped_model_output``); by default the unclipped prediction gives ε, as in diffusers.
    """
    return _first_order(
        denoiser, x, sigmas, cond, generator, callback, progress, "ddim",
        eta=eta, clip_denoised=clip_denoised, eps_from_clipped=eps_from_clipped,
    )  # fmt: skip


def sample_ddpm(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any = None,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    clip_denoised: float | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2, posterior mean and "fixed small" variance β̃_t).

    In σ-space the posterior ``q(x_{t'} | x_t, x̂0)`` is DDIM with η = 1 and ε recomputed from the
    (clipped) x̂0: mean ``x̂0 + σ_down·(x − x̂0)/σ``, std ``σ_up = σ'·sqrt(σ²−σ'²)/σ`` (in x_t units:
    ``σ_up·sqrt(ᾱ_{t'}) = sqrt(β̃)``). ``clip_denoised=1`` is diffusers' ``clip_sample=True``.
    """
    return _first_order(
        denoiser, x, sigmas, cond, generator, callback, progress, "ddpm",
        eta=1.0, clip_denoised=clip_denoised, eps_from_clipped=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- second order
def _second_order(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any,
    generator: GeneratorLike,
    callback: Callback | None,
    progress: bool,
    name: str,
    churn: tuple[float, float, float, float],
) -> Tensor:
    sig = _prepare(x, sigmas, generator)
    _check_churn(*churn)
    n = len(sig) - 1
    with torch.no_grad():
        for i in _steps(n, progress, name):
            sigma, sigma_next = sig[i], sig[i + 1]
            x, sigma_hat = _churn(x, sigma, n, *churn, generator) if churn[0] > 0 else (x, sigma)
            denoised = _denoise(denoiser, x, sigma_hat, cond)
            d = (x - denoised) / sigma_hat
            if callback is not None:
                callback(_info(i, x, sigma, sigma_hat, sigma_next, denoised))
            dt = sigma_next - sigma_hat
            if sigma_next == 0:  # last step: a single Euler step
                x = x + d * dt
            elif name == "heun":  # trapezoidal correction at σ'
                x_2 = x + d * dt
                d_2 = (x_2 - _denoise(denoiser, x_2, sigma_next, cond)) / sigma_next
                x = x + (d + d_2) * (dt / 2)
            else:  # dpm_2: midpoint in log σ
                sigma_mid = math.exp(0.5 * (math.log(sigma_hat) + math.log(sigma_next)))
                x_2 = x + d * (sigma_mid - sigma_hat)
                d_2 = (x_2 - _denoise(denoiser, x_2, sigma_mid, cond)) / sigma_mid
                x = x + d_2 * dt
    return x


def sample_heun(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any = None,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's 2nd-order method with churn: Karras et al. 2022 (EDM), Algorithm 2 (Algorithm 1 when
    ``s_churn = 0``). The last step to σ = 0 is a single Euler step. NFE = 2N − 1 for N steps."""
    churn = (s_churn, s_tmin, s_tmax, s_noise)
    return _second_order(denoiser, x, sigmas, cond, generator, callback, progress, "heun", churn)


def sample_dpm_2(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any = None,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-2 style midpoint method (Lu et al. 2022, DPM-Solver, with r = 1/2) in σ-space: the
    derivative is re-evaluated at the geometric mean ``sqrt(σ̂σ')`` and used for the full step; churn as
    in Karras et al. 2022, Alg. 2. The last step to σ = 0 is a single Euler step. NFE = 2N − 1."""
    churn = (s_churn, s_tmin, s_tmax, s_noise)
    return _second_order(denoiser, x, sigmas, cond, generator, callback, progress, "dpm_2", churn)


# --------------------------------------------------------------------------- multistep
def sample_dpmpp_2m(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any = None,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) with α_t = 1, σ_t = σ.

    With ``λ = −log σ`` and ``h = λ' − λ``: ``x' = (σ'/σ)·x + (1 − σ'/σ)·D̃`` where
    ``D̃ = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1}``, ``r = h_{i−1}/h``; the first step and the step to
    σ = 0 use ``D̃ = D_i``. Deterministic; NFE = number of steps.
    """
    sig = _prepare(x, sigmas, generator)
    old_denoised: Tensor | None = None
    with torch.no_grad():
        for i in _steps(len(sig) - 1, progress, "dpmpp_2m"):
            sigma, sigma_next = sig[i], sig[i + 1]
            denoised = _denoise(denoiser, x, sigma, cond)
            if callback is not None:
                callback(_info(i, x, sigma, sigma, sigma_next, denoised))
            if sigma_next == 0:
                x = denoised
            else:
                h = math.log(sigma) - math.log(sigma_next)
                d_eff = denoised
                if old_denoised is not None:
                    r = (math.log(sig[i - 1]) - math.log(sigma)) / h
                    d_eff = denoised * (1 + 1 / (2 * r)) - old_denoised * (1 / (2 * r))
                x = x * (sigma_next / sigma) - d_eff * math.expm1(-h)
            old_denoised = denoised
    return x


def sample_lms(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: SigmasLike,
    cond: Any = None,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    order: int = 4,
) -> Tensor:
    """Linear multistep (Adams–Bashforth) on ``dx/dσ = (x − D)/σ`` with the last ``order`` derivatives,
    the pseudo linear multistep idea of Liu et al. 2022 (PNDM) as popularised by k-diffusion's LMS.
    Coefficients from :func:`lms_coefficients`; warm-up steps use the lower orders. NFE = number of steps."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    sig = _prepare(x, sigmas, generator)
    ds: list[Tensor] = []
    with torch.no_grad():
        for i in _steps(len(sig) - 1, progress, "lms"):
            sigma = sig[i]
            denoised = _denoise(denoiser, x, sigma, cond)
            ds.insert(0, (x - denoised) / sigma)
            del ds[order:]
            if callback is not None:
                callback(_info(i, x, sigma, sigma, sig[i + 1], denoised))
            coeffs = lms_coefficients(sig, i, len(ds))
            for c, d in zip(coeffs, ds):
                x = x + d * c
    return x


# --------------------------------------------------------------------------- registry
SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpmpp_2m": sample_dpmpp_2m,
    "lms": sample_lms,
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """Sampler function by name (case-insensitive, ``-`` and ``_`` interchangeable), e.g. ``"dpmpp-2m"``."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in SAMPLERS:
        raise KeyError(f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[key]
