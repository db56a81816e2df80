"""Training losses and the noise draws that feed them, in σ-space.

Every loss returns a **per-sample** loss ``(B,)``: the squared error is averaged over the
non-batch dimensions of that sample, then weighted. Reduce it (``.mean()``) in the method; keeping
it per sample lets a method mask samples, log per-σ statistics, or weight views.

A method's ``loss(batch)`` is then a few lines, e.g. a discrete ε-model (ViewFusion)::

    tr = vp_training_inputs(x0, schedule, noise_cond="gamma", generator=g)
    eps_hat = net(tr.x_in, tr.noise_input, cond)
    return {"loss": eps_mse_loss(eps_hat, tr.target).mean()}

and an EDM2 model (VIVID)::

    return {"loss": edm2_training_loss(denoiser, x0, cond, P_mean=-0.8, P_std=1.6, generator=g).mean()}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from vantage.diffusion.denoisers import append_dims, broadcast_sigma
from vantage.diffusion.schedules import CosineLogSNR, DiscreteSchedule, sample_lognormal_sigma

__all__ = [
    "per_sample_mse",
    "eps_mse_loss",
    "edm_weight",
    "edm_loss",
    "edm2_loss",
    "min_snr_weight",
    "add_noise",
    "VPTrainingInputs",
    "vp_training_inputs",
    "edm_training_loss",
    "edm2_training_loss",
]


def per_sample_mse(a: Tensor, b: Tensor) -> Tensor:
    """``mean((a − b)²)`` over all but the first dimension: ``(B, ...)`` → ``(B,)``."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 1:
        raise ValueError("expected tensors with a batch dimension (B, ...)")
    return (a - b).square().reshape(a.shape[0], -1).mean(dim=1)


def _weighted(loss: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return loss
    w = torch.as_tensor(weight, dtype=loss.dtype, device=loss.device)
    if w.numel() not in (1, loss.numel()):
        raise ValueError(f"weight must be a number or (B,) with B = {loss.numel()}, got shape {tuple(w.shape)}")
    return loss * w.reshape(-1)


def eps_mse_loss(eps_hat: Tensor, eps: Tensor, weight: Tensor | None = None) -> Tensor:
    """The seeds' ε-prediction objective, Ho et al. 2020 Eq. 14 ("L_simple"):
    ``mean ‖ε̂ − ε‖²`` per sample, times an optional per-sample ``weight`` (e.g.
    :func:`min_snr_weight`). ``(B, ...)`` → ``(B,)``.

    Also serves v- and x0-prediction (pass the prediction and its target). Port quirk we do
    *not* reproduce: a 3DiM port used the unsquared global norm ``‖ε̂ − ε‖`` over the whole batch,
    which changes the gradient scale with batch size and weights samples unequally; the 3DiM
    paper's objective is the squared error used here.
    """
    return _weighted(per_sample_mse(eps_hat, eps), weight)


def edm_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM loss weight ``λ(σ) = (σ² + σ_d²)/(σ·σ_d)²`` (Karras et al. 2022, Table 1), = 1/c_out²."""
    return (sigma * sigma + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(denoised: Tensor, x0: Tensor, sigma: Tensor | float, sigma_data: float = 0.5) -> Tensor:
    """EDM objective (Karras et al. 2022, Eq. 8 with Table 1's λ): ``λ(σ)·mean‖D(x_σ; σ) − x_0‖²``
    per sample, ``(B,)``. ``sigma`` is ``(B,)`` (or broadcastable, see ``broadcast_sigma``)."""
    s = broadcast_sigma(sigma, x0)
    return edm_weight(s, sigma_data).to(x0.dtype) * per_sample_mse(denoised, x0)


def edm2_loss(
    denoised: Tensor, x0: Tensor, sigma: Tensor | float, logvar: Tensor, sigma_data: float = 0.5
) -> Tensor:
    """EDM2 uncertainty-weighted objective (Karras et al. 2024, Eq. 21 of arXiv 2312.02696; after
    Kendall & Gal 2017): ``λ(σ)/e^u · mean‖D − x_0‖² + u`` per sample, with ``u`` the learned
    log-variance (``(B,)`` or ``(B, 1, …, 1)``). Equal to EDM2's elementwise
    ``λ/e^u·(D − y)² + u`` averaged over a sample's elements. ``(B,)``."""
    s = broadcast_sigma(sigma, x0)
    u = logvar.reshape(-1)
    if u.numel() != x0.shape[0]:
        raise ValueError(f"logvar must hold one value per sample (B = {x0.shape[0]}), got shape {tuple(logvar.shape)}")
    return edm_weight(s, sigma_data).to(x0.dtype) / u.exp() * per_sample_mse(denoised, x0) + u


def min_snr_weight(
    sigma: Tensor, gamma: float = 5.0, prediction: Literal["eps", "x0", "v"] = "eps"
) -> Tensor:
    """Min-SNR-γ weight (Hang et al. 2023, Eq. 9-11), ``SNR = 1/σ²``, for the loss on the given
    prediction target:

    * ``"eps"`` (default; what the seeds train): ``min(SNR, γ)/SNR = min(1, γ·σ²)``;
    * ``"x0"``: ``min(SNR, γ)``;
    * ``"v"``: ``min(SNR, γ)/(SNR + 1)``.

    Multiplies :func:`eps_mse_loss` (``weight=``). ``(B,)`` → ``(B,)``.
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    s2 = sigma * sigma
    if prediction == "eps":
        return (gamma * s2).clamp(max=1.0)
    if prediction == "x0":
        return (1 / s2).clamp(max=gamma)
    if prediction == "v":
        return s2 * (1 / s2).clamp(max=gamma) / (1 + s2)
    raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {prediction!r}")


def add_noise(
    x0: Tensor, sigma: Tensor | float, noise: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``x_σ = x_0 + σ·ε``. Draws ``ε ~ N(0, I)`` with ``generator`` (on ``x0``'s device) unless
    ``noise`` is given. Returns ``(x_sigma, noise)``, both ``(B, ...)``."""
    s = broadcast_sigma(sigma, x0)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(x0.shape)}")
    return x0 + append_dims(s, x0.ndim).to(x0.dtype) * noise, noise


@dataclass
class VPTrainingInputs:
    """What a VP (DDPM-style) network is trained on; see :func:`vp_training_inputs`.

    x_in: ``(B, ...)`` network input ``sqrt(ᾱ)·x_0 + sqrt(1 − ᾱ)·ε``.
    noise_input: ``(B,)`` float noise conditioning (t, γ, logSNR or σ, per ``noise_cond``).
    target: ``(B, ...)`` regression target (ε, v or x_0).
    noise: ``(B, ...)`` the ε drawn.
    sigma: ``(B,)`` float32, ``σ = sqrt((1 − ᾱ)/ᾱ)`` (for weights such as min-SNR).
    alpha_bar: ``(B,)`` float32.
    t: ``(B,)`` the time drawn (int64 for discrete schedules, float in [0, 1) for CosineLogSNR).
    """

    x_in: Tensor
    noise_input: Tensor
    target: Tensor
    noise: Tensor
    sigma: Tensor
    alpha_bar: Tensor
    t: Tensor


def vp_training_inputs(
    x0: Tensor, schedule: DiscreteSchedule | CosineLogSNR, *,
    noise_cond: Literal["t", "gamma", "logsnr", "sigma"] = "t", prediction: Literal["eps", "v", "x0"] = "eps",
    generator: torch.Generator | None = None, noise: Tensor | None = None,
) -> VPTrainingInputs:
    """Draw a noise level and noise for ``x0`` ``(B, ...)`` and build a VP model's training pair.

    Noise level (drawn first, then ε, with the same ``generator``):

    * :class:`DiscreteSchedule`, ``noise_cond="t"``: ``t ~ U{0, …, T−1}``, ``ᾱ = ᾱ_t``, input ``t``
      (Ho et al. 2020, Algorithm 1);
    * :class:`DiscreteSchedule`, ``noise_cond="gamma"``: SR3's continuous ``γ`` between
      ``ᾱ_{t−1}`` and ``ᾱ_t`` (Saharia et al. 2021; ViewFusion), input ``γ``;
    * :class:`CosineLogSNR`: ``t ~ U[0, 1)``, ``λ = logSNR(t)``, ``ᾱ = sigmoid(λ)``, input ``λ``
      (``"logsnr"``, 3DiM), ``t``, ``γ`` or ``σ``.

    ``noise_cond="logsnr"``/``"sigma"`` on a discrete schedule use ``ᾱ_t`` of an integer draw.
    Targets: ``"eps"`` → ε; ``"v"`` → ``sqrt(ᾱ)·ε − sqrt(1 − ᾱ)·x_0`` (Salimans & Ho 2022);
    ``"x0"`` → ``x_0``. Arithmetic in float64 where the device allows, results in ``x0.dtype``.
    """
    if x0.ndim < 1:
        raise ValueError("x0 must have shape (B, ...)")
    B, dev = x0.shape[0], x0.device
    if isinstance(schedule, DiscreteSchedule):
        if noise_cond == "gamma":
            alpha_bar, t = schedule.sample_sr3_gamma(B, generator, dev)
            alpha_bar = alpha_bar.double()
            noise_input = alpha_bar
        elif noise_cond in ("t", "logsnr", "sigma"):
            t = schedule.sample_timesteps(B, generator, dev)
            alpha_bar = schedule.alphas_cumprod.to(dev)[t]
            noise_input = t.double()
        else:
            raise ValueError(f"noise_cond must be 't', 'gamma', 'logsnr' or 'sigma', got {noise_cond!r}")
    elif isinstance(schedule, CosineLogSNR):
        if noise_cond not in ("t", "gamma", "logsnr", "sigma"):
            raise ValueError(f"noise_cond must be 't', 'gamma', 'logsnr' or 'sigma', got {noise_cond!r}")
        t = schedule.sample_t(B, generator, dev)
        lam = schedule.logsnr(t.double())
        alpha_bar = torch.sigmoid(lam)
        noise_input = t.double() if noise_cond == "t" else alpha_bar
    else:
        raise TypeError(f"schedule must be a DiscreteSchedule or CosineLogSNR, got {type(schedule).__name__}")
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    if noise_cond == "logsnr":
        noise_input = alpha_bar.log() - torch.log1p(-alpha_bar)
    elif noise_cond == "sigma":
        noise_input = sigma
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(x0.shape)}")
    a = append_dims(alpha_bar.sqrt(), x0.ndim)
    b = append_dims((1 - alpha_bar).sqrt(), x0.ndim)
    x_in = (a * x0 + b * noise).to(x0.dtype)
    if prediction == "eps":
        target = noise
    elif prediction == "v":
        target = (a * noise - b * x0).to(x0.dtype)
    elif prediction == "x0":
        target = x0
    else:
        raise ValueError(f"prediction must be 'eps', 'v' or 'x0', got {prediction!r}")
    return VPTrainingInputs(x_in=x_in, noise_input=noise_input.float(), target=target, noise=noise,
                            sigma=sigma.float(), alpha_bar=alpha_bar.float(), t=t)


def edm_training_loss(
    denoiser: Any, x0: Tensor, cond: Any = None, *, P_mean: float = -1.2, P_std: float = 1.2,
    sigma_data: float | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """One EDM training evaluation (Karras et al. 2022, Table 1 "training"): draw
    ``ln σ ~ N(P_mean, P_std²)`` and ε, denoise ``x_0 + σ·ε``, return :func:`edm_loss` ``(B,)``.
    ``sigma_data`` defaults to ``denoiser.sigma_data`` (else 0.5)."""
    sd = sigma_data if sigma_data is not None else getattr(denoiser, "sigma_data", 0.5)
    sigma = sample_lognormal_sigma(x0.shape[0], P_mean, P_std, generator=generator, device=x0.device)
    x_sigma, _ = add_noise(x0, sigma, generator=generator)
    return edm_loss(denoiser(x_sigma, sigma, cond), x0, sigma, sd)


def edm2_training_loss(
    denoiser: Any, x0: Tensor, cond: Any = None, *, P_mean: float = -0.4, P_std: float = 1.0,
    sigma_data: float | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """One EDM2 training evaluation (Karras et al. 2024; defaults ``P_mean = −0.4``,
    ``P_std = 1.0``; VIVID uses −0.8, 1.6): like :func:`edm_training_loss` with the denoiser's
    learned log-variance (``denoiser(x, σ, cond, return_logvar=True)``) and :func:`edm2_loss`."""
    sd = sigma_data if sigma_data is not None else getattr(denoiser, "sigma_data", 0.5)
    sigma = sample_lognormal_sigma(x0.shape[0], P_mean, P_std, generator=generator, device=x0.device)
    x_sigma, _ = add_noise(x0, sigma, generator=generator)
    D, logvar = denoiser(x_sigma, sigma, cond, return_logvar=True)
    return edm2_loss(D, x0, sigma, logvar, sigma_data=sd)
