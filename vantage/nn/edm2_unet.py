"""The EDM2 UNet built from magnitude-preserving layers (Karras et al. 2024, arXiv 2312.02696, Fig. 21 and
App. B), and VIVID's pair of them (Elata et al. 2024, arXiv 2411.07765, Sec. 3): an *encoder* UNet over the
source view whose attention-block outputs become extra keys/values of every attention block of the
*denoiser* UNet (joint self + cross attention).

Layout (``R`` = resolution, levels ``R, R/2, …`` with ``model_channels · channel_mult[l]`` channels):

* embedding: ``emb = MP-SiLU(MP-sum(Linear(Fourier(c_noise)), Linear(label), t=label_balance))``; the
  label (VIVID: the 20-D camera vector) is mixed in like a class label; no label when ``label_dim = 0``.
* encoder path ``enc``: ``{R}x{R}_conv`` (3x3 MPConv on the image plus a constant-one channel), then per
  level a ``_down`` block (not at level 0) and ``num_blocks`` blocks ``_block{i}``;
* decoder path ``dec``: at the lowest level ``_in0`` (always with attention) and ``_in1``, elsewhere an
  ``_up`` block; then ``num_blocks + 1`` blocks ``_block{i}``, each fed ``MP-cat(x, skip)``;
* ``out_conv`` (3x3 MPConv scaled by the learned ``out_gain``, initialised 0).

A block (:class:`MPBlock`): ``enc`` flavour: resample, 1x1 skip conv if the width changes, pixel norm;
residual branch ``conv3x3(MP-SiLU(x))``, modulated by ``1 + Linear(emb)·emb_gain``, ``MP-SiLU``, dropout,
``conv3x3``; ``x = MP-sum(x, y, t=res_balance)`` (the ``dec`` flavour applies the skip conv here); then
optional cosine attention ``x = MP-sum(x, proj(attn), t=attn_balance)``; activations clipped to ±256.
Attention sits at the resolutions in ``attn_resolutions``, at ``_in0``, and with ``extra_attn = i`` also at
block ``i`` of every encoder level but the first and at block ``num_blocks − i`` of every decoder level but
the first (VIVID's option). With ``epipolar_bias`` every cross-attention block of the denoiser adds a learned
bias favouring source keys near the query's epipolar line (:mod:`vantage.nn.epipolar`; off by default).

Module and parameter names follow the figure's block names (``enc.16x16_block0.conv_res0.weight``), which is
also what lets :mod:`vantage.methods.vivid_convert` map reference weights onto these modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vantage.nn.epipolar import EpipolarBias, EpipolarDistances
from vantage.nn.mp import MPConv, MPFourier, cosine_attention, mp_cat, mp_silu, mp_sum, normalize, resample

__all__ = ["EDM2UNetConfig", "MPBlock", "EDM2UNet", "XAttnPairNet"]


@dataclass
class EDM2UNetConfig:
    """Structure of one EDM2 UNet (field names follow EDM2 / VIVID; defaults are EDM2's).

    Attributes:
        resolution: input side ``R`` in pixels (divisible by ``2^(levels − 1)``).
        in_channels: input channels (a constant-one channel is appended internally).
        out_channels: output channels of ``out_conv``.
        label_dim: length of the label vector mixed into the embedding (0 = none).
        model_channels: base width; level ``l`` has ``model_channels · channel_mult[l]`` channels.
        channel_mult: per-level multipliers.
        channel_mult_noise: Fourier features ``= model_channels · this`` (None: level 0's width).
        channel_mult_emb: embedding width ``= model_channels · this`` (None: the widest level's width).
        num_blocks: residual blocks per encoder level (decoder levels have one more).
        attn_resolutions: resolutions whose blocks all have attention.
        extra_attn: VIVID's extra attention: block ``i`` of each encoder level but the first and block
            ``num_blocks − i`` of each decoder level but the first (None = off).
        channels_per_head: attention head width (divides the width of every attention level).
        dropout: dropout in the residual branch (training only).
        label_balance, concat_balance, res_balance, attn_balance: the ``t`` of the MP sums / concatenation.
        clip_act: clamp block outputs to ``±clip_act`` (None = off).
        epipolar_bias, epipolar_strength, epipolar_width: the denoiser's cross-attention blocks get an
            :class:`~vantage.nn.epipolar.EpipolarBias` (initial strength, width in map pixels); off by default.
    """

    resolution: int = 64
    in_channels: int = 3
    out_channels: int = 3
    label_dim: int = 0
    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    channel_mult_noise: int | None = None
    channel_mult_emb: int | None = None
    num_blocks: int = 3
    attn_resolutions: tuple[int, ...] = (16, 8)
    extra_attn: int | None = None
    channels_per_head: int = 64
    dropout: float = 0.0
    label_balance: float = 0.5
    concat_balance: float = 0.5
    res_balance: float = 0.3
    attn_balance: float = 0.3
    clip_act: float | None = 256.0
    epipolar_bias: bool = False
    epipolar_strength: float = 1.0
    epipolar_width: float = 1.0

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if not self.channel_mult or self.num_blocks < 1 or self.model_channels < 1:
            raise ValueError("EDM2 UNet needs channel_mult, num_blocks >= 1 and model_channels >= 1")
        if self.resolution % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"resolution {self.resolution} must be divisible by 2^(levels - 1) = "
                             f"{2 ** (len(self.channel_mult) - 1)}")

    def widths(self) -> list[int]:
        return [self.model_channels * m for m in self.channel_mult]


class MPBlock(nn.Module):
    """One EDM2 UNet block (see the module docstring). ``cross=True`` adds ``x_attn_kv``: a 1x1 MPConv turning
    another image's features ``(B, out, H', W')`` into extra keys/values of the attention; ``epipolar =
    (strength, width)`` (cross blocks) adds ``epipolar``, an :class:`~vantage.nn.epipolar.EpipolarBias` on them."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, *, flavor: str = "enc",
                 resample_mode: str = "keep", attention: bool = False, cross: bool = False,
                 channels_per_head: int = 64, dropout: float = 0.0, res_balance: float = 0.3,
                 attn_balance: float = 0.3, clip_act: float | None = 256.0,
                 epipolar: tuple[float, float] | None = None) -> None:
        super().__init__()
        if flavor not in ("enc", "dec"):
            raise ValueError(f"block flavor must be 'enc' or 'dec', got {flavor!r}")
        if attention and (out_channels % channels_per_head or out_channels < channels_per_head):
            raise ValueError(f"an attention block of {out_channels} channels needs channels_per_head dividing it, "
                             f"got {channels_per_head}")
        self.out_channels, self.flavor, self.resample_mode = out_channels, flavor, resample_mode
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout, self.res_balance, self.attn_balance, self.clip_act = dropout, res_balance, attn_balance, clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, (3, 3))
        self.emb_linear = MPConv(emb_channels, out_channels, ())
        self.conv_res1 = MPConv(out_channels, out_channels, (3, 3))
        self.conv_skip = MPConv(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, 3 * out_channels, (1, 1)) if self.num_heads else None
        self.x_attn_kv = MPConv(out_channels, 2 * out_channels, (1, 1)) if self.num_heads and cross else None
        self.attn_proj = MPConv(out_channels, out_channels, (1, 1)) if self.num_heads else None
        if self.x_attn_kv is not None and epipolar is not None:
            self.epipolar = EpipolarBias(self.num_heads, *epipolar)
        else:
            self.epipolar = None

    @property
    def cross(self) -> bool:
        return self.x_attn_kv is not None

    def forward(self, x: Tensor, emb: Tensor, features: Tensor | None = None,
                epipolar: EpipolarDistances | None = None) -> Tensor:
        """``x (B, in, H, W)``, ``emb (B, E)``, ``features (B, out, H', W')`` (cross blocks), ``epipolar`` (blocks
        with the epipolar bias: the pairs' distances by map size) -> ``(B, out, H*, W*)``."""
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)  # pixel norm
        y = self.conv_res0(mp_silu(x))
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * c[:, :, None, None].to(y.dtype))
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        if self.num_heads:
            kv = None
            if self.x_attn_kv is not None:
                if features is None:
                    raise ValueError("a cross-attention block needs the encoder's features")
                kv = self.x_attn_kv(features.to(x.dtype))
            bias = None
            if self.epipolar is not None:
                if epipolar is None:
                    raise ValueError("this block has an epipolar attention bias; it needs the cameras' epipolar "
                                     "distances (epipolar=EpipolarDistances(target, source))")
                if features.shape[-2:] != x.shape[-2:]:
                    raise ValueError(f"the epipolar bias needs source features of the block's size "
                                     f"{tuple(x.shape[-2:])}, got {tuple(features.shape[-2:])}")
                bias = self.epipolar(epipolar(x.shape[-2], x.shape[-1], x.device), x.shape[-1])
            y = cosine_attention(self.attn_qkv(x), self.num_heads, kv, bias)
            x = mp_sum(x, self.attn_proj(y), t=self.attn_balance)
        if self.clip_act is not None:
            x = x.clamp(-self.clip_act, self.clip_act)
        return x


class EDM2UNet(nn.Module):
    """An EDM2 UNet in one of three roles:

    * ``"plain"``: ``forward(x, c_noise, label) -> (B, out_channels, R, R)``;
    * ``"denoiser"``: every attention block also takes keys/values from the encoder's features:
      ``forward(x, c_noise, label, features)`` with ``features`` a list in :meth:`attention_blocks` order;
    * ``"encoder"``: no output conv, and the decoder stops at its last attention block;
      ``forward(x, c_noise, label) -> features``: the outputs of its attention blocks, in order, which match
      a ``"denoiser"`` of the same config one to one.

    ``x``: ``(B, in_channels, R, R)``; ``c_noise``: ``(B,)``; ``label``: ``(B, label_dim)`` or None.
    """

    def __init__(self, config: EDM2UNetConfig, role: str = "plain") -> None:
        super().__init__()
        if role not in ("plain", "denoiser", "encoder"):
            raise ValueError(f"role must be 'plain', 'denoiser' or 'encoder', got {role!r}")
        self.config, self.role = config, role
        cfg = config
        widths = cfg.widths()
        cnoise = cfg.model_channels * cfg.channel_mult_noise if cfg.channel_mult_noise else widths[0]
        cemb = cfg.model_channels * cfg.channel_mult_emb if cfg.channel_mult_emb else max(widths)
        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, ())
        self.emb_label = MPConv(cfg.label_dim, cemb, ()) if cfg.label_dim else None
        kw = dict(channels_per_head=cfg.channels_per_head, dropout=cfg.dropout, res_balance=cfg.res_balance,
                  attn_balance=cfg.attn_balance, clip_act=cfg.clip_act, cross=role == "denoiser",
                  epipolar=(cfg.epipolar_strength, cfg.epipolar_width) if cfg.epipolar_bias else None)
        extra = cfg.extra_attn
        self.enc = nn.ModuleDict()
        cout = cfg.in_channels + 1
        for level, width in enumerate(widths):
            res = cfg.resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = MPConv(cout, width, (3, 3))
                cout = width
            else:
                self.enc[f"{res}x{res}_down"] = MPBlock(cout, cout, cemb, flavor="enc", resample_mode="down", **kw)
            for i in range(cfg.num_blocks):
                attn = res in cfg.attn_resolutions or (extra is not None and extra == i and level != 0)
                self.enc[f"{res}x{res}_block{i}"] = MPBlock(cout, width, cemb, flavor="enc", attention=attn, **kw)
                cout = width
        skips = [b.out_channels for b in self.enc.values()]
        dec: list[tuple[str, MPBlock]] = []
        for level, width in reversed(list(enumerate(widths))):
            res = cfg.resolution >> level
            if level == len(widths) - 1:
                dec.append((f"{res}x{res}_in0", MPBlock(cout, cout, cemb, flavor="dec", attention=True, **kw)))
                dec.append((f"{res}x{res}_in1", MPBlock(cout, cout, cemb, flavor="dec", **kw)))
            else:
                dec.append((f"{res}x{res}_up", MPBlock(cout, cout, cemb, flavor="dec", resample_mode="up", **kw)))
            for i in range(cfg.num_blocks + 1):
                cin = cout + skips.pop()
                attn = res in cfg.attn_resolutions or (extra is not None and extra == cfg.num_blocks - i and level != 0)
                dec.append((f"{res}x{res}_block{i}", MPBlock(cin, width, cemb, flavor="dec", attention=attn, **kw)))
                cout = width
        if role == "encoder":  # nothing after the last attention block is needed
            last = max(i for i, (_, b) in enumerate(dec) if b.num_heads)
            dec = dec[:last + 1]
        self.dec = nn.ModuleDict(dec)
        if role != "encoder":
            self.out_gain = nn.Parameter(torch.zeros([]))
            self.out_conv = MPConv(cout, cfg.out_channels, (3, 3))

    def attention_blocks(self) -> list[tuple[str, MPBlock]]:
        """``("enc.<name>" | "dec.<name>", block)`` of every attention block, in the order they run."""
        out = [(f"enc.{n}", b) for n, b in self.enc.items() if isinstance(b, MPBlock) and b.num_heads]
        return out + [(f"dec.{n}", b) for n, b in self.dec.items() if b.num_heads]

    def embedding(self, c_noise: Tensor, label: Tensor | None) -> Tensor:
        """``(B, E)`` block embedding of the noise level and the label."""
        emb = self.emb_noise(self.emb_fourier(c_noise))
        if self.emb_label is not None:
            if label is None:
                raise ValueError(f"this UNet mixes a {self.config.label_dim}-D label into its embedding; none given")
            emb = mp_sum(emb, self.emb_label(label.to(emb.dtype)), t=self.config.label_balance)
        return mp_silu(emb)

    def forward(self, x: Tensor, c_noise: Tensor, label: Tensor | None = None,
                features: list[Tensor] | None = None,
                epipolar: EpipolarDistances | None = None) -> Tensor | list[Tensor]:
        emb = self.embedding(c_noise, label)
        feats = iter(features or [])
        collected: list[Tensor] = []

        def run(block: MPBlock, h: Tensor) -> Tensor:
            feature = next(feats, None) if block.cross else None
            if block.cross and feature is None:
                raise ValueError(f"the denoiser UNet needs {len(self.attention_blocks())} feature maps, got fewer")
            h = block(h, emb, feature, epipolar) if block.cross else block(h, emb)
            if self.role == "encoder" and block.num_heads:
                collected.append(h)
            return h

        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for block in self.enc.values():
            x = block(x) if isinstance(block, MPConv) else run(block, x)
            skips.append(x)
        for name, block in self.dec.items():
            if "_block" in name:
                x = mp_cat(x, skips.pop(), t=self.config.concat_balance)
            x = run(block, x)
        if self.role == "encoder":
            return collected
        return self.out_conv(x, gain=self.out_gain)


class XAttnPairNet(nn.Module):
    """VIVID's network without its preconditioning: ``encoder`` (an :class:`EDM2UNet` in the ``"encoder"``
    role over the source view, or None for an unconditional model) and ``unet`` (the ``"denoiser"`` role
    over the scaled noisy target). Both get the same label and, unless ``encoder_time=False``, the same
    ``c_noise``.

    ``forward(x_in (B, C, R, R), c_noise (B,), source (B, C_s, R, R) | None, label (B, L) | None,
    epipolar=None)`` -> ``F (B, out, R, R)``; ``epipolar`` (an :class:`~vantage.nn.epipolar.EpipolarDistances` of
    the (target, source) cameras) is needed when the denoiser has the epipolar bias. Without an encoder the cross
    keys/values are zero maps, as for VIVID's unconditional guide.
    """

    def __init__(self, unet: EDM2UNetConfig, encoder: EDM2UNetConfig | None, encoder_time: bool = True) -> None:
        super().__init__()
        self.encoder = EDM2UNet(encoder, "encoder") if encoder is not None else None
        self.unet = EDM2UNet(unet, "denoiser")
        self.encoder_time = encoder_time
        if self.encoder is not None:
            enc = [(n, b.out_channels) for n, b in self.encoder.attention_blocks()]
            den = [(n, b.out_channels) for n, b in self.unet.attention_blocks()]
            if enc != den:
                raise ValueError(f"encoder attention blocks {enc} do not match the denoiser's {den}")

    def features(self, source: Tensor, c_noise: Tensor, label: Tensor | None) -> list[Tensor]:
        """The encoder's feature maps for the denoiser's attention blocks (zeros without an encoder)."""
        if self.encoder is None:
            out = []
            for name, block in self.unet.attention_blocks():
                side = int(name.split(".", 1)[1].split("x", 1)[0])
                out.append(source.new_zeros(source.shape[0], block.out_channels, side, side))
            return out
        return self.encoder(source, c_noise * float(self.encoder_time), label)

    def forward(self, x_in: Tensor, c_noise: Tensor, source: Tensor | None, label: Tensor | None,
                epipolar: EpipolarDistances | None = None) -> Tensor:
        src = source if source is not None else x_in
        return self.unet(x_in, c_noise, label, self.features(src, c_noise, label), epipolar)

