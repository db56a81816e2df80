"""A small dense-grid radiance field: fit it to posed views, render it from any camera.

Used by the 3D consistency score (:mod:`vantage.eval.consistency`) and ``vantage reconstruct``.
The design follows the explicit-grid radiance fields of DVGO (Sun et al. 2022, "Direct Voxel Grid
Optimization") and Plenoxels (Fridovich-Keil et al. 2022, "Plenoxels: Radiance Fields without
Neural Networks"), reduced to what runs on a CPU at 32-64 px:

* a dense grid of ``(1 + 3, D, D, D)`` raw values over an axis-aligned box: density and RGB
  (no view dependence), sampled with trilinear interpolation (``F.grid_sample``,
  ``align_corners=True``: grid vertex ``k`` sits at ``lo + k (hi - lo) / (D - 1)``);
* "post-activation" as in DVGO: interpolate the raw value, then ``σ = softplus(raw + shift)``
  (density per *voxel length*) and ``rgb = sigmoid(raw_rgb)``; the shift makes the initial
  opacity of one voxel ``alpha_init``;
* per ray, ``samples`` points between the ray's entry and exit of the box (stratified while
  fitting, midpoints when rendering), alpha compositing
  ``C = Σ T_i α_i c_i + (1 − Σ T_i α_i) · background`` with ``α_i = 1 − exp(−σ_i δ_i / voxel)``;
* Adam on random batches of rays of all views, with a total-variation regulariser on both grids
  (Plenoxels), a small binary-entropy penalty on each ray's opacity, coarse-to-fine upsampling of
  the grid (by default one doubling at a third of the steps) and empty-space skipping: cells
  whose opacity over one voxel length falls below ``prune_alpha`` are emptied and skipped
  (like DVGO's mask cache), which both speeds the fit up and removes haze.

Conventions: images ``(N, 3, H, W)`` in [-1, 1]; :class:`~vantage.cameras.Cameras` with OpenCV
axes and pixel intrinsics (pixel centres at +0.5, rays from ``Cameras.rays()``); depth is
camera-z distance (0 = background, i.e. opacity below 0.5). Fitting is seeded and deterministic
on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vantage.cameras import Cameras

__all__ = ["Field", "FitConfig", "fit_field", "render", "render_field", "render_rays", "ray_box", "occupancy_grid",
           "parse_background"]


_EMPTY = -30.0  # raw density of cells removed by empty-space skipping (softplus(-30 + shift) ~ 1e-16)


def parse_background(background: Sequence[float] | Tensor | str) -> Tensor:
    """Background colour ``(3,)`` in [0, 1] from "white", "black", a tuple or ``(3,)`` tensor."""
    if isinstance(background, str):
        named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5), "gray": (0.5, 0.5, 0.5)}
        if background in named:
            return torch.tensor(named[background])
        try:
            background = [float(x) for x in background.split(",")]
        except ValueError:
            raise ValueError(f"background must be white, black, grey or 'r,g,b' in [0, 1], got '{background}'") \
                from None
    bg = torch.as_tensor(background, dtype=torch.float32).flatten()
    if bg.numel() != 3 or not ((bg >= 0) & (bg <= 1)).all():
        raise ValueError(f"background must be 3 values in [0, 1], got {bg.tolist()}")
    return bg


@dataclass
class Field:
    """A fitted dense grid.

    Attributes:
        grid: ``(4, D, D, D)`` raw values indexed ``[channel, z, y, x]`` (``grid_sample`` order);
            channel 0 is raw density, 1-3 raw RGB.
        lo, hi: ``(3,)`` world corners of the box (x, y, z).
        background: ``(3,)`` RGB in [0, 1] composited behind the field.
        shift: density activation shift, ``σ = softplus(raw + shift)``.
    """

    grid: Tensor
    lo: Tensor
    hi: Tensor
    background: Tensor
    shift: float

    @property
    def resolution(self) -> int:
        return self.grid.shape[-1]

    @property
    def voxel(self) -> float:
        """Edge length of one voxel in world units (the largest of the three axes)."""
        return float(((self.hi - self.lo) / (self.resolution - 1)).max())

    def sigma_grid(self) -> Tensor:
        """``(D, D, D)`` density per voxel length at the grid vertices, ``[z, y, x]``."""
        return F.softplus(self.grid[0] + self.shift)

    def rgb_grid(self) -> Tensor:
        """``(3, D, D, D)`` RGB in [0, 1] at the grid vertices."""
        return torch.sigmoid(self.grid[1:])

    def query(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Density ``(P,)`` (per voxel length) and RGB ``(P, 3)`` at world points ``(P, 3)``."""
        raw = _sample(self.grid, self.lo, self.hi, points.reshape(1, -1, 3)).reshape(4, -1)
        return F.softplus(raw[0] + self.shift), torch.sigmoid(raw[1:]).T

    def state_dict(self) -> dict:
        return {"grid": self.grid.detach().cpu(), "lo": self.lo.cpu(), "hi": self.hi.cpu(),
                "background": self.background.cpu(), "shift": self.shift}

    @classmethod
    def from_state_dict(cls, d: dict) -> Field:
        return cls(d["grid"], d["lo"], d["hi"], d["background"], float(d["shift"]))

    def to(self, device: torch.device | str) -> Field:
        return Field(self.grid.to(device), self.lo.to(device), self.hi.to(device), self.background.to(device),
                     self.shift)


@dataclass
class FitConfig:
    """Settings of :func:`fit_field`. The defaults were chosen on 32 px synthetic views (see
    ``docs/consistency.md``); use ``grid`` about the image side (32 for 32 px, 48-64 for 64 px)."""

    grid: int = 48  # final grid resolution D (D³ vertices over the box)
    iters: int = 500  # Adam steps
    batch_rays: int = 1024  # random rays (of all views) per step
    samples: int | None = None  # points per ray; default 1.5 x the current grid resolution
    lr: float = 0.1  # Adam learning rate of the raw grid values (as DVGO)
    tv_density: float = 1e-3  # total-variation weight on raw density
    tv_color: float = 1e-3  # total-variation weight on raw RGB
    entropy: float = 1e-2  # weight of the binary entropy of each ray's opacity (pushes rays to 0 or 1)
    alpha_init: float = 1e-3  # initial opacity of one voxel length
    upsample_at: tuple[int, ...] | None = None  # steps at which the grid doubles; None: once at iters // 3
    prune_every: int = 25  # refresh the empty-space mask every this many steps; 0: no skipping
    prune_after: int = 50  # first step that skips empty space
    prune_alpha: float = 1e-2  # a cell is empty when its opacity over one voxel length is below this
    seed: int = 0


def ray_box(origins: Tensor, dirs: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test: ``(near, far, hit)`` ``(R,)`` of rays ``(R, 3)`` with the box ``[lo, hi]``.

    ``near`` is clamped at 0 (a camera inside the box starts at its centre).
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    return near, torch.where(hit, far, near), hit


def _sample(grid: Tensor, lo: Tensor, hi: Tensor, points: Tensor) -> Tensor:
    """Trilinear samples ``(C, *points.shape[:-1])`` of ``grid (C, D, D, D)`` at world ``points (..., 3)``."""
    norm = (points - lo) / (hi - lo) * 2 - 1  # (x, y, z) in [-1, 1]
    out = F.grid_sample(grid[None], norm.reshape(1, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out.reshape(grid.shape[0], *points.shape[:-1])


def render_rays(field: Field, origins: Tensor, dirs: Tensor, *, samples: int | None = None,
                generator: torch.Generator | None = None, grid: Tensor | None = None,
                occupancy: Tensor | None = None) -> dict[str, Tensor]:
    """Composite rays ``(R, 3)`` through ``field``.

    ``generator`` given: stratified samples (one uniform draw per interval); otherwise midpoints.
    ``grid`` overrides ``field.grid`` (the tensor being optimised). ``occupancy`` ``(D, D, D)`` bool
    (``[z, y, x]``, any ``D``) skips samples in unoccupied cells (density taken as 0; used while
    fitting, like DVGO's mask cache). Returns ``rgb (R, 3)`` in [0, 1] (background composited),
    ``opacity (R,)``, ``t (R,)`` the expected ray distance of the visible surface (normalised by
    opacity; 0 where opacity is 0) and ``weights (R, S)``.
    """
    g = field.grid if grid is None else grid
    n_s = samples or max(8, round(1.5 * g.shape[-1]))
    n_r = origins.shape[0]
    near, far, hit = ray_box(origins, dirs, field.lo, field.hi)
    u = torch.arange(n_s, dtype=origins.dtype, device=origins.device)
    if generator is not None:
        u = u + torch.rand(n_r, n_s, generator=generator, dtype=origins.dtype).to(origins.device)
    else:
        u = (u + 0.5).expand(n_r, n_s)
    span = (far - near)[:, None]
    t = near[:, None] + span * (u / n_s)  # (R, S)
    delta = (span / n_s).expand_as(t)  # interval length per sample (world units)
    pts = origins[:, None, :] + dirs[:, None, :] * t[..., None]
    voxel = float(((field.hi - field.lo) / (g.shape[-1] - 1)).max())
    active = hit[:, None].expand(n_r, n_s)
    if occupancy is not None:
        d_o = occupancy.shape[-1]
        cell = ((pts - field.lo) / (field.hi - field.lo) * (d_o - 1)).round().long().clamp(0, d_o - 1)
        active = active & occupancy[cell[..., 2], cell[..., 1], cell[..., 0]]
    if bool(active.all()):
        raw = _sample(g, field.lo, field.hi, pts)  # (4, R, S)
        sigma, color = F.softplus(raw[0] + field.shift), torch.sigmoid(raw[1:])
    else:
        raw = _sample(g, field.lo, field.hi, pts[active])  # (4, A)
        sigma = torch.zeros(n_r, n_s, dtype=raw.dtype, device=raw.device).masked_scatter(
            active, F.softplus(raw[0] + field.shift))
        color = torch.zeros(3, n_r, n_s, dtype=raw.dtype, device=raw.device).masked_scatter(
            active.expand(3, n_r, n_s), torch.sigmoid(raw[1:]))
    alpha = 1.0 - torch.exp(-sigma * delta / voxel)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], 1), 1)
    w = alpha * trans
    opacity = w.sum(1)
    rgb = torch.einsum("rs,crs->rc", w, color) + (1.0 - opacity)[:, None] * field.background
    t_exp = (w * t).sum(1) / opacity.clamp_min(1e-6) * (opacity > 1e-6)
    return {"rgb": rgb, "opacity": opacity, "t": t_exp, "weights": w}


def occupancy_grid(grid: Tensor, shift: float, threshold: float = 1e-4) -> Tensor:
    """``(D, D, D)`` bool: cells whose opacity over one voxel length exceeds ``threshold``,
    dilated by one cell (so that interpolation near a surface is never cut off)."""
    alpha = 1.0 - torch.exp(-F.softplus(grid[0] + shift))
    occ = (alpha > threshold).float()[None, None]
    return F.max_pool3d(occ, kernel_size=3, stride=1, padding=1)[0, 0] > 0


def _tv(grid: Tensor) -> Tensor:
    """Mean squared difference of neighbouring voxels along each axis, summed over axes ``(C,)``."""
    return torch.stack([grid.diff(dim=d).pow(2).flatten(1).mean(1) for d in (1, 2, 3)]).sum(0)


def _check_views(images: Tensor, cameras: Cameras) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be (N, 3, H, W) in [-1, 1], got {shape}")
    if not isinstance(cameras, Cameras):
        raise TypeError(f"cameras must be vantage.cameras.Cameras, got {type(cameras).__name__}")
    n, _, h, w = images.shape
    if tuple(cameras.shape) != (n,):
        raise ValueError(f"cameras must have shape ({n},) to match the {n} images, got {tuple(cameras.shape)}")
    if (cameras.width, cameras.height) != (w, h):
        raise ValueError(f"cameras are for {cameras.width}x{cameras.height} images but the images are {w}x{h}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"images must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")


def fit_field(images: Tensor, cameras: Cameras, *, background: Sequence[float] | Tensor | str = "white",
              bbox: tuple[Sequence[float], Sequence[float]] | float = 1.0, grid: int = 48, iters: int = 400,
              seed: int = 0, progress: bool = False, device: torch.device | str | None = None,
              config: FitConfig | None = None, **overrides) -> Field:
    """Fit a :class:`Field` to views ``images (N, 3, H, W)`` in [-1, 1] seen by ``cameras (N,)``.

    ``bbox`` is the box ``(lo (3,), hi (3,))`` in world units, or a half side ``r`` for
    ``[-r, r]³`` (default: ``[-1, 1]³``, which holds the synthetic objects). ``background`` is the
    colour the views were composited on. ``config`` or keywords set the other :class:`FitConfig`
    fields (``batch_rays``, ``samples``, ``lr``, ``tv_density``, ``tv_color``, ``entropy``,
    ``upsample_at``, ``prune_*``). ``progress`` shows a tqdm bar. The fit runs on ``device``
    (default: the images' device). Deterministic for a given ``seed`` on CPU.
    """
    _check_views(images, cameras)
    cfg = config or FitConfig()
    cfg = FitConfig(**{**cfg.__dict__, "grid": grid, "iters": iters, "seed": seed, **overrides})
    if cfg.grid < 4 or cfg.iters < 0 or cfg.batch_rays < 1:
        raise ValueError(f"need grid >= 4, iters >= 0 and batch_rays >= 1, got grid={cfg.grid}, "
                         f"iters={cfg.iters}, batch_rays={cfg.batch_rays}")
    device = torch.device(device) if device is not None else images.device
    lo, hi = _box(bbox)
    shift = math.log(math.expm1(-math.log1p(-cfg.alpha_init)))  # softplus(shift) = -log(1 - alpha_init)
    up_at = sorted(cfg.upsample_at) if cfg.upsample_at is not None else [cfg.iters // 3] * (cfg.grid >= 16)
    start = max(4, round(cfg.grid / 2 ** len(up_at)))
    field = Field(torch.zeros(4, start, start, start), lo, hi, parse_background(background), shift).to(device)

    o, d = cameras.to(device).rays()
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    target = ((images.to(device) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).reshape(-1, 3)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    param = field.grid.clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=cfg.lr)
    tv_w = torch.tensor([cfg.tv_density] + [cfg.tv_color] * 3, device=device)
    occ = None
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.iters, desc="fitting field", unit="step", leave=False)
    for it in range(cfg.iters):
        if up_at and it >= up_at[0]:  # coarse to fine: double the grid, restart Adam
            up_at.pop(0)
            size = min(cfg.grid, param.shape[-1] * 2 if up_at else cfg.grid)
            with torch.no_grad():
                param = F.interpolate(param[None], size=(size,) * 3, mode="trilinear", align_corners=True)[0]
            param.requires_grad_(True)
            opt = torch.optim.Adam([param], lr=cfg.lr)
        if cfg.prune_every > 0 and it >= cfg.prune_after and (it - cfg.prune_after) % cfg.prune_every == 0:
            occ = occupancy_grid(param.detach(), shift, cfg.prune_alpha)
            with torch.no_grad():  # emptied cells stay empty when rendering (no hidden haze)
                param[0].masked_fill_(~occ, _EMPTY)
        idx = torch.randint(0, o.shape[0], (min(cfg.batch_rays, o.shape[0]),), generator=gen).to(device)
        out = render_rays(field, o[idx], d[idx], samples=cfg.samples, generator=gen, grid=param, occupancy=occ)
        mse = F.mse_loss(out["rgb"], target[idx])
        loss = mse
        if cfg.entropy > 0:
            a = out["opacity"].clamp(1e-4, 1 - 1e-4)
            loss = loss + cfg.entropy * (-(a * a.log() + (1 - a) * (1 - a).log())).mean()
        if cfg.tv_density > 0 or cfg.tv_color > 0:
            # density TV on raw values floored near zero density, so emptied cells (_EMPTY) add nothing
            tv_in = torch.cat([param[:1].clamp_min(shift - 5.0), param[1:]])
            loss = loss + (tv_w * _tv(tv_in)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            if it % 25 == 0 or it == cfg.iters - 1:
                bar.set_postfix(batch_psnr=f"{-10 * math.log10(max(mse.item(), 1e-10)):.2f}")
    if bar is not None:
        bar.close()
    if up_at:  # fewer steps than the schedule: still return the requested resolution
        with torch.no_grad():
            param = F.interpolate(param[None], size=(cfg.grid,) * 3, mode="trilinear", align_corners=True)[0]
    field.grid = param.detach()
    return field


def _box(bbox: tuple[Sequence[float], Sequence[float]] | float) -> tuple[Tensor, Tensor]:
    if isinstance(bbox, (int, float)):
        if bbox <= 0:
            raise ValueError(f"bbox half side must be positive, got {bbox}")
        return torch.full((3,), -float(bbox)), torch.full((3,), float(bbox))
    lo, hi = torch.as_tensor(bbox[0], dtype=torch.float32), torch.as_tensor(bbox[1], dtype=torch.float32)
    if lo.shape != (3,) or hi.shape != (3,) or not (hi > lo).all():
        raise ValueError(f"bbox must be (lo (3,), hi (3,)) with lo < hi per axis, got {lo.tolist()}, {hi.tolist()}")
    return lo, hi


@torch.no_grad()
def render(field: Field, cameras: Cameras, *, samples: int | None = None,
           chunk: int = 16384) -> tuple[Tensor, Tensor, Tensor]:
    """Render ``field`` from ``cameras (N,)``.

    Returns ``images (N, 3, H, W)`` in [-1, 1], ``depth (N, 1, H, W)`` camera-z distance of the
    expected surface (0 where the opacity is below 0.5, the background convention of
    :mod:`vantage.data.views`) and ``opacity (N, 1, H, W)`` in [0, 1].
    """
    if not isinstance(cameras, Cameras):
        raise TypeError(f"cameras must be vantage.cameras.Cameras, got {type(cameras).__name__}")
    cams = cameras.reshape(-1).to(field.grid.device)
    n, h, w = len(cams), cams.height, cams.width
    o, d = cams.rays()
    cos = torch.einsum("nhwc,nc->nhw", d, cams.forward).reshape(-1)  # ray length -> camera z
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    rgb, opa, t = [], [], []
    for s in range(0, o.shape[0], chunk):
        out = render_rays(field, o[s:s + chunk], d[s:s + chunk], samples=samples)
        rgb.append(out["rgb"])
        opa.append(out["opacity"])
        t.append(out["t"])
    rgb_t, opa_t = torch.cat(rgb), torch.cat(opa)
    depth = torch.cat(t) * cos * (opa_t >= 0.5)
    images = (rgb_t * 2 - 1).reshape(n, h, w, 3).permute(0, 3, 1, 2).clamp(-1, 1)
    return images, depth.reshape(n, 1, h, w), opa_t.reshape(n, 1, h, w)


render_field = render  # the name exported by vantage.eval
