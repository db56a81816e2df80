"""Noise schedules, all expressed in σ-space.

Convention (``docs/diffusion.md``): a noisy sample is ``x_σ = x_0 + σ·ε`` with ``ε ~ N(0, I)``.
A variance-preserving (VP) model that sees ``x_t = sqrt(ᾱ)·x_0 + sqrt(1 − ᾱ)·ε`` is the same
process rescaled: ``x_t = x_σ / sqrt(1 + σ²)`` with

* ``σ² = (1 − ᾱ) / ᾱ``, ``ᾱ = 1 / (1 + σ²)`` and ``logSNR = log(ᾱ / (1 − ᾱ)) = −2·ln σ``.

What is here:

* discrete β schedules (Ho et al. 2020 linear, Nichol & Dhariwal 2021 cosine, "scaled_linear"),
  built as diffusers builds ``linear`` / ``squaredcos_cap_v2`` / ``scaled_linear``;
* :class:`DiscreteSchedule`: ``ᾱ_t`` and ``σ_t`` tables, σ ↔ t (continuous interpolation in
  log σ, or rounding to the nearest step), diffusers' step spacings and the σ sequence a sampler
  runs on (``discrete_sigmas``), SR3's continuous-γ draw (Saharia et al. 2021);
* :class:`CosineLogSNR`: 3DiM's continuous cosine schedule in logSNR (Kingma et al. 2021 VDM,
  Salimans & Ho 2022), truncated to ``[logsnr_min, logsnr_max]``;
* σ sequences for samplers: Karras et al. 2022 (Eq. 5), exponential, polyexponential, linear;
* EDM / EDM2 log-normal σ draws for training.

Tables are kept in float64; functions that reproduce a reference's float32 arithmetic
(``karras_sigmas`` and friends, as k-diffusion computes them) say so.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BetaScheduleName",
    "Spacing",
    "linear_betas",
    "scaled_linear_betas",
    "cosine_betas",
    "make_betas",
    "alphas_cumprod_from_betas",
    "sigma_from_alpha_bar",
    "alpha_bar_from_sigma",
    "logsnr_from_sigma",
    "sigma_from_logsnr",
    "alpha_bar_from_logsnr",
    "logsnr_from_alpha_bar",
    "DiscreteSchedule",
    "CosineLogSNR",
    "spaced_timesteps",
    "discrete_sigmas",
    "karras_sigmas",
    "exponential_sigmas",
    "polyexponential_sigmas",
    "linear_sigmas",
    "sample_lognormal_sigma",
]

BetaScheduleName = Literal["linear", "scaled_linear", "cosine"]
Spacing = Literal["leading", "trailing", "linspace"]


def _check_T(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 2:
        raise ValueError(f"number of training timesteps T must be an int >= 2, got {T!r}")


def _device_of(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


# --- Discrete β schedules ----------------------------------------------------------------------


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Linear β schedule of Ho et al. 2020 (Sec. 4): ``β_t`` evenly spaced from ``beta_start``
    to ``beta_end`` inclusive. Returns ``(T,)`` float64 (diffusers ``"linear"``)."""
    _check_T(T)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"expected 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def scaled_linear_betas(T: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """``β_t`` whose square roots are evenly spaced (latent diffusion's "scaled_linear", also
    SR3's "quad"). Returns ``(T,)`` float64."""
    _check_T(T)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"expected 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021 (Eq. 17): ``ᾱ(u) = cos²((u + s)/(1 + s)·π/2)``,
    ``β_t = min(1 − ᾱ((t+1)/T) / ᾱ(t/T), max_beta)``. Equals diffusers' ``"squaredcos_cap_v2"``.
    Returns ``(T,)`` float64."""
    _check_T(T)
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def make_betas(
    name: BetaScheduleName, T: int, beta_start: float | None = None, beta_end: float | None = None
) -> Tensor:
    """β schedule by name: ``"linear"`` (defaults 1e-4..0.02), ``"scaled_linear"``
    (0.00085..0.012) or ``"cosine"`` (``beta_start``/``beta_end`` ignored, as in diffusers)."""
    if name == "linear":
        return linear_betas(T, 1e-4 if beta_start is None else beta_start, 0.02 if beta_end is None else beta_end)
    if name == "scaled_linear":
        return scaled_linear_betas(
            T, 0.00085 if beta_start is None else beta_start, 0.012 if beta_end is None else beta_end
        )
    if name in ("cosine", "squaredcos_cap_v2"):
        return cosine_betas(T)
    raise ValueError(f"unknown beta schedule {name!r}; expected 'linear', 'scaled_linear' or 'cosine'")


def alphas_cumprod_from_betas(betas: Tensor) -> Tensor:
    """``ᾱ_t = Π_{s<=t} (1 − β_s)`` (Ho et al. 2020, Eq. 4), computed in float64. ``(T,)``."""
    return torch.cumprod(1 - betas.to(torch.float64), dim=0)


# --- Conversions (elementwise; tensors or numbers in, tensors out) -----------------------------


def _t(x: Tensor | float) -> Tensor:
    return x if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.float64)


def sigma_from_alpha_bar(alpha_bar: Tensor | float) -> Tensor:
    """``σ = sqrt((1 − ᾱ)/ᾱ)``."""
    a = _t(alpha_bar)
    return ((1 - a) / a).sqrt()


def alpha_bar_from_sigma(sigma: Tensor | float) -> Tensor:
    """``ᾱ = 1 / (1 + σ²)``."""
    s = _t(sigma)
    return 1 / (1 + s * s)


def logsnr_from_sigma(sigma: Tensor | float) -> Tensor:
    """``logSNR = −2·ln σ`` (SNR = ᾱ/(1 − ᾱ) = 1/σ², Kingma et al. 2021)."""
    return -2 * _t(sigma).log()


def sigma_from_logsnr(logsnr: Tensor | float) -> Tensor:
    """``σ = exp(−logSNR / 2)``."""
    return (-0.5 * _t(logsnr)).exp()


def alpha_bar_from_logsnr(logsnr: Tensor | float) -> Tensor:
    """``ᾱ = sigmoid(logSNR)``."""
    return torch.sigmoid(_t(logsnr))


def logsnr_from_alpha_bar(alpha_bar: Tensor | float) -> Tensor:
    """``logSNR = ln ᾱ − ln(1 − ᾱ)``."""
    a = _t(alpha_bar)
    return a.log() - torch.log1p(-a)


# --- Discrete schedules ------------------------------------------------------------------------


def spaced_timesteps(T: int, n: int, spacing: Spacing = "leading", steps_offset: int = 0) -> Tensor:
    """The ``n`` integer timesteps (descending) diffusers' ``set_timesteps(n)`` picks out of ``T``.

    * ``"leading"``: ``k·(T // n) + steps_offset`` for ``k = n−1 … 0`` (DDIM paper's spacing);
    * ``"trailing"``: ``round(T − k·T/n) − 1`` for ``k = 0 … n−1`` (Lin et al. 2024, always starts
      at ``T − 1``);
    * ``"linspace"``: ``round(linspace(0, T − 1, n))`` reversed (``steps_offset`` not used, as
      in diffusers). Rounding is half-to-even, as numpy's. Returns ``(n,)`` int64.
    """
    _check_T(T)
    if not isinstance(n, int) or n < 1 or n > T:
        raise ValueError(f"number of sampling steps n must be an int in [1, T={T}], got {n!r}")
    if spacing == "leading":
        ts = np.arange(n, dtype=np.int64)[::-1] * (T // n) + steps_offset
    elif spacing == "trailing":
        ts = np.round(T - np.arange(n) * (T / n)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected 'leading', 'trailing' or 'linspace'")
    if ts.max() >= T or ts.min() < 0:
        raise ValueError(f"steps_offset={steps_offset} moves timesteps outside [0, {T}): {ts.tolist()}")
    return torch.from_numpy(ts.copy())


class DiscreteSchedule:
    """A discrete-time DDPM schedule (Ho et al. 2020) seen in σ-space.

    Holds ``T``, ``betas``, ``alphas_cumprod`` ``ᾱ_t`` and ``sigmas`` ``σ_t = sqrt((1 − ᾱ_t)/ᾱ_t)``
    (all ``(T,)`` float64, ascending in σ for t = 0 … T−1). ``t`` is 0-based as in diffusers.
    ``ᾱ`` must lie strictly inside (0, 1): a zero-terminal-SNR schedule has σ = ∞, which σ-space
    cannot hold.
    """

    def __init__(self, alphas_cumprod: Tensor, betas: Tensor | None = None) -> None:
        a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
        if a.ndim != 1 or a.numel() < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with T >= 2 entries, got shape {tuple(a.shape)}")
        if not torch.isfinite(a).all() or a.min() <= 0 or a.max() >= 1:
            raise ValueError("alphas_cumprod must lie strictly inside (0, 1) (σ = 0 or ∞ is not representable)")
        if not (a[1:] < a[:-1]).all():
            raise ValueError("alphas_cumprod must be strictly decreasing (every β_t > 0)")
        self.alphas_cumprod = a
        self.betas = betas.to(torch.float64).cpu() if betas is not None else 1 - a / torch.cat([a.new_ones(1), a[:-1]])
        self.sigmas = ((1 - a) / a).sqrt()
        self.log_sigmas = self.sigmas.log()
        self._cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    @classmethod
    def from_betas(cls, betas: Tensor) -> DiscreteSchedule:
        """Schedule from a ``(T,)`` β table."""
        b = torch.as_tensor(betas, dtype=torch.float64)
        return cls(alphas_cumprod_from_betas(b), betas=b)

    @classmethod
    def make(
        cls, name: BetaScheduleName = "linear", T: int = 1000, beta_start: float | None = None,
        beta_end: float | None = None,
    ) -> DiscreteSchedule:
        """Schedule by β-schedule name (see :func:`make_betas`)."""
        return cls.from_betas(make_betas(name, T, beta_start, beta_end))

    @property
    def T(self) -> int:
        return self.alphas_cumprod.numel()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def _log_sigmas(self, device: torch.device) -> Tensor:
        dtype = torch.float32 if device.type == "mps" else torch.float64
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = self.log_sigmas.to(device=device, dtype=dtype)
        return self._cache[key]

    def t_to_sigma(self, t: Tensor | float) -> Tensor:
        """σ at (possibly fractional) ``t ∈ [0, T−1]``, interpolating ``ln σ`` linearly between
        neighbouring steps (as k-diffusion's ``DiscreteSchedule``). Same shape as ``t``; float
        dtype of ``t`` (float32 for integer input)."""
        t = torch.as_tensor(t)
        out_dtype = t.dtype if t.is_floating_point() else torch.float32
        ls = self._log_sigmas(t.device)
        tf = t.to(ls.dtype)
        if (tf < 0).any() or (tf > self.T - 1).any() or not torch.isfinite(tf).all():
            raise ValueError(f"t must lie in [0, {self.T - 1}], got range [{tf.min().item()}, {tf.max().item()}]")
        lo = tf.floor().long().clamp(max=self.T - 2)
        w = tf - lo
        return ((1 - w) * ls[lo] + w * ls[lo + 1]).exp().to(out_dtype)

    def sigma_to_t(self, sigma: Tensor | float, quantize: bool = False) -> Tensor:
        """Inverse of :meth:`t_to_sigma`: continuous ``t`` by linear interpolation in ``ln σ``,
        clamped to ``[0, T−1]`` (σ below σ_0 gives 0, above σ_{T−1} gives T−1). With
        ``quantize=True`` the nearest step in ``ln σ`` (a float holding an integer). Same shape
        as ``sigma``; float dtype of ``sigma``."""
        sigma = torch.as_tensor(sigma)
        out_dtype = sigma.dtype if sigma.is_floating_point() else torch.float32
        ls = self._log_sigmas(sigma.device)
        x = sigma.to(ls.dtype).log()
        if quantize:
            return (x.reshape(-1, 1) - ls).abs().argmin(dim=1).reshape(sigma.shape).to(out_dtype)
        lo = (torch.searchsorted(ls, x.reshape(-1).contiguous()) - 1).clamp(0, self.T - 2).reshape(x.shape)
        w = ((x - ls[lo]) / (ls[lo + 1] - ls[lo])).clamp(0, 1)
        return (lo + w).to(out_dtype)

    def timesteps(self, n: int, spacing: Spacing = "leading", steps_offset: int = 0) -> Tensor:
        """:func:`spaced_timesteps` for this schedule's ``T``."""
        return spaced_timesteps(self.T, n, spacing, steps_offset)

    def sample_timesteps(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``t ~ U{0, …, T−1}`` (Ho et al. 2020, Algorithm 1, 0-based). ``(batch,)`` int64."""
        return torch.randint(0, self.T, (batch,), generator=generator, device=_device_of(generator, device))

    def sample_sr3_gamma(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """SR3's continuous noise level (Saharia et al. 2021, Sec. 2.4), as ViewFusion trains:
        ``t ~ U{1, …, T−1}``, then ``γ = ᾱ_{t−1} + u·(ᾱ_t − ᾱ_{t−1})``, ``u ~ U[0, 1)`` — a draw
        uniform between the two neighbouring ``ᾱ``. Draw order (``randint`` then ``rand``)
        matches the reference, so a generator seeded as its global RNG gives the same γ.
        Returns ``(gamma (batch,) float32, t (batch,) int64)``."""
        dev = _device_of(generator, device)
        t = torch.randint(1, self.T, (batch,), generator=generator, device=dev)
        u = torch.rand((batch,), generator=generator, device=dev).double()  # float32 draw, as the reference
        a = self.alphas_cumprod.to(dev)
        gamma = a[t - 1] + u * (a[t] - a[t - 1])
        return gamma.float(), t

    def __repr__(self) -> str:
        return f"DiscreteSchedule(T={self.T}, sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g})"


def discrete_sigmas(
    schedule: DiscreteSchedule, n: int, spacing: Spacing = "leading", steps_offset: int = 0,
    set_alpha_to_one: bool = True, dtype: torch.dtype = torch.float32,
) -> Tensor:
    """σ sequence ``(n + 1,)`` for a sampler over a discrete model: ``σ_{t_k}`` at the spaced
    timesteps (descending), then the final level: 0 with ``set_alpha_to_one=True`` (diffusers'
    DDIM default: the last step goes to ᾱ = 1) or ``σ_0`` otherwise (ᾱ_0, diffusers'
    ``set_alpha_to_one=False``). DDIM(η=0) (Song et al. 2021, Eq. 12) is Euler on this sequence.

    Note: diffusers' DDIM steps from ``t`` to ``t − T//n``; that equals the next entry here for
    ``"leading"`` spacing, and for the other spacings whenever ``T`` is a multiple of ``n``.
    """
    ts = schedule.timesteps(n, spacing, steps_offset)
    final = torch.zeros(1, dtype=torch.float64) if set_alpha_to_one else schedule.sigmas[:1]
    return torch.cat([schedule.sigmas[ts], final]).to(dtype)


# --- Continuous cosine schedule in logSNR (3DiM) -----------------------------------------------


class CosineLogSNR:
    """Continuous cosine schedule in logSNR for ``t ∈ [0, 1]`` (Nichol & Dhariwal 2021's cosine,
    written in logSNR as in Kingma et al. 2021 VDM / Salimans & Ho 2022), used by 3DiM:

    ``logSNR(t) = −2·ln tan(a·t + b) + 2·ln(shift)``, ``b = atan(e^{−λ_max/2})``,
    ``a = atan(e^{−λ_min/2}) − b``.

    With ``a = π/2, b = 0`` this is the plain ``−2·ln tan(π t/2)``, which runs to ±∞ at the ends.
    **Which limiting we do:** the *interval truncation* of Salimans & Ho's reference code (also
    3DiM's): t is remapped so that ``logSNR(0) = λ_max = 20`` and ``logSNR(1) = λ_min = −20``
    exactly — a smooth schedule inside ``[−20, 20]``, not a hard clip. ``shift`` (Hoogeboom et al.
    2023 "simple diffusion": ``shift = 64/resolution``) adds ``2·ln(shift)`` after truncation;
    default 1 (3DiM does not shift). In σ: ``σ(t) = tan(a·t + b) / shift``.
    """

    def __init__(self, logsnr_min: float = -20.0, logsnr_max: float = 20.0, shift: float = 1.0) -> None:
        if not logsnr_min < logsnr_max:
            raise ValueError(f"expected logsnr_min < logsnr_max, got {logsnr_min}, {logsnr_max}")
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        self.logsnr_min, self.logsnr_max, self.shift = float(logsnr_min), float(logsnr_max), float(shift)
        self._b = math.atan(math.exp(-0.5 * logsnr_max))
        self._a = math.atan(math.exp(-0.5 * logsnr_min)) - self._b

    @property
    def sigma_min(self) -> float:
        return math.tan(self._b) / self.shift

    @property
    def sigma_max(self) -> float:
        return math.tan(self._a + self._b) / self.shift

    def logsnr(self, t: Tensor | float) -> Tensor:
        """``λ(t)``, same shape as ``t``."""
        t = _t(t)
        td = t.double() if t.device.type != "mps" else t
        return (-2 * torch.tan(self._a * td + self._b).log() + 2 * math.log(self.shift)).to(t.dtype)

    def t_from_logsnr(self, logsnr: Tensor | float) -> Tensor:
        """Inverse of :meth:`logsnr` (values outside the range give t outside [0, 1])."""
        lam = _t(logsnr)
        ld = lam.double() if lam.device.type != "mps" else lam
        return ((torch.atan((-0.5 * (ld - 2 * math.log(self.shift))).exp()) - self._b) / self._a).to(lam.dtype)

    def t_to_sigma(self, t: Tensor | float) -> Tensor:
        """``σ(t) = tan(a·t + b)/shift``."""
        return sigma_from_logsnr(self.logsnr(t))

    def sigma_to_t(self, sigma: Tensor | float) -> Tensor:
        """Inverse of :meth:`t_to_sigma`."""
        return self.t_from_logsnr(logsnr_from_sigma(sigma))

    def sample_t(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``t ~ U[0, 1)``, ``(batch,)`` float32 (VDM/3DiM training draw)."""
        return torch.rand((batch,), generator=generator, device=_device_of(generator, device))

    def __repr__(self) -> str:
        return f"CosineLogSNR(logsnr_min={self.logsnr_min}, logsnr_max={self.logsnr_max}, shift={self.shift})"


# --- σ sequences for samplers and σ draws for training -----------------------------------------


def _check_range(n: int, sigma_min: float, sigma_max: float) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"number of steps n must be an int >= 1, got {n!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"expected 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def _finish(sigmas: Tensor, append_zero: bool) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if append_zero else sigmas


def karras_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, append_zero: bool = True,
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> Tensor:
    """Karras et al. 2022, Eq. 5: ``σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``,
    ``i = 0 … n−1``, then 0. Computed in ``dtype`` (float32 default, like k-diffusion's
    ``get_sigmas_karras``). Shape ``(n + 1,)`` (``(n,)`` without ``append_zero``)."""
    _check_range(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=dtype, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _finish((hi + ramp * (lo - hi)) ** rho, append_zero)


def exponential_sigmas(
    n: int, sigma_min: float, sigma_max: float, append_zero: bool = True,
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> Tensor:
    """``n`` σ evenly spaced in ``ln σ`` from σ_max to σ_min, then 0 (k-diffusion's
    ``get_sigmas_exponential``)."""
    _check_range(n, sigma_min, sigma_max)
    return _finish(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=dtype, device=device).exp(),
                   append_zero)


def polyexponential_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, append_zero: bool = True,
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> Tensor:
    """``ln σ_i = ln σ_min + r_i^ρ·(ln σ_max − ln σ_min)`` with ``r`` from 1 to 0; ``ρ = 1`` is
    :func:`exponential_sigmas`."""
    _check_range(n, sigma_min, sigma_max)
    ramp = torch.linspace(1, 0, n, dtype=dtype, device=device) ** rho
    return _finish((ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)).exp(), append_zero)


def linear_sigmas(
    n: int, sigma_min: float, sigma_max: float, append_zero: bool = True,
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> Tensor:
    """``n`` σ evenly spaced from σ_max to σ_min, then 0."""
    _check_range(n, sigma_min, sigma_max)
    return _finish(torch.linspace(sigma_max, sigma_min, n, dtype=dtype, device=device), append_zero)


def sample_lognormal_sigma(
    batch: int, P_mean: float = -1.2, P_std: float = 1.2, generator: torch.Generator | None = None,
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Training σ draw ``ln σ ~ N(P_mean, P_std²)`` (Karras et al. 2022, Table 1 "training";
    defaults are EDM's −1.2, 1.2; EDM2 uses −0.4, 1.0, VIVID −0.8, 1.6). ``(batch,)``."""
    if not P_std > 0:
        raise ValueError(f"P_std must be > 0, got {P_std}")
    z = torch.randn((batch,), generator=generator, device=_device_of(generator, device), dtype=dtype)
    return (P_mean + P_std * z).exp()
