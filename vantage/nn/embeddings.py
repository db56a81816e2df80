"""Embeddings: sinusoidal noise-level / timestep encodings, MLP embedders, NeRF Fourier features
and 3DiM's per-pixel ray pose features.

* :func:`sinusoidal_embedding`: the transformer encoding of a scalar used for diffusion
  timesteps (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"; Dhariwal & Nichol 2021,
  ADM) and for continuous noise levels (Saharia et al., SR3; ViewFusion encodes γ = ᾱ unscaled).
  ``scale`` multiplies the input first (ADM/DDPM-style continuous time uses ``scale=1000``);
  ``order`` and ``freq_shift`` cover the variants in the wild (SR3/WaveGrad: sin first,
  ``10000^(-k/half)``; ADM: cos first; DDPM/3DiM: sin first, ``10000^(-k/(half-1))``).
* :class:`ScalarEmbedder`: several scalars, each encoded sinusoidally, concatenated, then an
  MLP (ADM's ``time_embed``; ViewFusion's ``[enc(γ), enc(angle)] -> 64 -> 256 -> 64``).
* :func:`fourier_features`: NeRF positional encoding (Mildenhall et al. 2020).
* :func:`ray_pose_features`: 3DiM's pose conditioning (Watson et al. 2022, "Novel View Synthesis
  with Diffusion Models"): Fourier features of every pixel's ray origin (15 octaves) and unit
  direction (8 octaves), 144 channels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vantage.cameras import Cameras

__all__ = [
    "sinusoidal_embedding",
    "ScalarEmbedder",
    "MLPEmbedder",
    "fourier_features",
    "fourier_channels",
    "ray_pose_features",
    "ray_feature_channels",
    "logsnr_to_cosine_time",
]


def sinusoidal_embedding(x: Tensor, dim: int, *, scale: float = 1.0, max_period: float = 10000.0,
                         order: str = "sin_cos", freq_shift: float = 0.0) -> Tensor:
    """Sinusoidal encoding of scalars: ``(...,)`` -> ``(..., dim)``.

    With ``half = dim // 2`` and ``k = 0 .. half-1``: frequencies
    ``f_k = max_period^(-k / (half - freq_shift))`` and arguments ``a_k = scale · x · f_k``. The
    output is ``[sin(a), cos(a)]`` (``order="sin_cos"``: SR3, WaveGrad, ViewFusion, DDPM) or
    ``[cos(a), sin(a)]`` (``order="cos_sin"``: ADM). An odd ``dim`` gets one trailing zero.
    ``freq_shift=1`` gives the original DDPM / 3DiM frequencies (``k / (half - 1)``). Computed in
    float32 (or float64 for float64 input) whatever the autocast state.
    """
    if dim < 2:
        raise ValueError(f"sinusoidal_embedding needs dim >= 2, got {dim}")
    if order not in ("sin_cos", "cos_sin"):
        raise ValueError(f"order must be 'sin_cos' or 'cos_sin', got {order!r}")
    half = dim // 2
    if half - freq_shift <= 0:
        raise ValueError(f"freq_shift={freq_shift} too large for dim={dim}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    k = torch.arange(half, dtype=dtype, device=x.device)
    freqs = torch.exp(-math.log(max_period) * k / (half - freq_shift))
    args = (x.to(dtype) * scale)[..., None] * freqs
    parts = [torch.sin(args), torch.cos(args)]
    if order == "cos_sin":
        parts.reverse()
    out = torch.cat(parts, dim=-1)
    if dim % 2:
        out = torch.cat([out, torch.zeros_like(out[..., :1])], dim=-1)
    return out


class MLPEmbedder(nn.Sequential):
    """``Linear(in, hidden) -> SiLU -> Linear(hidden, out)``: ``(..., in) -> (..., out)``.

    SiLU is Swish (Ramachandran et al.), the activation of ADM, SR3 and ViewFusion.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))


class ScalarEmbedder(nn.Module):
    """Embed ``num_inputs`` scalars per sample: sinusoidal encodings (``freq_dim`` each),
    concatenated in input order, then :class:`MLPEmbedder` to ``out_dim``.

    ``forward(x)``: ``x`` is ``(B,)`` (one scalar) or ``(B, num_inputs)``; returns ``(B, out_dim)``.
    ADM: one input (t), ``freq_dim = ch``, hidden = out = ``4·ch``. ViewFusion: two inputs
    (γ, azimuth), ``freq_dim = 32``, hidden 256, out 64, ``scale=1``.
    """

    def __init__(self, num_inputs: int, freq_dim: int, hidden_dim: int, out_dim: int, *, scale: float = 1.0,
                 max_period: float = 10000.0, order: str = "sin_cos", freq_shift: float = 0.0) -> None:
        super().__init__()
        if num_inputs < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        self.num_inputs, self.freq_dim = num_inputs, freq_dim
        self.enc_kwargs = dict(scale=scale, max_period=max_period, order=order, freq_shift=freq_shift)
        self.mlp = MLPEmbedder(num_inputs * freq_dim, hidden_dim, out_dim)

    def encode(self, x: Tensor) -> Tensor:
        """``(B,)`` or ``(B, num_inputs)`` -> ``(B, num_inputs·freq_dim)`` sinusoidal encodings."""
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.num_inputs:
            raise ValueError(f"ScalarEmbedder expects (B,) or (B, {self.num_inputs}) scalars, got {tuple(x.shape)}")
        enc = sinusoidal_embedding(x, self.freq_dim, **self.enc_kwargs)  # (B, n, freq_dim)
        return enc.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        enc = self.encode(x)
        return self.mlp(enc.to(self.mlp[0].weight.dtype))


def fourier_channels(dims: int, num_octaves: int, include_input: bool = True) -> int:
    """Channels of :func:`fourier_features`: ``dims · (include_input + 2 · num_octaves)``."""
    return dims * (int(include_input) + 2 * num_octaves)


def fourier_features(x: Tensor, num_octaves: int, include_input: bool = True) -> Tensor:
    """NeRF positional encoding (Mildenhall et al. 2020): ``(..., D)`` -> ``(..., D·(1 + 2L))``.

    Layout along the last axis (``L = num_octaves``, octave-major, coordinate-minor)::

        [ x_0..x_{D-1}                                   (if include_input)
          sin(2^0 π x_0..D-1), sin(2^1 π x), ..., sin(2^{L-1} π x)      D·L
          cos(2^0 π x_0..D-1), cos(2^1 π x), ..., cos(2^{L-1} π x) ]    D·L

    Computed in ``x``'s dtype; pass float64 for many octaves (``2^14 π ≈ 5·10^4`` amplifies
    float32 rounding of ``x`` to phase errors of ~10⁻²).
    """
    if num_octaves < 0:
        raise ValueError(f"num_octaves must be >= 0, got {num_octaves}")
    parts = [x] if include_input else []
    if num_octaves:
        scales = (2.0 ** torch.arange(num_octaves, dtype=x.dtype, device=x.device)) * math.pi
        xb = (x[..., None, :] * scales[:, None]).flatten(-2)  # (..., L·D) octave-major
        parts += [torch.sin(xb), torch.cos(xb)]
    if not parts:
        raise ValueError("fourier_features with num_octaves=0 and include_input=False is empty")
    return torch.cat(parts, dim=-1)


def ray_feature_channels(octaves_origin: int = 15, octaves_dir: int = 8) -> int:
    """Channels of :func:`ray_pose_features`: ``3(1 + 2·L_o) + 3(1 + 2·L_d)`` (144 for 15 / 8)."""
    return fourier_channels(3, octaves_origin) + fourier_channels(3, octaves_dir)


def ray_pose_features(cameras: Cameras, *, octaves_origin: int = 15, octaves_dir: int = 8,
                      origin_scale: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """3DiM's per-pixel pose features (Watson et al. 2022): ``Cameras (...)`` -> ``(..., C, H, W)``.

    For every pixel centre, the world-space ray origin ``o / origin_scale`` and unit direction
    ``d`` (:meth:`Cameras.rays`) are encoded with :func:`fourier_features`. Channel layout for the
    defaults (C = 144)::

        0..2      o (raw, divided by origin_scale)
        3..47     sin(2^k π o), k = 0..14   (channel 3 + 3k + axis)
        48..92    cos(2^k π o), k = 0..14   (channel 48 + 3k + axis)
        93..95    d (raw unit direction)
        96..119   sin(2^k π d), k = 0..7    (channel 96 + 3k + axis)
        120..143  cos(2^k π d), k = 0..7    (channel 120 + 3k + axis)

    ``origin_scale`` (a scene scale, e.g. the camera radius) brings origins to roughly unit size
    so that the octaves span sensible wavelengths. Computed in float64 (see
    :func:`fourier_features`), returned in ``dtype``. Unlike the published 3DiM code the encoding
    includes the factor π (NeRF's definition); ``origin_scale=π`` reproduces the origin part.
    """
    if not isinstance(cameras, Cameras):
        raise TypeError(f"ray_pose_features expects Cameras, got {type(cameras).__name__}")
    if origin_scale <= 0:
        raise ValueError(f"origin_scale must be positive, got {origin_scale}")
    origins, dirs = cameras.to(torch.float64).rays()  # (..., H, W, 3)
    feats = torch.cat([fourier_features(origins / origin_scale, octaves_origin),
                       fourier_features(dirs, octaves_dir)], dim=-1)
    return feats.movedim(-1, -3).to(dtype).contiguous()


def logsnr_to_cosine_time(logsnr: Tensor, logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> Tensor:
    """Map a logSNR to the time ``t = (2/π)·atan(exp(-λ/2)) ∈ (0, 1)`` of the cosine schedule.

    ``λ`` is clipped to ``[logsnr_min, logsnr_max]`` first. This is how 3DiM feeds its continuous
    noise level to a DDPM-style sinusoidal encoding (``scale=1000``): t ≈ 0 for clean, 1 for noise.
    """
    lam = logsnr.float().clamp(logsnr_min, logsnr_max)
    return (2.0 / math.pi) * torch.atan(torch.exp(-0.5 * lam))
