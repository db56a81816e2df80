"""An epipolar attention bias for VIVID's joint self + cross attention: our own formulation of the optional bias of
Elata et al. 2024, "Novel View Synthesis with Pixel-Space Diffusion Models" (arXiv 2411.07765).

In the denoiser's attention every *target* pixel (query) attends over the target's own pixels and over the
*source* view's features. A 3-D point seen by a target pixel can only appear in the source view on the image of
that pixel's ray, its epipolar line; the bias raises the attention logits of the source keys near it.

**Geometry** (:func:`epipolar_distances`; our camera convention, :mod:`vantage.cameras`: camera-to-world ``c2w``
with OpenCV axes, pixel intrinsics, pixel centres at +0.5). Both cameras are rescaled to the ``(h, w)`` map of an
attention block (map pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``). With the target -> source pose
``[R | t] = w2c_source · c2w_target``, the points of target pixel ``p``'s ray, in the source camera's frame, are
``X(λ) = t + λ·R·K_t⁻¹·p`` (``λ > 0``, their target depth); in the source image they are ``e + λ·h`` in
homogeneous coordinates, with ``e = K_s·t`` (the epipole: the target camera's centre) and ``h = K_s·R·K_t⁻¹·p``
(the ray's vanishing point, the infinite homography of ``p``). Only points in front of the source camera
(third coordinate > 0) are seen, so the candidates form a *piece* of the epipolar line, not all of it:

* epipole and vanishing point both in front: the segment between them;
* only the epipole in front: a half-line from the epipole, direction ``h_xy·e_z − e_xy·h_z``;
* only the vanishing point in front: a half-line from it, direction ``e_xy·h_z − h_xy·e_z``;
* neither: the ray is not seen at all; the distance is ``inf`` and the bias below is 0 (no preference).

The returned distance (``(B, h·w, h·w)``, target pixel by source pixel, both in row-major order) is from each
source pixel centre to that piece, in units of the map width (a fraction of the image width, the same at every
resolution). Parts of the line that are images of points behind either camera are not candidates.

**Zero baseline** (identical cameras, pure rotation, single-image pairs): ``e = 0`` and the piece shrinks to the
point ``h/h_z``: the homography-mapped pixel, the exact correspondence for every depth; the distance is to that
point (``inf`` when it is behind the source camera). Baselines shorter than ``eps · max(1, |centres|)`` count as
zero. A tiny but non-zero baseline still gives a half-line (near points have large parallax); the geometry is
scale-free, so that is correct, only discontinuous at exactly zero.

**The bias** (:class:`EpipolarBias`, per head ``k`` of a block): ``b_k(d) = a_k · exp(−½·(d·w / ω_k)²)`` with
``d·w`` the distance in map pixels, ``a_k`` a learned strength (initial value ``strength``) and ``ω_k`` a learned
width in map pixels (``log ω_k`` learned, initial ``width``). It is added to the logits of the source keys only.
Choices: bounded (at most ``a_k``, of the order of cosine attention's logits, which are bounded by
``√(C/heads)``), so it is a prior the content can override, not a mask; 0 far from the line, so far source pixels
keep their plain logits and an unseen ray (``d = inf``) gives exactly no bias; quadratic near the line
(``a_k − ½a_k(d·w/ω_k)²``); the width in map pixels keeps the band about one feature pixel wide at every
resolution, where pixel centres lie up to ``1/√2`` map pixel from a line through their pixel; ``a_k = 0`` is
the model without the bias. The reference code uses a different learned function of the distance to the whole
line (its ``epipolar_mixing``); the two are not weight-compatible.

Cost: ``(h·w)²`` distances per attention resolution and sample, and a ``(heads, h·w, 2·h·w)`` additive mask per
attention block and sample (``scaled_dot_product_attention``'s ``attn_mask``, which also rules out its flash
kernel).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vantage.cameras import Cameras

__all__ = ["epipolar_distances", "EpipolarDistances", "EpipolarBias"]

_Z_TOL = 1e-9  # |z| of a unit homogeneous point below this counts as 0 (a point at infinity)
_TINY = 1e-12


def _batched(cams: Cameras, name: str) -> Cameras:
    if cams.c2w.ndim != 3:
        cams = cams.reshape(-1)
    bad = ~((cams.fx > 0) & (cams.fy > 0))
    if bad.any():
        rows = bad.nonzero().flatten().tolist()[:8]
        raise ValueError(f"the epipolar attention bias needs the {name} cameras' intrinsics (fx, fy > 0); rows {rows} "
                         f"have none")
    return cams


def _ray_pieces(target: Cameras, source: Cameras, size: tuple[int, int], eps: float
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per target pixel (float64, on the cameras' device): ``anchor (B, N, 2)``, unit ``direction (B, N, 2)``,
    bounds ``lo, hi (B, N)`` of the seen piece ``{anchor + s·direction : lo <= s <= hi}`` in source map pixels
    (the anchor is the line's point nearest the map centre, so distances lose no precision later), and
    ``visible (B, N)``."""
    h, w = size
    tgt, src = target.resize(w, h), source.resize(w, h)
    Kt, Ks = tgt.K.double(), src.K.double()
    rel = torch.linalg.inv(src.c2w.double()) @ tgt.c2w.double()  # target -> source
    R, t = rel[:, :3, :3], rel[:, :3, 3]
    scale = torch.maximum(src.centers.double().norm(dim=-1), tgt.centers.double().norm(dim=-1)).clamp_min(1.0)
    t = torch.where((t.norm(dim=-1) <= eps * scale)[:, None], torch.zeros_like(t), t)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=Kt.device) + 0.5,
                          torch.arange(w, dtype=torch.float64, device=Kt.device) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # (N, 3)
    hom = torch.einsum("bij,nj->bni", Ks @ R @ torch.linalg.inv(Kt), pix)  # vanishing points (B, N, 3)
    e = (Ks @ t[..., None])[..., 0][:, None].expand_as(hom)  # epipole (B, N, 3)
    hom = hom / hom.norm(dim=-1, keepdim=True).clamp_min(_TINY)  # positive rescaling keeps the meaning
    e = e / e.norm(dim=-1, keepdim=True).clamp_min(_TINY)
    ez = torch.where(e[..., 2].abs() <= _Z_TOL, 0.0, e[..., 2])
    hz = torch.where(hom[..., 2].abs() <= _Z_TOL, 0.0, hom[..., 2])
    e_front, h_front = ez > 0, hz > 0
    epipole = e[..., :2] / torch.where(e_front, ez, 1.0)[..., None]
    vanish = hom[..., :2] / torch.where(h_front, hz, 1.0)[..., None]
    both = e_front & h_front
    start = torch.where(e_front[..., None], epipole, vanish)
    ray_dir = hom[..., :2] * ez[..., None] - e[..., :2] * hz[..., None]  # from the epipole (only it in front)
    ray_dir = torch.where(e_front[..., None], ray_dir, -ray_dir)  # from the vanishing point (only it in front)
    d = torch.where(both[..., None], vanish - epipole, ray_dir)
    length = d.norm(dim=-1)
    nonzero = length > _TINY
    direction = torch.where(nonzero[..., None], d / length.clamp_min(_TINY)[..., None],
                            torch.tensor([1.0, 0.0], dtype=d.dtype, device=d.device))
    hi = torch.where(both, length, torch.where(nonzero, math.inf, 0.0))
    visible = e_front | h_front
    start = torch.where(visible[..., None], start, 0.0)
    centre = torch.tensor([w / 2, h / 2], dtype=d.dtype, device=d.device)
    s0 = ((centre - start) * direction).sum(-1)
    return start + s0[..., None] * direction, direction, -s0, hi - s0, visible


def epipolar_distances(target: Cameras, source: Cameras, size: tuple[int, int], points: Tensor | None = None, *,
                       eps: float = 1e-6, device: torch.device | str | None = None) -> Tensor:
    """Distances from source pixels to the seen part of each target pixel's epipolar line (module docstring).

    Args:
        target, source: :class:`Cameras` ``(B,)`` of any image size (rescaled to the map).
        size: ``(h, w)`` of the attention map.
        points: optional ``(B, M, 2)`` or ``(M, 2)`` source points ``(u, v)`` in map pixels (default: the ``h·w``
            pixel centres, row-major).
        eps: relative baseline below which the pair counts as a pure rotation.
        device: where the ``(B, N, M)`` result is computed (default: the cameras' device).

    Returns:
        ``(B, h·w, M)`` float32 distances in units of the map width; row ``n`` is target pixel ``n`` (row-major);
        ``inf`` where the target pixel's ray is behind the source camera.
    """
    h, w = int(size[0]), int(size[1])
    target, source = _batched(target, "target"), _batched(source, "source")
    if len(target) != len(source):
        raise ValueError(f"target and source cameras differ in batch size: {len(target)} vs {len(source)}")
    anchor, direction, lo, hi, visible = _ray_pieces(target, source, (h, w), eps)
    device = anchor.device if device is None else torch.device(device)
    anchor, direction, lo, hi = (x.to(device=device, dtype=torch.float32) for x in (anchor, direction, lo, hi))
    visible = visible.to(device)
    if points is None:
        v, u = torch.meshgrid(torch.arange(h, device=device) + 0.5, torch.arange(w, device=device) + 0.5,
                              indexing="ij")
        points = torch.stack([u, v], -1).reshape(-1, 2)
    points = points.to(device=device, dtype=torch.float32)
    pts = points if points.ndim == 3 else points[None].expand(len(target), -1, -1)
    # coordinates along / across each line, relative to its anchor (near the map, so float32 is precise;
    # elementwise rather than a matmul, which TF32 could round)
    dx = pts[:, None, :, 0] - anchor[..., 0, None]
    dy = pts[:, None, :, 1] - anchor[..., 1, None]
    ux, uy = direction[..., 0, None], direction[..., 1, None]
    along = dx * ux + dy * uy
    across = dx * uy - dy * ux
    over = along - torch.minimum(torch.maximum(along, lo[..., None]), hi[..., None])
    dist = torch.hypot(across, over) / w
    return torch.where(visible[..., None], dist, math.inf)


class EpipolarDistances:
    """:func:`epipolar_distances` of one batch of (target, source) pairs for any map size, computed once per size:
    ``EpipolarDistances(target, source)(h, w) -> (B, h·w, h·w)`` on ``device`` (default: the cameras')."""

    def __init__(self, target: Cameras, source: Cameras, device: torch.device | str | None = None) -> None:
        self.target, self.source, self.device = target, source, device
        self._cache: dict[tuple[int, int, str], Tensor] = {}

    def __call__(self, h: int, w: int, device: torch.device | str | None = None) -> Tensor:
        device = device if device is not None else self.device
        key = (int(h), int(w), str(device))
        if key not in self._cache:
            self._cache[key] = epipolar_distances(self.target, self.source, (h, w), device=device)
        return self._cache[key]


class EpipolarBias(nn.Module):
    """The per-head bias ``a_k · exp(−½·(d·w/ω_k)²)`` of one attention block (module docstring).

    Parameters: ``strength (heads,)`` (``a_k``, initial ``strength``) and ``log_width (heads,)`` (``log ω_k``, ω in
    map pixels, initial ``width``). ``forward(distances (B, N, M), map_width) -> (B, heads, N, M)`` float32.
    """

    def __init__(self, heads: int, strength: float = 1.0, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"the epipolar bias width must be > 0 (map pixels), got {width}")
        self.strength = nn.Parameter(torch.full((heads,), float(strength)))
        self.log_width = nn.Parameter(torch.full((heads,), math.log(width)))

    def forward(self, distances: Tensor, map_width: int) -> Tensor:
        # inf (an unseen ray) -> a distance far enough for exp() to give exactly 0, with a finite gradient
        d = distances.float().clamp(max=1e3)[:, None] * map_width
        z = d / self.log_width.float().exp()[None, :, None, None]
        return self.strength.float()[None, :, None, None] * torch.exp(-0.5 * z * z)
