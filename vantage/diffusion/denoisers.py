"""Denoiser adapters: every network becomes ``D(x, sigma, cond) -> x0_hat`` in σ-space.

``x`` is the noisy sample ``x_σ = x_0 + σ·ε`` of shape ``(B, ...)``; ``sigma`` is a ``(B,)``
tensor (a python number, a 0-dim or 1-element tensor, or a ``(B, 1, …, 1)`` tensor is accepted
and broadcast); ``cond`` is passed to the network untouched. ``D`` returns ``x̂_0`` with the
shape of ``x``. At ``σ = 0`` every adapter returns ``x`` itself (the exact denoiser there).

**Network call form.** An adapter calls ``net(x_in, noise_input, cond)`` where ``x_in`` is the
scaled noisy input ``(B, ...)`` and ``noise_input`` the ``(B,)`` noise-level conditioning. A
network with another signature is adapted with ``call=lambda net, x_in, noise_input, cond: ...``,
e.g. ViewFusion's ``unet(x, angle, gamma)``::

    call=lambda net, x_in, g, cond: net(torch.cat([cond["view"], x_in], 1), cond["angle"], g[:, None])

Adapters (all ``nn.Module`` holding ``net``, so ``.to()``, ``.eval()``, ``state_dict()`` work):

* :class:`EpsDenoiser`, :class:`VDenoiser`, :class:`X0Denoiser` for VP models (Ho et al. 2020;
  Salimans & Ho 2022 v-prediction) on a :class:`DiscreteSchedule` or :class:`CosineLogSNR`;
* :class:`EDMDenoiser` (Karras et al. 2022, Table 1) and :class:`EDM2Denoiser` (Karras et al.
  2024) with its learned log-variance head.

All expose ``sigma_min`` / ``sigma_max`` (and ``sigmas``, the ascending σ table, for discrete
schedules) so samplers can build σ sequences.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from vantage.diffusion.schedules import CosineLogSNR, DiscreteSchedule

__all__ = [
    "DenoiserWrapper",
    "NetCall",
    "NoiseCond",
    "broadcast_sigma",
    "append_dims",
    "Denoiser",
    "VPDenoiser",
    "EpsDenoiser",
    "VDenoiser",
    "X0Denoiser",
    "edm_coefficients",
    "EDMDenoiser",
    "LogVarHead",
    "EDM2Denoiser",
]

NetCall = Callable[[nn.Module, Tensor, Tensor, Any], Tensor]
NoiseCond = Literal["t", "gamma", "logsnr", "sigma", "log_sigma"] | Callable[[Tensor], Tensor]


def _default_call(net: nn.Module, x_in: Tensor, noise_input: Tensor, cond: Any) -> Tensor:
    return net(x_in, noise_input, cond)


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """``(B,)`` → ``(B, 1, …, 1)`` with ``ndim`` dims, to broadcast against ``(B, ...)``."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def broadcast_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Validate ``sigma`` against the batch of ``x`` and return it as ``(B,)``.

    Accepts a number, a tensor with one element, or a tensor of ``B`` elements whose shape is
    ``(B,)`` or ``(B, 1, …, 1)``. Dtype: float32, or float64 if ``sigma`` or ``x`` is float64.
    Raises ``ValueError`` for other shapes and for negative or NaN σ.
    """
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension: expected shape (B, ...), got a 0-dim tensor")
    B = x.shape[0]
    s = torch.as_tensor(sigma, device=x.device)
    want = torch.float64 if torch.float64 in (s.dtype, x.dtype) else torch.float32
    s = s.to(want)
    if s.numel() == 1:
        s = s.reshape(1).expand(B)
    elif s.numel() == B and s.ndim >= 1 and s.shape[0] == B and all(d == 1 for d in s.shape[1:]):
        s = s.reshape(B)
    else:
        raise ValueError(
            f"sigma must be a number, a 0-dim tensor or a (B,) tensor with B = x.shape[0] = {B}; "
            f"got shape {tuple(s.shape)} for x of shape {tuple(x.shape)}"
        )
    if torch.isnan(s).any() or (s < 0).any():
        raise ValueError(f"sigma must be >= 0 (and not NaN); got values {s.tolist()[:8]}")
    return s


class DenoiserWrapper(nn.Module):
    """Base of modules that wrap another denoiser (guidance, multi-view strategies).

    Stores it as ``self.denoiser`` (any callable ``D(x, sigma, cond)``) and passes its σ range
    (``sigma_min``, ``sigma_max``, discrete ``sigmas``) through, so samplers and σ-sequence
    builders see the wrapped model's range.
    """

    def __init__(self, denoiser, what: str = "D(x, sigma, cond)") -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable {what}, got {type(denoiser).__name__}")
        self.denoiser = denoiser

    @property
    def sigma_min(self) -> float | None:
        return getattr(self.denoiser, "sigma_min", None)

    @property
    def sigma_max(self) -> float | None:
        return getattr(self.denoiser, "sigma_max", None)

    @property
    def sigmas(self) -> Tensor | None:
        return getattr(self.denoiser, "sigmas", None)


class Denoiser(nn.Module):
    """Base class: ``forward(x, sigma, cond=None) -> x0_hat`` (``(B, ...)``).

    Subclasses implement :meth:`denoise` on a validated ``(B,)`` σ; the base class validates,
    and replaces the output by ``x`` where ``σ = 0``.
    """

    sigma_min: float
    sigma_max: float
    sigmas: Tensor | None

    def __init__(self) -> None:
        super().__init__()
        # discrete σ table (ascending) for samplers; a non-persistent buffer so .to() moves it
        self.register_buffer("sigmas", None, persistent=False)

    def denoise(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Any = None) -> Tensor:
        s = broadcast_sigma(sigma, x)
        out = self.denoise(x, s, cond)
        return _identity_at_zero(out, x, s)


def _identity_at_zero(out: Tensor, x: Tensor, s: Tensor) -> Tensor:
    zero = s == 0
    if zero.any():
        out = torch.where(append_dims(zero, x.ndim), x.to(out.dtype), out)
    return out


class VPDenoiser(Denoiser):
    """Adapter for a variance-preserving (DDPM-style) network.

    The network sees ``x_in = x_σ / sqrt(1 + σ²) = sqrt(ᾱ)·x_0 + sqrt(1 − ᾱ)·ε`` (Ho et al. 2020,
    Eq. 4 with ``ᾱ = 1/(1 + σ²)``) and a noise input chosen by ``noise_cond``:

    * ``"t"``: the schedule's time. Discrete: continuous ``t = schedule.sigma_to_t(σ)``
      (k-diffusion style), or the nearest integer step with ``quantize=True``. Continuous
      :class:`CosineLogSNR`: ``t ∈ [0, 1]``.
    * ``"gamma"``: ``ᾱ = 1/(1 + σ²)`` itself (SR3 / ViewFusion, Saharia et al. 2021);
    * ``"logsnr"``: ``−2·ln σ`` (3DiM); ``"sigma"``; ``"log_sigma"``; or a callable ``σ → input``.

    ``prediction`` says what the network outputs and how ``x̂_0`` is formed:

    * ``"eps"``: ``x̂_0 = x_σ − σ·ε̂`` (DDPM; Ho et al. 2020, Eq. 15 in σ-space);
    * ``"v"``: ``v = sqrt(ᾱ)·ε − sqrt(1 − ᾱ)·x_0`` (Salimans & Ho 2022, Sec. 4), so
      ``x̂_0 = x_σ/(1 + σ²) − σ/sqrt(1 + σ²)·v̂``;
    * ``"x0"``: ``x̂_0`` directly.

    ``clip_x0`` clamps ``x̂_0`` to ``[-1, 1]`` (``True``) or a given ``(lo, hi)``: diffusers'
    ``clip_sample`` and ViewFusion's ``clip_denoised``. Note: diffusers' DDIM keeps the
    *unclipped* ε for its direction term (``use_clipped_model_output=False``); a sampler that
    must match it clips itself and uses an unclipped adapter.

    ``sigma_min``/``sigma_max`` come from the schedule (or must be given when ``schedule`` is
    None); ``sigmas`` is the discrete σ table (float32, ascending) or None.
    """

    def __init__(
        self, net: nn.Module | Callable[..., Tensor], schedule: DiscreteSchedule | CosineLogSNR | None = None, *,
        prediction: Literal["eps", "v", "x0"] = "eps", noise_cond: NoiseCond = "t", quantize: bool = False,
        clip_x0: bool | tuple[float, float] = False, call: NetCall | None = None,
        sigma_min: float | None = None, sigma_max: float | None = None,
    ) -> None:
        super().__init__()
        if prediction not in ("eps", "v", "x0"):
            raise ValueError(f"prediction must be 'eps', 'v' or 'x0', got {prediction!r}")
        if not callable(noise_cond) and noise_cond not in ("t", "gamma", "logsnr", "sigma", "log_sigma"):
            raise ValueError(f"noise_cond must be 't', 'gamma', 'logsnr', 'sigma', 'log_sigma' or callable, "
                             f"got {noise_cond!r}")
        if noise_cond == "t" and schedule is None:
            raise ValueError("noise_cond='t' needs a schedule (DiscreteSchedule or CosineLogSNR)")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.noise_cond = noise_cond
        self.quantize = quantize
        self.clip_range: tuple[float, float] | None = (
            (-1.0, 1.0) if clip_x0 is True else (tuple(clip_x0) if clip_x0 else None)  # type: ignore[assignment]
        )
        self.call = call or _default_call
        lo = sigma_min if sigma_min is not None else getattr(schedule, "sigma_min", None)
        hi = sigma_max if sigma_max is not None else getattr(schedule, "sigma_max", None)
        if lo is None or hi is None:
            raise ValueError("give sigma_min and sigma_max when no schedule is given")
        if not 0 < lo < hi:
            raise ValueError(f"expected 0 < sigma_min < sigma_max, got {lo}, {hi}")
        self.sigma_min, self.sigma_max = float(lo), float(hi)
        self.sigmas = schedule.sigmas.float() if isinstance(schedule, DiscreteSchedule) else None

    def noise_input(self, sigma: Tensor) -> Tensor:
        """The network's noise conditioning for ``(B,)`` σ, ``(B,)``."""
        nc = self.noise_cond
        if callable(nc):
            return nc(sigma)
        if nc == "t":
            if isinstance(self.schedule, DiscreteSchedule):
                return self.schedule.sigma_to_t(sigma, quantize=self.quantize)
            return self.schedule.sigma_to_t(sigma.clamp_min(self.sigma_min)).clamp(0, 1)  # type: ignore[union-attr]
        if nc == "gamma":
            return 1 / (1 + sigma * sigma)
        if nc == "logsnr":
            return -2 * sigma.log()
        if nc == "sigma":
            return sigma
        return sigma.log()

    def denoise(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor:
        dtype = torch.promote_types(x.dtype, sigma.dtype)
        s = append_dims(sigma.to(dtype), x.ndim)
        c_in = 1 / (1 + s * s).sqrt()
        out = self.call(self.net, (x * c_in).to(x.dtype), self.noise_input(sigma), cond).to(dtype)
        if out.shape != x.shape:
            raise ValueError(f"network output has shape {tuple(out.shape)}, expected {tuple(x.shape)} (that of x)")
        if self.prediction == "eps":
            x0 = x - s * out
        elif self.prediction == "v":
            x0 = x * c_in * c_in - s * c_in * out
        else:
            x0 = out
        if self.clip_range is not None:
            x0 = x0.clamp(*self.clip_range)
        return x0


class EpsDenoiser(VPDenoiser):
    """:class:`VPDenoiser` with ``prediction="eps"`` (DDPM ε-prediction, Ho et al. 2020)."""

    def __init__(self, net: nn.Module | Callable[..., Tensor], schedule: DiscreteSchedule | CosineLogSNR | None = None,
                 **kwargs: Any) -> None:
        super().__init__(net, schedule, prediction="eps", **kwargs)


class VDenoiser(VPDenoiser):
    """:class:`VPDenoiser` with ``prediction="v"`` (Salimans & Ho 2022)."""

    def __init__(self, net: nn.Module | Callable[..., Tensor], schedule: DiscreteSchedule | CosineLogSNR | None = None,
                 **kwargs: Any) -> None:
        super().__init__(net, schedule, prediction="v", **kwargs)


class X0Denoiser(VPDenoiser):
    """:class:`VPDenoiser` with ``prediction="x0"`` (the network predicts ``x_0``)."""

    def __init__(self, net: nn.Module | Callable[..., Tensor], schedule: DiscreteSchedule | CosineLogSNR | None = None,
                 **kwargs: Any) -> None:
        super().__init__(net, schedule, prediction="x0", **kwargs)


def edm_coefficients(sigma: Tensor, sigma_data: float = 0.5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM preconditioning (Karras et al. 2022, Table 1), elementwise in σ:

    ``c_skip = σ_d²/(σ² + σ_d²)``, ``c_out = σ·σ_d/sqrt(σ² + σ_d²)``, ``c_in = 1/sqrt(σ² + σ_d²)``,
    ``c_noise = ln(σ)/4``. Returns ``(c_skip, c_out, c_in, c_noise)``, each shaped like ``sigma``.
    """
    sd2 = sigma_data**2
    r = (sigma * sigma + sd2).sqrt()
    return sd2 / (sigma * sigma + sd2), sigma * sigma_data / r, 1 / r, sigma.log() / 4


class EDMDenoiser(Denoiser):
    """EDM-preconditioned network (Karras et al. 2022, Eq. 7 and Table 1):
    ``D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ))``.

    ``F`` is called as ``call(net, c_in·x, c_noise (B,), cond)`` (default ``net(c_in·x, c_noise,
    cond)``). ``sigma_min``/``sigma_max`` default to EDM's 0.002/80 and are only advice for
    samplers. GeNVS (σ_d = 0.5) uses this adapter.
    """

    def __init__(
        self, net: nn.Module | Callable[..., Tensor], sigma_data: float = 0.5, *, sigma_min: float = 0.002,
        sigma_max: float = 80.0, call: NetCall | None = None,
    ) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.net = net
        self.sigma_data = float(sigma_data)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.call = call or _default_call

    def _precondition(self, x: Tensor, sigma: Tensor, cond: Any) -> tuple[Tensor, Tensor]:
        dtype = torch.promote_types(x.dtype, sigma.dtype)
        # the network is never evaluated at σ = 0 (c_noise = −∞); those rows are replaced by x
        s = sigma.to(dtype).clamp_min(torch.finfo(torch.float32).tiny)
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        F = self.call(self.net, (x * append_dims(c_in, x.ndim)).to(x.dtype), c_noise, cond).to(dtype)
        if F.shape != x.shape:
            raise ValueError(f"network output has shape {tuple(F.shape)}, expected {tuple(x.shape)} (that of x)")
        return append_dims(c_skip, x.ndim) * x + append_dims(c_out, x.ndim) * F, c_noise

    def denoise(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor:
        return self._precondition(x, sigma, cond)[0]


def _normalize_rows(w: Tensor, eps: float = 1e-4) -> Tensor:
    """Scale each row (output filter) of ``w`` to unit RMS: ``w / (eps + ‖w_i‖/sqrt(fan_in))``."""
    fan_in = w[0].numel()
    norm = torch.linalg.vector_norm(w.reshape(w.shape[0], -1), dim=1).reshape((-1,) + (1,) * (w.ndim - 1))
    return w / (eps + norm / math.sqrt(fan_in))


class LogVarHead(nn.Module):
    """EDM2's learned uncertainty ``u(σ)`` (Karras et al. 2024, Sec. 5 / Eq. 21 of the arXiv
    version): random Fourier features of ``c_noise`` followed by one magnitude-preserving linear
    layer.

    ``φ(c) = √2·cos(c·f + p)`` (``f`` random frequencies that already include the 2π, ``p``
    random phases in ``[0, 2π)``, both fixed buffers ``(C,)``), and ``u = ŵ·φ(c)`` with
    ``ŵ = w / (ε + ‖w‖/√C) / √C`` (forced weight normalisation; in training mode the stored
    ``weight`` ``(1, C)`` is also overwritten by its normalised version, as EDM2 does).

    ``forward(c_noise (B,)) -> (B,)``.
    """

    def __init__(self, channels: int = 128, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels, generator=generator))
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels, generator=generator))
        self.weight = nn.Parameter(torch.randn(1, channels, generator=generator))

    def forward(self, c_noise: Tensor) -> Tensor:
        feats = torch.cos(torch.outer(c_noise.float(), self.freqs.float()) + self.phases.float()) * math.sqrt(2)
        w = self.weight.float()
        if self.training:
            with torch.no_grad():
                self.weight.copy_(_normalize_rows(w))
        w = _normalize_rows(w) / math.sqrt(self.channels)
        return (feats @ w.t()).reshape(-1)


class EDM2Denoiser(EDMDenoiser):
    """EDM2 (Karras et al. 2024): EDM preconditioning (same ``c_skip, c_out, c_in`` and
    ``c_noise = ln(σ)/4``) plus a learned per-σ log-variance ``u(σ)`` for the uncertainty-weighted
    loss (see :func:`vantage.diffusion.losses.edm2_loss`).

    ``forward(x, sigma, cond=None, return_logvar=False)`` returns ``x̂_0`` or, with
    ``return_logvar=True``, ``(x̂_0, logvar)`` with ``logvar`` shaped ``(B, 1, …, 1)`` to broadcast
    against ``x``. ``logvar_head`` is any module ``c_noise (B,) -> (B,)``; default
    :class:`LogVarHead` with ``logvar_channels`` features. EDM2's defaults are σ_d = 0.5; VIVID
    uses this adapter.
    """

    def __init__(
        self, net: nn.Module | Callable[..., Tensor], sigma_data: float = 0.5, *, logvar_channels: int = 128,
        logvar_head: nn.Module | None = None, sigma_min: float = 0.002, sigma_max: float = 80.0,
        call: NetCall | None = None,
    ) -> None:
        super().__init__(net, sigma_data, sigma_min=sigma_min, sigma_max=sigma_max, call=call)
        self.logvar_head = logvar_head if logvar_head is not None else LogVarHead(logvar_channels)

    def forward(  # type: ignore[override]
        self, x: Tensor, sigma: Tensor | float, cond: Any = None, return_logvar: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        s = broadcast_sigma(sigma, x)
        D, c_noise = self._precondition(x, s, cond)
        D = _identity_at_zero(D, x, s)
        if not return_logvar:
            return D
        return D, append_dims(self.logvar_head(c_noise).to(D.dtype), x.ndim)
