"""Diffusion core in σ-space: schedules, denoiser adapters, losses, samplers, guidance.

Everything is expressed with x_σ = x_0 + σ·ε behind one interface, ``D(x, sigma, cond) -> x̂0``
(see ``docs/diffusion.md``).
"""
