"""Diffusion core in σ-space: schedules, denoiser adapters, losses, samplers, guidance.

Everything is expressed with x_σ = x_0 + σ·ε behind one interface, ``D(x, sigma, cond) -> x̂0``
(see ``docs/diffusion.md``). Modules:

- :mod:`~vantage.diffusion.schedules`: β tables, σ/ᾱ/logSNR conversions, discrete and continuous
  schedules, σ sequences (Karras, exponential, discrete spacings), training σ draws
- :mod:`~vantage.diffusion.denoisers`: eps/v/x0 adapters (discrete or continuous), EDM, EDM2
- :mod:`~vantage.diffusion.losses`: per-sample losses and training-input helpers
- :mod:`~vantage.diffusion.samplers`: ``sample_<name>(denoiser, x, sigmas, cond=None, *, generator,
  callback, progress, ...)`` and the ``SAMPLERS`` registry
- :mod:`~vantage.diffusion.guidance`: classifier-free guidance, guidance by a second network
- :mod:`~vantage.diffusion.noise`: per-sample random draws (one generator per sample)
"""

from vantage.diffusion.denoisers import (
    EDM2Denoiser,
    EDMDenoiser,
    EpsDenoiser,
    VDenoiser,
    VPDenoiser,
    X0Denoiser,
)
from vantage.diffusion.guidance import cfg_denoiser, guide_by_network
from vantage.diffusion.noise import per_sample_generators
from vantage.diffusion.samplers import (
    SAMPLERS,
    get_sampler,
    sample_ddim,
    sample_ddpm,
    sample_dpm_2,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lms,
)
from vantage.diffusion.schedules import (
    CosineLogSNR,
    DiscreteSchedule,
    discrete_sigmas,
    exponential_sigmas,
    karras_sigmas,
)

__all__ = [
    "EDM2Denoiser", "EDMDenoiser", "EpsDenoiser", "VDenoiser", "VPDenoiser", "X0Denoiser",
    "cfg_denoiser", "guide_by_network", "per_sample_generators", "SAMPLERS", "get_sampler",
    "sample_ddim", "sample_ddpm", "sample_dpm_2", "sample_dpmpp_2m", "sample_euler",
    "sample_euler_ancestral", "sample_heun", "sample_lms", "CosineLogSNR", "DiscreteSchedule",
    "discrete_sigmas", "exponential_sigmas", "karras_sigmas",
]
