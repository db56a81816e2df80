"""ADM / SR3-style UNet family (:class:`UNet`, :class:`UNetConfig`) and the shared level structure
(:class:`UNetBackbone`) that the 3DiM X-UNet (:mod:`vantage.nn.xunet`) also uses.

Structure (``L = len(ch_mult)`` levels, level ``l`` at side ``resolution / 2^l`` with
``ch·ch_mult[l]`` channels; "attn" only at levels whose side is in ``attn_resolutions``)::

    conv_in 3x3 ───────────────────────────────────────────────► skip
    level l = 0..L-1:  num_res_blocks × [ResBlock → attn] ─────► skip (each)
                       Down (l < L-1) ─────────────────────────► skip
    middle:            ResBlock → attn → ResBlock        (mid_res_blocks=2, mid_attention)
    level l = L-1..0:  (num_res_blocks+1) × [concat(h, skip) → ResBlock → attn]
                       Up (l > 0)
    out:               GroupNorm → SiLU → conv 3x3 (zero-initialised with zero_init)

This is the layout of Ho et al. 2020 (DDPM), Dhariwal & Nichol 2021 (ADM) and Saharia et al.
(SR3, which ViewFusion uses). Conditioning: channel concatenation (``concat_channels``), a vector
embedding of the noise level and optional ``cond_vec`` (bias or FiLM in every ResBlock), and
spatial FiLM maps (``spatial_channels``: a full-resolution map mapped to each level by a strided
conv and added to the embedding, as 3DiM does with its pose maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vantage.nn.blocks import (
    Attention,
    Downsample,
    ResBlock,
    SpatialEmbedder,
    Upsample,
    check_level_maps,
    group_norm,
    zero_module,
)
from vantage.nn.embeddings import ScalarEmbedder

__all__ = ["UNetConfig", "UNet", "UNetBackbone", "UNetSize", "viewfusion_unet_config", "count_parameters"]


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


class _Unit(nn.Module):
    """One ResBlock followed by zero or more attention layers (self, then cross-frame)."""

    def __init__(self, res: nn.Module, attns: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.res = res
        self.attn = nn.ModuleList(attns)

    def forward(self, h: Tensor, emb: Tensor | None) -> Tensor:
        h = self.res(h, emb)
        for a in self.attn:
            h = a(h)
        return h


class UNetBackbone(nn.Module):
    """The level structure shown in the module docstring, on ``N = B·frames`` images.

    ``forward(x (N, C_in, H, W), emb (N, E) | None, spatial [(N, E, H_l, W_l)] | None,
    keep_frame)`` -> ``(N or B, C_out, H, W)``. The embedding of level ``l`` is
    ``emb + spatial[l]`` (activated by SiLU once per level when ``block_emb_act``); resampling
    ResBlocks use the embedding of their *output* level. ``frames == 2`` with
    ``cross_attention`` adds a cross-frame attention after every self-attention (X-UNet).
    ``keep_frame`` returns only that frame and drops the other frames' computation as soon as no
    attention layer is left (exact, since frames only interact through attention).
    """

    def __init__(self, *, in_channels: int, out_channels: int, resolution: int, ch: int,
                 ch_mult: Sequence[int], num_res_blocks: int, attn_resolutions: Sequence[int],
                 mid_attention: bool = True, mid_res_blocks: int = 2, num_heads: int = 1, head_channels: int = 0,
                 dropout: float = 0.0, groups: int = 32, eps: float = 1e-5, emb_dim: int = 0,
                 emb_mode: str = "film", block_emb_act: bool = True, resample: str = "conv",
                 skip_rescale: bool = False, zero_init: bool = True, qkv_bias: bool = True, frames: int = 1,
                 cross_attention: bool = False) -> None:
        super().__init__()
        L = len(ch_mult)
        if L < 1 or num_res_blocks < 1:
            raise ValueError(f"need at least one level and one res block, got ch_mult={ch_mult}, "
                             f"num_res_blocks={num_res_blocks}")
        if resolution % (2 ** (L - 1)):
            raise ValueError(f"resolution {resolution} is not divisible by 2^{L - 1} ({L} levels)")
        if resample not in ("conv", "resblock"):
            raise ValueError(f"resample must be 'conv' or 'resblock', got {resample!r}")
        if mid_res_blocks not in (1, 2):
            raise ValueError(f"mid_res_blocks must be 1 or 2, got {mid_res_blocks}")
        self.sizes = [resolution // 2 ** l for l in range(L)]
        self.frames, self.emb_dim, self.block_emb_act = frames, emb_dim, block_emb_act
        res_kw = dict(emb_dim=emb_dim, emb_mode=emb_mode, dropout=dropout, groups=groups, eps=eps,
                      zero_init=zero_init, skip_rescale=skip_rescale)
        attn_kw = dict(num_heads=num_heads, head_channels=head_channels, groups=groups, eps=eps, frames=frames,
                       zero_init=zero_init, skip_rescale=skip_rescale, qkv_bias=qkv_bias)

        def unit(cin: int, cout: int, attn: bool) -> _Unit:
            attns = []
            if attn:
                attns.append(Attention(cout, mode="self", **attn_kw))
                if cross_attention:
                    attns.append(Attention(cout, mode="cross", **attn_kw))
            return _Unit(ResBlock(cin, cout, **res_kw), attns)

        def down(c: int) -> nn.Module:
            return ResBlock(c, c, resample="down", **res_kw) if resample == "resblock" else Downsample(c)

        def up(c: int) -> nn.Module:
            return ResBlock(c, c, resample="up", **res_kw) if resample == "resblock" else Upsample(c)

        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        # each entry: (module, level its output lives at)
        self.down_blocks, self.down_levels = nn.ModuleList(), []
        skip_ch, c = [ch], ch
        for l, m in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down_blocks.append(unit(c, ch * m, self.sizes[l] in attn_resolutions))
                self.down_levels.append(l)
                c = ch * m
                skip_ch.append(c)
            if l < L - 1:
                self.down_blocks.append(down(c))
                self.down_levels.append(l + 1)
                skip_ch.append(c)
        self.mid_blocks = nn.ModuleList([unit(c, c, mid_attention)])
        if mid_res_blocks == 2:
            self.mid_blocks.append(unit(c, c, False))
        self.up_blocks, self.up_levels = nn.ModuleList(), []
        for l in reversed(range(L)):
            for _ in range(num_res_blocks + 1):
                self.up_blocks.append(unit(c + skip_ch.pop(), ch * ch_mult[l], self.sizes[l] in attn_resolutions))
                self.up_levels.append(l)
                c = ch * ch_mult[l]
            if l > 0:
                self.up_blocks.append(up(c))
                self.up_levels.append(l - 1)
        self.norm_out = group_norm(c, groups, eps)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)
        if zero_init:
            zero_module(self.conv_out)
        # position in the sequence (conv_in = 0, down 1.., mid, up) of the last attention layer
        seq = [nn.Identity()] + list(self.down_blocks) + list(self.mid_blocks) + list(self.up_blocks)
        has_attn = [isinstance(b, _Unit) and len(b.attn) > 0 for b in seq]
        self._last_attn = max((i for i, a in enumerate(has_attn) if a), default=-1)

    def _select(self, t: Tensor, frame: int) -> Tensor:
        return t.unflatten(0, (-1, self.frames))[:, frame]

    def level_embeddings(self, emb: Tensor | None, spatial: Sequence[Tensor] | None) -> list[Tensor | None]:
        """Per-level (activated) embeddings ``emb[:, :, None, None] + spatial[l]``."""
        if spatial is None:
            e = None if emb is None else (F.silu(emb) if self.block_emb_act else emb)
            return [e] * len(self.sizes)
        out = []
        for s in spatial:
            e = s if emb is None else s + emb[:, :, None, None].to(s.dtype)
            out.append(F.silu(e) if self.block_emb_act else e)
        return out

    def forward(self, x: Tensor, emb: Tensor | None = None, spatial: Sequence[Tensor] | None = None,
                keep_frame: int | None = None) -> Tensor:
        if self.emb_dim > 0 and emb is None and spatial is None:
            raise ValueError("this UNet conditions on an embedding: pass emb and/or spatial maps")
        embs = self.level_embeddings(emb, spatial)
        pruned: list[Tensor | None] = []
        if keep_frame is not None and self.frames > 1:
            pruned = [None if e is None else self._select(e, keep_frame) for e in embs]

        def maybe_prune(h: Tensor, step: int, done: bool) -> tuple[Tensor, bool]:
            if not done and pruned and step >= self._last_attn:
                return self._select(h, keep_frame), True
            return h, done

        step, done = 0, False
        h, done = maybe_prune(self.conv_in(x), step, done)
        skips = [h]
        for block, l in zip(self.down_blocks, self.down_levels):
            h = block(h, (pruned if done else embs)[l])
            step += 1
            h, done = maybe_prune(h, step, done)
            skips.append(h)
        L = len(self.sizes) - 1
        for block in self.mid_blocks:
            h = block(h, (pruned if done else embs)[L])
            step += 1
            h, done = maybe_prune(h, step, done)
        for block, l in zip(self.up_blocks, self.up_levels):
            if isinstance(block, _Unit):
                s = skips.pop()
                if done and s.shape[0] != h.shape[0]:
                    s = self._select(s, keep_frame)
                h = torch.cat([h, s], dim=1)
            h = block(h, (pruned if done else embs)[l])
            step += 1
            h, done = maybe_prune(h, step, done)
        if keep_frame is not None and self.frames > 1 and not done:
            h = self._select(h, keep_frame)
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class UNetSize:
    """The size fields that the 3DiM X-UNet's config and the 3DiM / relpose / regression method configs share,
    with their shared defaults (a 64×64 model: base 64, multipliers (1, 2, 2, 4), 2 ResBlocks per level, attention
    at 8 and 16 with 4 heads). Each config that inherits them documents them in its own ``Attributes``."""

    resolution: int = 64
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (8, 16)
    num_heads: int = 4
    dropout: float = 0.0
    norm_groups: int = 32
    emb_ch: int | None = None


@dataclass
class UNetConfig:
    """Configuration of :class:`UNet` (defaults: a small ADM-style 64×64 model).

    Attributes:
        resolution: side of the square input in pixels; must be divisible by ``2^(len(ch_mult)-1)``.
        in_channels: channels of ``x`` (the noisy image).
        out_channels: output channels (3 for ε; 6 for ViewFusion's ε + weight logits).
        concat_channels: extra conditioning channels concatenated to ``x`` (``forward(concat=...)``);
            0 = none. ViewFusion concatenates its own 6-channel input itself, so it uses 0 here.
        ch: base channel count (level 0).
        ch_mult: channel multiplier per level; ``len(ch_mult)`` levels, each halving the side.
        num_res_blocks: ResBlocks per level on the way down (``num_res_blocks + 1`` on the way up).
        attn_resolutions: feature-map sides at which self-attention follows each ResBlock; sides
            that match no level are ignored.
        mid_attention: self-attention between the two middle ResBlocks.
        num_heads: attention heads (used when ``head_channels == 0``).
        head_channels: channels per head; when > 0 the head count is ``C // head_channels``.
        dropout: dropout rate inside ResBlocks (before the last conv).
        norm_groups: GroupNorm groups (must divide every level's channel count).
        norm_eps: GroupNorm epsilon.
        emb_freq_dim: sinusoidal dimensions per embedded scalar (``None``: ``ch``).
        emb_hidden_dim: hidden width of the embedding MLP (``None``: ``4·ch``).
        emb_dim: embedding width fed to every ResBlock (``None``: ``4·ch``).
        emb_scale: multiplier applied to the noise level before the sinusoidal encoding
            (1 for SR3/ViewFusion's γ or integer timesteps; 1000 for continuous t ∈ [0, 1]).
        emb_order: "sin_cos" (SR3, ViewFusion, DDPM) or "cos_sin" (ADM).
        emb_freq_shift: 0 for frequencies ``10000^(-k/half)`` (ADM, SR3); 1 for ``k/(half-1)`` (DDPM).
        cond_dim: size of ``cond_vec`` (0 = none).
        cond_embed: how ``cond_vec`` enters: "sinusoidal" (each entry encoded like the noise level
            and concatenated after it before the MLP: ViewFusion's azimuth) or "linear" (a linear
            layer added to the MLP output: class labels / camera vectors).
        emb_mode: per-ResBlock use of the embedding: "bias" (SR3, ViewFusion) or "film"
            (``h·(1+scale)+shift`` after GroupNorm: ADM ``use_scale_shift_norm``, BigGAN, 3DiM).
        block_emb_act: SiLU on the embedding before each block's projection (ADM, 3DiM: True;
            SR3/ViewFusion: False).
        spatial_channels: channels of a full-resolution spatial conditioning map (0 = none);
            a 3x3 conv with stride ``2^l`` maps it to ``emb_dim`` channels at level ``l``, added
            to the embedding: per-pixel bias or FiLM (3DiM pose maps).
        resample: "conv" (strided conv down, nearest + conv up: SR3, ADM default) or "resblock"
            (BigGAN up/down ResBlocks: ADM ``resblock_updown``, 3DiM).
        skip_rescale: residuals as ``(h + skip)/√2`` (3DiM) instead of ``h + skip``.
        zero_init: zero-initialise the last conv of each ResBlock, each attention output
            projection and the output conv (ADM, 3DiM), so a fresh network outputs exactly 0.
        qkv_bias: bias in the qkv projection (SR3/ViewFusion: False).
    """

    resolution: int = 64
    in_channels: int = 3
    out_channels: int = 3
    concat_channels: int = 0
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    mid_attention: bool = True
    num_heads: int = 1
    head_channels: int = 0
    dropout: float = 0.0
    norm_groups: int = 32
    norm_eps: float = 1e-5
    emb_freq_dim: int | None = None
    emb_hidden_dim: int | None = None
    emb_dim: int | None = None
    emb_scale: float = 1.0
    emb_order: str = "sin_cos"
    emb_freq_shift: float = 0.0
    cond_dim: int = 0
    cond_embed: str = "sinusoidal"
    emb_mode: str = "film"
    block_emb_act: bool = True
    spatial_channels: int = 0
    resample: str = "conv"
    skip_rescale: bool = False
    zero_init: bool = True
    qkv_bias: bool = True


def viewfusion_unet_config(resolution: int = 64) -> UNetConfig:
    """ViewFusion's paper UNet (Spiegl et al. 2024; SR3 layout): 6 in / 6 out channels, base 64,
    mult (1, 2, 3, 5), 3 res blocks, attention at 16 and in the middle, GroupNorm 32, no dropout;
    γ and azimuth encoded unscaled (32 dims each) → MLP 64 → 256 → 64 (Swish) → bias per ResBlock.
    """
    return UNetConfig(resolution=resolution, in_channels=6, out_channels=6, ch=64, ch_mult=(1, 2, 3, 5),
                      num_res_blocks=3, attn_resolutions=(16,), mid_attention=True, num_heads=1, norm_groups=32,
                      emb_freq_dim=32, emb_hidden_dim=256, emb_dim=64, emb_scale=1.0, emb_order="sin_cos",
                      cond_dim=1, cond_embed="sinusoidal", emb_mode="bias", block_emb_act=False,
                      resample="conv", skip_rescale=False, zero_init=False, qkv_bias=False)


class UNet(nn.Module):
    """ADM / SR3-style UNet: ``forward(x, emb_input, cond_vec=None, spatial=None, concat=None)``.

    Args of ``forward``:
        x: ``(B, in_channels, H, W)`` with ``H = W = resolution``.
        emb_input: ``(B,)`` noise level (timestep, γ, logSNR, ...), encoded sinusoidally.
        cond_vec: ``(B, cond_dim)`` extra conditioning vector (see ``UNetConfig.cond_embed``).
        spatial: ``(B, spatial_channels, H, W)`` map, or a list of per-level maps
            ``(B, emb_dim, H/2^l, W/2^l)`` already at each level (bypasses the strided convs).
        concat: ``(B, concat_channels, H, W)`` concatenated to ``x``.

    Returns ``(B, out_channels, H, W)``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        if c.cond_embed not in ("sinusoidal", "linear"):
            raise ValueError(f"cond_embed must be 'sinusoidal' or 'linear', got {c.cond_embed!r}")
        freq = c.emb_freq_dim or c.ch
        self.emb_dim = c.emb_dim or 4 * c.ch
        n_scalars = 1 + (c.cond_dim if c.cond_embed == "sinusoidal" else 0)
        self.embed = ScalarEmbedder(n_scalars, freq, c.emb_hidden_dim or 4 * c.ch, self.emb_dim,
                                    scale=c.emb_scale, order=c.emb_order, freq_shift=c.emb_freq_shift)
        self.cond_proj = nn.Linear(c.cond_dim, self.emb_dim) if c.cond_dim and c.cond_embed == "linear" else None
        self.spatial_embed = (SpatialEmbedder(c.spatial_channels, self.emb_dim, len(c.ch_mult))
                              if c.spatial_channels > 0 else None)
        self.backbone = UNetBackbone(
            in_channels=c.in_channels + c.concat_channels, out_channels=c.out_channels, resolution=c.resolution,
            ch=c.ch, ch_mult=c.ch_mult, num_res_blocks=c.num_res_blocks, attn_resolutions=c.attn_resolutions,
            mid_attention=c.mid_attention, mid_res_blocks=2, num_heads=c.num_heads, head_channels=c.head_channels,
            dropout=c.dropout, groups=c.norm_groups, eps=c.norm_eps, emb_dim=self.emb_dim, emb_mode=c.emb_mode,
            block_emb_act=c.block_emb_act, resample=c.resample, skip_rescale=c.skip_rescale,
            zero_init=c.zero_init, qkv_bias=c.qkv_bias)

    def _check(self, name: str, t: Tensor | None, shape: tuple) -> None:
        if t is None:
            raise ValueError(f"{name} is required by this UNet: expected shape {shape}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")

    def forward(self, x: Tensor, emb_input: Tensor, cond_vec: Tensor | None = None,
                spatial: Tensor | Sequence[Tensor] | None = None, concat: Tensor | None = None) -> Tensor:
        c = self.config
        if x.ndim != 4:
            raise ValueError(f"x must be (B, {c.in_channels}, {c.resolution}, {c.resolution}), got {tuple(x.shape)}")
        B, R = x.shape[0], c.resolution
        self._check("x", x, (B, c.in_channels, R, R))
        if emb_input.ndim == 0:
            emb_input = emb_input.expand(B)
        if emb_input.ndim == 2 and emb_input.shape[1] == 1:  # (B, 1) as the SR3 code passes it
            emb_input = emb_input[:, 0]
        self._check("emb_input", emb_input, (B,))
        scalars = emb_input[:, None]
        if c.cond_dim:
            self._check("cond_vec", cond_vec, (B, c.cond_dim))
            if c.cond_embed == "sinusoidal":
                scalars = torch.cat([scalars, cond_vec.to(scalars.dtype)], dim=1)
        elif cond_vec is not None:
            raise ValueError("cond_vec given but UNetConfig.cond_dim == 0")
        emb = self.embed(scalars)
        if self.cond_proj is not None:
            emb = emb + self.cond_proj(cond_vec.to(emb.dtype))
        maps = None
        if spatial is not None or self.spatial_embed is not None:
            if self.spatial_embed is None:
                raise ValueError("spatial maps given but UNetConfig.spatial_channels == 0")
            if isinstance(spatial, Tensor):
                self._check("spatial", spatial, (B, c.spatial_channels, R, R))
                maps = self.spatial_embed(spatial)
            elif spatial is None:
                raise ValueError(f"spatial is required: expected shape ({B}, {c.spatial_channels}, {R}, {R})")
            else:
                maps = list(spatial)
                check_level_maps(maps, B, self.emb_dim, self.backbone.sizes, "spatial")
        if c.concat_channels:
            self._check("concat", concat, (B, c.concat_channels, R, R))
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        elif concat is not None:
            raise ValueError("concat given but UNetConfig.concat_channels == 0")
        return self.backbone(x, emb, maps)
