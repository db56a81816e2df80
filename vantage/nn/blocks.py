"""UNet building blocks: ResBlock (bias / FiLM / spatial-FiLM conditioning), attention (self and
cross-frame, SDPA or naive), resampling, per-level spatial embedders.

Every block works on ``(N, C, H, W)`` where ``N`` may be ``B·F`` (``F`` frames per sample, frame
index minor, as the X-UNet uses). Convolutions and GroupNorm therefore act per frame: GroupNorm
statistics are computed over ``(C/G, H, W)`` of one frame, never pooled across frames. Only
:class:`Attention` with ``mode="cross"`` mixes frames.

References: Ho et al. 2020 (DDPM UNet); Dhariwal & Nichol 2021 (ADM: ``use_scale_shift_norm``,
BigGAN-style up/down ResBlocks, zero-initialised output convs); Saharia et al. 2021 (SR3:
additive noise-level bias); Watson et al. 2022 (3DiM X-UNet: FiLM from a *spatial* embedding,
``(h + skip)/√2``, cross-frame attention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "group_norm",
    "zero_module",
    "ResBlock",
    "Attention",
    "Downsample",
    "Upsample",
    "SpatialEmbedder",
    "set_attention_impl",
    "attention_naive",
]

EMB_MODES = ("bias", "film")
ATTN_IMPLS = ("sdpa", "naive")


def group_norm(channels: int, groups: int, eps: float = 1e-5) -> nn.GroupNorm:
    """``nn.GroupNorm(groups, channels)`` with an error naming both numbers when they do not divide."""
    if channels % groups:
        raise ValueError(f"GroupNorm: {channels} channels are not divisible by {groups} groups "
                         f"(choose norm_groups dividing every level's channel count)")
    return nn.GroupNorm(groups, channels, eps=eps)


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (ADM/3DiM output layers) and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _project(linear: nn.Linear, emb: Tensor) -> Tensor:
    """Apply ``linear`` over the channel axis of ``(N, E)`` or ``(N, E, H, W)`` -> ``(N, K, 1|H, 1|W)``."""
    if emb.ndim == 2:
        return linear(emb)[:, :, None, None]
    if emb.ndim == 4:
        return F.conv2d(emb, linear.weight[:, :, None, None], linear.bias)
    raise ValueError(f"embedding must be (N, E) or (N, E, H, W), got {tuple(emb.shape)}")


class ResBlock(nn.Module):
    """Residual block ``GN -> SiLU -> [resample] -> conv3x3 -> cond -> GN -> SiLU -> dropout -> conv3x3``.

    Conditioning by an embedding ``emb`` (``(N, E)`` vector or ``(N, E, H_out, W_out)`` spatial
    map; the caller applies the activation, as in ADM's ``emb_layers = SiLU, Linear``), projected
    by one linear layer per block:

    * ``emb_mode="bias"`` (SR3 / ViewFusion ``FeatureWiseAffine``): ``h = h + W·emb`` before the
      second GroupNorm;
    * ``emb_mode="film"`` (ADM ``use_scale_shift_norm``, BigGAN, 3DiM): ``[scale, shift] = W·emb``,
      ``h = GN(h)·(1 + scale) + shift``.

    A spatial ``emb`` gives per-pixel bias / scale / shift (3DiM's pose maps). ``resample``
    ("up": nearest ×2, "down": 2×2 average pool) makes a BigGAN-style up/down block that resamples
    both branches. The skip is the identity or a 1x1 conv when channels change; the result is
    ``skip + h`` or ``(skip + h)/√2`` (``skip_rescale``, 3DiM). ``zero_init`` zeroes the last conv.
    """

    def __init__(self, in_ch: int, out_ch: int | None = None, *, emb_dim: int = 0, emb_mode: str = "film",
                 dropout: float = 0.0, groups: int = 32, eps: float = 1e-5, resample: str | None = None,
                 zero_init: bool = True, skip_rescale: bool = False) -> None:
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        if emb_mode not in EMB_MODES:
            raise ValueError(f"emb_mode must be one of {EMB_MODES}, got {emb_mode!r}")
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        self.emb_mode, self.resample, self.skip_rescale = emb_mode, resample, skip_rescale
        self.norm1 = group_norm(in_ch, groups, eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch * (2 if emb_mode == "film" else 1)) if emb_dim > 0 else None
        self.norm2 = group_norm(out_ch, groups, eps)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if zero_init:
            zero_module(self.conv2)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """``x (N, C_in, H, W)``, ``emb`` activated ``(N, E)`` / ``(N, E, H', W')`` -> ``(N, C_out, H', W')``."""
        h = F.silu(self.norm1(x))
        if self.resample is not None:
            h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("ResBlock was built with an embedding (emb_dim > 0) but got emb=None")
            e = _project(self.emb_proj, emb).to(h.dtype)
            if self.emb_mode == "film":
                scale, shift = e.chunk(2, dim=1)
                h = torch.addcmul(shift, self.norm2(h), 1.0 + scale)
            else:
                h = self.norm2(h + e)
        else:
            h = self.norm2(h)
        h = self.conv2(self.dropout(F.silu(h)))
        out = self.skip(x) + h
        return out * (1.0 / math.sqrt(2.0)) if self.skip_rescale else out


def attention_naive(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Reference attention ``softmax(q kᵀ · scale) v`` with einsum and an explicit softmax (fp32).

    ``q (..., Tq, d)``, ``k, v (..., Tk, d)`` -> ``(..., Tq, d)``; ``scale`` defaults to ``1/√d``.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    w = torch.einsum("...qd,...kd->...qk", q.float(), k.float()) * scale
    w = torch.softmax(w, dim=-1)
    return torch.einsum("...qk,...kd->...qd", w, v.float()).to(q.dtype)


class Attention(nn.Module):
    """Multi-head attention over the pixels of a feature map, with a residual connection.

    ``x (N, C, H, W)`` -> ``GN -> qkv (1x1 conv) -> attention -> out (1x1 conv) -> x + out``
    (divided by √2 with ``skip_rescale``). The qkv channels are ``[q (C), k (C), v (C)]``, each
    split into ``num_heads`` heads of ``C/num_heads`` channels; scale ``1/√(C/num_heads)``. The 1x1
    convs (parameter shapes as in ADM/SR3) are applied as linear maps on token-major features.

    ``mode="self"``: every frame attends to its own pixels. ``mode="cross"`` (3DiM X-UNet,
    ``frames == 2``): the queries of each frame attend to the keys/values of the *other* frame.
    ``impl`` selects :func:`torch.nn.functional.scaled_dot_product_attention` ("sdpa") or
    :func:`attention_naive` ("naive", for benchmarks and tests); see :func:`set_attention_impl`.
    """

    def __init__(self, channels: int, *, num_heads: int = 1, head_channels: int = 0, groups: int = 32,
                 eps: float = 1e-5, frames: int = 1, mode: str = "self", zero_init: bool = True,
                 skip_rescale: bool = False, qkv_bias: bool = True, impl: str = "sdpa") -> None:
        super().__init__()
        heads = channels // head_channels if head_channels > 0 else num_heads
        if heads < 1 or channels % heads:
            raise ValueError(f"Attention: {channels} channels cannot be split into {heads} heads "
                             f"(num_heads={num_heads}, head_channels={head_channels})")
        if mode not in ("self", "cross"):
            raise ValueError(f"attention mode must be 'self' or 'cross', got {mode!r}")
        if mode == "cross" and frames != 2:
            raise ValueError(f"cross-frame attention needs frames == 2, got {frames}")
        self.heads, self.frames, self.mode, self.skip_rescale = heads, frames, mode, skip_rescale
        self.impl = impl
        self.norm = group_norm(channels, groups, eps)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=qkv_bias)
        self.out = nn.Conv2d(channels, channels, 1)
        if zero_init:
            zero_module(self.out)

    def forward(self, x: Tensor) -> Tensor:
        n, c, hh, ww = x.shape
        # token-major layout (N, T, C): q, k, v come out as (N, heads, T, d) views with a unit-stride last
        # axis, which SDPA's CPU kernels need to be fast (3-4x slower on transposed inputs)
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)
        q, k, v = qkv.view(n, hh * ww, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.mode == "cross":  # swap the frames of keys and values: frame f attends to frame 1 - f
            k = k.unflatten(0, (-1, 2)).flip(1).flatten(0, 1)
            v = v.unflatten(0, (-1, 2)).flip(1).flatten(0, 1)
        if self.impl == "sdpa":
            h = F.scaled_dot_product_attention(q, k, v)
        elif self.impl == "naive":
            h = attention_naive(q, k, v)
        else:
            raise ValueError(f"attention impl must be one of {ATTN_IMPLS}, got {self.impl!r}")
        h = F.linear(h.transpose(1, 2).reshape(n, hh * ww, c), self.out.weight.flatten(1), self.out.bias)
        out = x + h.transpose(1, 2).reshape(n, c, hh, ww)
        return out * (1.0 / math.sqrt(2.0)) if self.skip_rescale else out


def set_attention_impl(module: nn.Module, impl: str) -> nn.Module:
    """Switch every :class:`Attention` inside ``module`` to ``impl`` ("sdpa" or "naive"); returns it.

    Only the attention kernel changes (same parameters, same outputs to ~1e-6).
    """
    if impl not in ATTN_IMPLS:
        raise ValueError(f"attention impl must be one of {ATTN_IMPLS}, got {impl!r}")
    for m in module.modules():
        if isinstance(m, Attention):
            m.impl = impl
    return module


class Downsample(nn.Module):
    """Halve the resolution: 3x3 conv with stride 2 (SR3/ADM ``conv_resample``); ``emb`` is ignored."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest neighbour then 3x3 conv (SR3/ADM); ``emb`` is ignored."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SpatialEmbedder(nn.Module):
    """Map a full-resolution conditioning map to every UNet level (3DiM's pose-map convs).

    Level ``l`` has a 3x3 conv with stride ``2^l`` (padding 1): ``(N, C_in, H, W)`` ->
    ``[(N, C_out, H/2^l, W/2^l) for l in range(num_levels)]``. ``H`` and ``W`` must be divisible
    by ``2^(num_levels-1)``.
    """

    def __init__(self, in_ch: int, out_ch: int, num_levels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch, out_ch, 3, stride=2 ** l, padding=1) for l in range(num_levels))

    def forward(self, x: Tensor) -> list[Tensor]:
        return [conv(x) for conv in self.convs]


def check_level_maps(maps: Sequence[Tensor], n: int, channels: int, sizes: Sequence[int], name: str) -> None:
    """Validate per-level maps: ``maps[l]`` must be ``(n, channels, sizes[l], sizes[l])``."""
    if len(maps) != len(sizes):
        raise ValueError(f"{name}: expected {len(sizes)} per-level maps, got {len(maps)}")
    for l, (m, s) in enumerate(zip(maps, sizes)):
        if tuple(m.shape) != (n, channels, s, s):
            raise ValueError(f"{name}[{l}] must have shape ({n}, {channels}, {s}, {s}), got {tuple(m.shape)}")
