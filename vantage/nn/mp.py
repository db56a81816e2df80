"""Magnitude-preserving (MP) layers of EDM2: Karras et al. 2024, "Analyzing and Improving the Training
Dynamics of Diffusion Models" (arXiv 2312.02696), Sections 2-3 and Appendix B. Equation numbers refer
to the arXiv version.

Every operation keeps unit-variance activations at unit variance (in expectation, for inputs whose
elements are independent with zero mean):

* :func:`normalize`: ``x / (ε + ‖x‖/√n)`` over the given dims (unit RMS), ``ε = 1e-4``.
* :class:`MPConv`: convolution (``kernel = (k, k)``) or fully connected layer (``kernel = ()``) whose
  weight is normalised on every call: ``ŵ_i = g · normalize(w_i) / √fan_in`` (Eq. 47, "magnitude
  preserving": each output filter has norm ``g``), with **forced weight normalisation** (Eq. 66): in
  training mode the stored weight is overwritten by ``normalize(w)`` before use, so it stays on the
  unit-RMS sphere and the effective learning rate does not decay as weights grow.
* :func:`mp_silu`: ``SiLU(x)/0.596`` (Eq. 81; ``E[SiLU(z)²] ≈ 0.596²`` for ``z ~ N(0, 1)``).
* :func:`mp_sum`: ``((1 − t)·a + t·b) / √((1 − t)² + t²)`` (Eq. 88).
* :func:`mp_cat`: concatenation with weights ``√((Na + Nb)/((1 − t)² + t²)) · ((1 − t)/√Na, t/√Nb)``
  (Eq. 103): both parts contribute in the ratio ``(1 − t) : t`` whatever their channel counts.
* :class:`MPFourier`: ``√2·cos(2π(f·x) + φ)`` with fixed random ``f ~ N(0, 1)`` and ``φ ~ U[0, 1)``
  (Eq. 75), unit variance for any input.
* :func:`cosine_attention`: attention whose queries, keys and values are normalised per head and
  pixel before the dot product (EDM2 Sec. 3, "cosine attention"); optional extra keys/values from
  another image (VIVID's joint self + cross attention, Elata et al. 2024, arXiv 2411.07765, Sec. 3).
* :func:`resample`: 2x2 average pooling (``"down"``) and nearest-neighbour upsampling (``"up"``),
  EDM2's resampling with the box filter ``[1, 1]``.

Tensors are ``(B, C, H, W)`` images or ``(B, C)`` vectors. Weights are kept in float32; the layers
compute in the input's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["normalize", "mp_silu", "mp_sum", "mp_cat", "resample", "MPFourier", "MPConv", "cosine_attention"]

SILU_STD = 0.596  # std of SiLU(z), z ~ N(0, 1) (EDM2 Eq. 81)


def normalize(x: Tensor, dim: int | Sequence[int] | None = None, eps: float = 1e-4) -> Tensor:
    """``x / (eps + ‖x‖/√n)``: unit RMS over ``dim`` (default: every dim but the first), ``n`` the number of
    elements reduced. The norm is taken in float32; the result has ``x``'s dtype and shape."""
    if dim is None:
        dim = tuple(range(1, x.ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    n = math.prod(x.shape[d] for d in dims)
    norm = torch.linalg.vector_norm(x, dim=dims, keepdim=True, dtype=torch.float32)
    return x / (eps + norm * math.sqrt(1.0 / n)).to(x.dtype)


def mp_silu(x: Tensor) -> Tensor:
    """Magnitude-preserving SiLU ``SiLU(x)/0.596`` (EDM2 Eq. 81)."""
    return F.silu(x) / SILU_STD


def mp_sum(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    """Magnitude-preserving blend ``((1 − t)a + tb)/√((1 − t)² + t²)`` (EDM2 Eq. 88); ``t`` weighs ``b``."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: Tensor, b: Tensor, dim: int = 1, t: float = 0.5) -> Tensor:
    """Magnitude-preserving concatenation along ``dim`` (EDM2 Eq. 103): ``a`` and ``b`` contribute in the
    ratio ``(1 − t) : t`` of the total energy, independently of their sizes ``Na``, ``Nb``."""
    na, nb = a.shape[dim], b.shape[dim]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    return torch.cat([a * (c / math.sqrt(na) * (1 - t)), b * (c / math.sqrt(nb) * t)], dim=dim)


def resample(x: Tensor, mode: str = "keep") -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H/2, W/2)`` (``"down"``: 2x2 box average), ``(B, C, 2H, 2W)`` (``"up"``:
    nearest neighbour, the transpose of the box filter times 4) or unchanged (``"keep"``)."""
    if mode == "keep":
        return x
    if mode == "down":
        return F.avg_pool2d(x, 2)
    if mode == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    raise ValueError(f"resample mode must be 'keep', 'down' or 'up', got {mode!r}")


class MPFourier(nn.Module):
    """Magnitude-preserving Fourier features (EDM2 Eq. 75): ``(B,)`` -> ``(B, C)``,
    ``√2·cos(x·freqs + phases)`` with fixed buffers ``freqs = 2π·N(0, bandwidth²)``, ``phases = 2π·U[0, 1)``."""

    def __init__(self, channels: int, bandwidth: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.outer(x.float(), self.freqs.float()) + self.phases.float()
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(nn.Module):
    """Magnitude-preserving convolution (``kernel=(k, k)``, ``'same'`` padding) or linear layer (``kernel=()``)
    with forced weight normalisation (EDM2 Eqs. 47 and 66; see the module docstring).

    ``weight``: ``(out, in, *kernel)``, initialised ``N(0, 1)``. ``forward(x, gain=1)``: ``x (B, in, H, W)``
    -> ``(B, out, H, W)``, or ``(B, in)`` -> ``(B, out)``; ``gain`` (a number or a 0-dim tensor, e.g. a
    learned scalar initialised to 0) scales every output filter's norm.

    In training mode each forward rewrites the stored weight in place, so run one forward per backward
    (as a training step does); a second training-mode forward before ``backward()`` makes autograd
    refuse the first graph.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = ()) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel = int(in_channels), int(out_channels), tuple(kernel)
        if len(self.kernel) not in (0, 2):
            raise ValueError(f"MPConv kernel must be () (linear) or (kh, kw), got {self.kernel}")
        self.weight = nn.Parameter(torch.randn(self.out_channels, self.in_channels, *self.kernel))

    def normalized_weight(self, gain: float | Tensor = 1.0) -> Tensor:
        """The weight actually used, ``gain · normalize(w) / √fan_in`` (float32); forces the stored weight
        onto the unit-RMS sphere first when in training mode."""
        w = self.weight.float()
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = normalize(w)
        return w * (gain / math.sqrt(w[0].numel()))

    def forward(self, x: Tensor, gain: float | Tensor = 1.0) -> Tensor:
        w = self.normalized_weight(gain).to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=(w.shape[-2] // 2, w.shape[-1] // 2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}"


def cosine_attention(qkv: Tensor, heads: int, kv: Tensor | None = None, cross_bias: Tensor | None = None) -> Tensor:
    """Cosine attention over the pixels of one image, optionally joined by another image's keys/values.

    Args:
        qkv: ``(B, 3C, H, W)``; channels are grouped per head as ``(heads, C/heads, 3)`` (the last axis
            is query / key / value), the layout of EDM2's attention.
        heads: number of heads (divides ``C``).
        kv: optional ``(B, 2C, H', W')`` keys/values of another image, grouped ``(heads, C/heads, 2)``;
            they are appended to the image's own keys, so each query attends jointly over both images.
        cross_bias: optional ``(B, heads, H·W, H'·W')`` added to the logits of the ``kv`` keys only (VIVID's
            epipolar bias, :mod:`vantage.nn.epipolar`), through ``scaled_dot_product_attention``'s ``attn_mask``.

    Queries, keys and values are normalised to unit RMS per head and pixel, then
    ``softmax(q·k/√(C/heads))·v``. Returns ``(B, C, H, W)``.
    """
    b, c3, h, w = qkv.shape
    c = c3 // 3
    if c3 != 3 * c or c % heads:
        raise ValueError(f"qkv has {c3} channels: expected 3C with C divisible by heads={heads}")
    q, k, v = normalize(qkv.reshape(b, heads, c // heads, 3, h * w), dim=2).unbind(3)
    if kv is not None:
        if kv.shape[0] != b or kv.shape[1] != 2 * c:
            raise ValueError(f"cross keys/values must be (B={b}, 2C={2 * c}, H', W'), got {tuple(kv.shape)}")
        xk, xv = normalize(kv.reshape(b, heads, c // heads, 2, -1), dim=2).unbind(3)
        k, v = torch.cat([k, xk], dim=-1), torch.cat([v, xv], dim=-1)
    mask = None
    if cross_bias is not None:
        if kv is None or cross_bias.shape != (b, heads, h * w, xk.shape[-1]):
            raise ValueError(f"cross_bias must be (B, heads, H*W, H'*W') for the cross keys, got "
                             f"{tuple(cross_bias.shape)}{'' if kv is not None else ' without cross keys'}")
        mask = torch.cat([q.new_zeros(b, heads, h * w, h * w), cross_bias.to(q.dtype)], -1)
    out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2),
                                         attn_mask=mask)
    return out.transpose(-1, -2).reshape(b, c, h, w)
