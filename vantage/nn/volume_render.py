"""Volume rendering of a feature field at a camera: stratified + importance samples, alpha compositing
(Mildenhall et al. 2020, NeRF, Eq. 3 and Sec. 5.2; as used by GeNVS, Chan et al. 2023).

Conventions: cameras are :class:`~vantage.cameras.Cameras` (OpenCV c2w, ``K`` in pixels, pixel
centres at +0.5). A ray of pixel ``(u, v)`` is ``o + z·d`` with ``o`` the camera centre and
``d = R·K⁻¹[u, v, 1]`` (camera-z component 1), so the ray parameter ``z`` *is* the camera-z depth and
``near``/``far`` are camera-z distances, like every depth in vantage. World-space interval lengths are
``δ_world = δ_z·‖K⁻¹[u, v, 1]‖``.

Compositing (:func:`composite`) of ``S`` sorted samples ``z_1 < … < z_S`` in ``[near, far]``: the
samples partition the ray by the midpoints between neighbours (the first interval starts at
``near``, the last ends at ``far``), ``α_i = 1 − exp(−σ_i δ_i)``, ``T_i = exp(−Σ_{j<i} σ_j δ_j)``,
``w_i = T_i α_i``; feature ``= Σ w_i f_i + (1 − Σ w_i)·background``, opacity ``= Σ w_i =
1 − exp(−Σ σ_i δ_i)`` (a constant density σ gives exactly ``1 − exp(−σ (far − near)‖K⁻¹[u,v,1]‖)``), and
depth ``= Σ w_i z_i / opacity`` (0 where the opacity is 0).

Sampling (:func:`render_rays`): ``n_coarse`` stratified depths (one per equal bin, jittered by a
given uniform draw, bin centres without one), then ``n_fine`` importance depths drawn from the coarse
weights by inverse transform sampling (NeRF's hierarchical sampling, with one field for both passes as
in GeNVS); the field is evaluated once at every depth and all ``n_coarse + n_fine`` are composited.
:func:`render_image` renders whole images in chunks of rays (bounding memory), optionally at a lower
resolution, with every random draw made up front from one generator.

Near and far are either one float pair for the whole batch or per-sample tensors ``(B,)`` (GeNVS's
``scene_radius``: each camera's own range around the scene); the float path is computed exactly as
before the tensor path existed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from vantage.cameras import Cameras

__all__ = ["FieldFn", "Range", "camera_rays", "sample_pdf", "composite", "render_rays", "render_image", "upsample"]

#: ``field(points (B, P, 3)) -> (density (B, P), features (B, P, F))``
FieldFn = Callable[[Tensor], tuple[Tensor, Tensor]]

#: a near or far camera-z distance: one float for every ray, or a tensor (per sample, see each function)
Range = float | Tensor


def _per_sample(value: Range, B: int, like: Tensor, name: str) -> Tensor:
    """``(B,)`` tensor of ``value`` (a float, or a ``(B,)`` tensor checked for shape), dtype/device of ``like``."""
    if not isinstance(value, Tensor):
        return torch.full((B,), float(value), dtype=like.dtype, device=like.device)
    if tuple(value.shape) != (B,):
        raise ValueError(f"per-sample {name} must have shape ({B},), got {tuple(value.shape)}")
    return value.to(device=like.device, dtype=like.dtype)


def camera_rays(cameras: Cameras) -> tuple[Tensor, Tensor, Tensor]:
    """Rays of every pixel of ``cameras (B,)``, row-major.

    Returns ``(origins (B, H·W, 3), dirs (B, H·W, 3), scale (B, H·W))`` with ``dirs = R·K⁻¹[u, v, 1]``
    (camera-z component 1: ``origins + z·dirs`` is the point at camera-z depth ``z``) and
    ``scale = ‖dirs‖`` (world length per unit of depth).
    """
    if len(cameras.shape) != 1:
        raise ValueError(f"camera_rays takes a (B,) batch of cameras, got shape {tuple(cameras.shape)}")
    uv = cameras.pixel_grid().reshape(-1, 2)
    pix = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=-1)  # (P, 3)
    d_cam = torch.einsum("bij,pj->bpi", torch.linalg.inv(cameras.K), pix)
    dirs = torch.einsum("bij,bpj->bpi", cameras.R, d_cam)
    origins = cameras.centers[:, None, :].expand_as(dirs)
    return origins, dirs, d_cam.norm(dim=-1)


def sample_pdf(edges: Tensor, weights: Tensor, u: Tensor) -> Tensor:
    """Inverse transform sampling of a piecewise-constant density (NeRF, Sec. 5.2).

    ``edges (..., S + 1)`` bin edges, ``weights (..., S)`` non-negative bin weights (need not sum to
    one; a small constant is added so empty rays sample uniformly), ``u (..., M)`` uniforms in
    [0, 1). Returns ``(..., M)`` samples, detached (no gradient flows into the sample positions).
    """
    with torch.no_grad():
        w = weights.detach() + 1e-5
        cdf = torch.cumsum(w / w.sum(-1, keepdim=True), dim=-1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], dim=-1)  # (..., S + 1)
        u = u.contiguous().clamp(0.0, 1.0 - 1e-6)
        hi = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[-1] - 1)
        lo = hi - 1
        c_lo, c_hi = cdf.gather(-1, lo), cdf.gather(-1, hi)
        e_lo, e_hi = edges.gather(-1, lo), edges.gather(-1, hi)
        t = (u - c_lo) / (c_hi - c_lo).clamp_min(1e-12)
        return e_lo + t * (e_hi - e_lo)


def composite(density: Tensor, features: Tensor, z: Tensor, near: Range, far: Range, scale: Tensor,
              background: Tensor) -> dict[str, Tensor]:
    """Alpha-composite sorted samples along rays (module docstring).

    Args:
        density: ``(..., S)`` σ per world unit (>= 0).
        features: ``(..., S, F)``.
        z: ``(..., S)`` sorted camera-z depths in ``[near, far]``.
        near, far: floats, or tensors broadcastable to ``(..., 1)`` (e.g. ``(B, 1, 1)`` for ``z (B, P, S)``).
        scale: ``(...)`` world length per unit depth of each ray.
        background: ``(F,)`` feature composited behind the field.

    Returns ``{"features" (..., F), "opacity" (...), "depth" (...), "weights" (..., S)}``.
    """
    nr = near.to(z).expand_as(z[..., :1]) if isinstance(near, Tensor) else torch.full_like(z[..., :1], near)
    fr = far.to(z).expand_as(z[..., :1]) if isinstance(far, Tensor) else torch.full_like(z[..., :1], far)
    edges = torch.cat([nr, 0.5 * (z[..., 1:] + z[..., :-1]), fr], dim=-1)
    delta = (edges[..., 1:] - edges[..., :-1]).clamp_min(0.0) * scale[..., None]
    tau = density * delta  # optical depth of each interval
    acc = torch.cumsum(tau, dim=-1)
    trans = torch.exp(-(acc - tau))  # exclusive: T_i = exp(−Σ_{j<i} τ_j)
    w = trans * (1.0 - torch.exp(-tau))
    opacity = 1.0 - torch.exp(-acc[..., -1])
    feats = torch.einsum("...s,...sf->...f", w, features) + (1.0 - opacity)[..., None] * background.to(features)
    depth = (w * z).sum(-1) / opacity.clamp_min(1e-6) * (opacity > 1e-6)
    return {"features": feats, "opacity": opacity, "depth": depth, "weights": w}


def render_rays(field: FieldFn, origins: Tensor, dirs: Tensor, scale: Tensor, *, near: Range, far: Range,
                n_coarse: int, n_fine: int, background: Tensor, jitter: Tensor | None = None,
                u_fine: Tensor | None = None) -> dict[str, Tensor]:
    """Render rays ``(B, P, 3)`` (origins, camera-z-scaled ``dirs``; ``scale (B, P)``) through ``field``.

    ``near``/``far``: camera-z range, floats for every ray or ``(B,)`` tensors (one range per sample).

    ``jitter (B, P, n_coarse)`` in [0, 1) places each stratified sample in its bin (None: bin centres);
    ``u_fine (B, P, n_fine)`` are the uniforms of the importance samples (None: ``(k + 0.5)/n_fine``).
    Returns :func:`composite`'s dict (``weights`` over the sorted ``n_coarse + n_fine`` samples) plus
    ``"z"`` ``(B, P, S)``.
    """
    B, P = origins.shape[:2]
    dev, dt = origins.device, origins.dtype
    if isinstance(near, Tensor) or isinstance(far, Tensor):  # one range per sample: edges (B, 1, n_coarse + 1)
        nr, fr = _per_sample(near, B, origins, "near"), _per_sample(far, B, origins, "far")
        t = torch.linspace(0.0, 1.0, n_coarse + 1, dtype=dt, device=dev)
        edges = (nr[:, None] + (fr - nr)[:, None] * t)[:, None, :]
        near, far = nr[:, None, None], fr[:, None, None]  # (B, 1, 1), broadcast by composite
    else:
        edges = torch.linspace(near, far, n_coarse + 1, dtype=dt, device=dev)
    offset = torch.full((n_coarse,), 0.5, dtype=dt, device=dev) if jitter is None else jitter.to(dev, dt)
    z = edges[..., :-1] + offset * (edges[..., 1:] - edges[..., :-1])  # (n_coarse,) or (B, P, n_coarse)
    z = z.expand(B, P, n_coarse)

    def query(zz: Tensor) -> tuple[Tensor, Tensor]:
        pts = origins[:, :, None, :] + dirs[:, :, None, :] * zz[..., None]  # (B, P, S, 3)
        dens, feats = field(pts.reshape(B, -1, 3))
        return dens.reshape(B, P, -1), feats.reshape(B, P, zz.shape[-1], -1)

    dens, feats = query(z)
    if n_fine > 0:
        coarse = composite(dens, feats, z, near, far, scale, background)
        if u_fine is None:
            u_fine = ((torch.arange(n_fine, dtype=dt, device=dev) + 0.5) / n_fine).expand(B, P, n_fine)
        z_f = sample_pdf(edges.expand(B, P, n_coarse + 1), coarse["weights"], u_fine.to(dev, dt))
        d_f, f_f = query(z_f)
        z, order = torch.sort(torch.cat([z, z_f], dim=-1), dim=-1)
        dens = torch.cat([dens, d_f], dim=-1).gather(-1, order)
        feats = torch.cat([feats, f_f], dim=-2).gather(-2, order[..., None].expand(*order.shape, feats.shape[-1]))
    out = composite(dens, feats, z, near, far, scale, background)
    out["z"] = z
    return out


def render_image(field: FieldFn, cameras: Cameras, *, near: Range, far: Range, n_coarse: int, n_fine: int,
                 background: Tensor, resolution: int | None = None, chunk: int = 4096,
                 generator: torch.Generator | None = None, use_checkpoint: bool = False,
                 subset: Callable[[Tensor], FieldFn] | None = None) -> dict[str, Tensor]:
    """Render the field at ``cameras (B,)``.

    Args:
        field: ``field(points (B, P, 3)) -> (density (B, P), features (B, P, F))``.
        near, far: camera-z range of every ray: floats, or ``(B,)`` tensors (one range per camera).
        resolution: render ``resolution x resolution`` pixels (the cameras are resized, so the image
            covers the same view); None: the cameras' own size.
        chunk: at most this many rays (over the whole batch) per field evaluation. With ``B <= chunk``
            every call takes all ``B`` samples and ``chunk // B`` rays of each; with ``B > chunk`` it takes
            ``chunk`` samples (one ray each), which needs ``subset``.
        subset: ``subset(samples (b,) long) -> FieldFn`` of those samples only (points ``(b, P, 3)``); needed
            only when ``B > chunk`` (a ``ValueError`` otherwise).
        generator: stratified jitter and importance uniforms are drawn from it (on its device), all
            up front in the order (jitter ``(B, P, n_coarse)``, uniforms ``(B, P, n_fine)``); None:
            deterministic bin centres and evenly spaced uniforms.
        use_checkpoint: recompute each chunk in the backward pass (activation checkpointing) so that
            training memory is bounded by one chunk too.

    Returns ``{"features" (B, F, h, w), "opacity" (B, 1, h, w), "depth" (B, 1, h, w)}`` (camera-z depth of the
    expected termination, 0 where nothing is hit).
    """
    if n_coarse < 1 or n_fine < 0 or chunk < 1:
        raise ValueError(f"need n_coarse >= 1, n_fine >= 0, chunk >= 1; got {n_coarse}, {n_fine}, {chunk}")
    cams = cameras if resolution is None else cameras.resize(resolution, resolution)
    h, w = cams.height, cams.width
    origins, dirs, scale = camera_rays(cams)
    B, P = scale.shape
    jitter = u_fine = None
    if generator is not None:
        gdev = generator.device
        jitter = torch.rand(B, P, n_coarse, generator=generator, device=gdev).to(origins.device)
        if n_fine:
            u_fine = torch.rand(B, P, n_fine, generator=generator, device=gdev).to(origins.device)
    if B <= chunk:
        feats, opacity, depth = _render_chunks(field, origins, dirs, scale, jitter, u_fine, near, far,
                                               step=max(1, chunk // max(B, 1)), n_coarse=n_coarse, n_fine=n_fine,
                                               background=background, use_checkpoint=use_checkpoint)
    else:  # more cameras than rays per chunk: groups of `chunk` samples, one ray of each per call
        if subset is None:
            raise ValueError(f"render_image: {B} cameras but chunk={chunk} rays per field call; a chunk of at most "
                             f"{chunk} rays needs subset= (the field of a subset of the samples) or a larger chunk")
        groups = []
        for g0 in range(0, B, chunk):
            idx = torch.arange(g0, min(B, g0 + chunk), device=origins.device)
            sel = slice(g0, g0 + chunk)
            groups.append(_render_chunks(
                subset(idx), origins[sel], dirs[sel], scale[sel], None if jitter is None else jitter[sel],
                None if u_fine is None else u_fine[sel], near if not isinstance(near, Tensor) else near[sel],
                far if not isinstance(far, Tensor) else far[sel], step=1, n_coarse=n_coarse, n_fine=n_fine,
                background=background, use_checkpoint=use_checkpoint))
        feats, opacity, depth = (torch.cat(parts, dim=0) for parts in zip(*groups))
    return {"features": feats.transpose(1, 2).reshape(B, -1, h, w), "opacity": opacity.reshape(B, 1, h, w),
            "depth": depth.reshape(B, 1, h, w)}


def _render_chunks(field: FieldFn, origins: Tensor, dirs: Tensor, scale: Tensor, jitter: Tensor | None,
                   u_fine: Tensor | None, near: Range, far: Range, *, step: int, n_coarse: int, n_fine: int,
                   background: Tensor, use_checkpoint: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Render rays ``(b, P, ·)`` in chunks of ``step`` rays per sample: ``(features (b, P, F), opacity (b, P),
    depth (b, P))``."""
    outs: list[tuple[Tensor, Tensor, Tensor]] = []

    def run(o: Tensor, d: Tensor, s: Tensor, j: Tensor | None, u: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        r = render_rays(field, o, d, s, near=near, far=far, n_coarse=n_coarse, n_fine=n_fine,
                        background=background, jitter=j, u_fine=u)
        return r["features"], r["opacity"], r["depth"]

    for lo in range(0, scale.shape[1], step):
        sl = slice(lo, lo + step)
        args = (origins[:, sl], dirs[:, sl], scale[:, sl], None if jitter is None else jitter[:, sl],
                None if u_fine is None else u_fine[:, sl])
        if use_checkpoint and torch.is_grad_enabled():
            outs.append(checkpoint(run, *args, use_reentrant=False))
        else:
            outs.append(run(*args))
    return tuple(torch.cat(parts, dim=1) for parts in zip(*outs))  # type: ignore[return-value]


def upsample(image: Tensor, size: int) -> Tensor:
    """Bilinear resize of ``(B, C, h, w)`` to ``size x size`` (identity when already that size)."""
    if image.shape[-2:] == (size, size):
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
