"""Pixel-aligned frustum feature volumes and the feature field decoded from them (GeNVS: Chan et al. 2023,
"Generative Novel View Synthesis with 3D-Aware Diffusion Models", ICCV 2023).

Every input view ``(3, H, W)`` is mapped by a 2D network (:class:`FrustumEncoder`) to a volume
``(C, D, h, w)`` aligned with that view's camera frustum: cell ``(k, i, j)`` holds ``C`` features of
the space seen through pixel ``(i, j)`` of an ``h x w`` grid over the image, at depth plane ``k`` of
``D`` planes between ``near`` and ``far`` (camera-z distance, linear in depth or in disparity; see
:func:`depth_planes`). A 3D point is projected into each input camera (OpenCV axes: x right, y down,
z forward; ``K`` in pixels, pixel centres at +0.5), its features are read by trilinear interpolation
(``grid_sample`` with ``align_corners=False``, so normalised ``-1``/``+1`` are the image borders and
the first/last depth bin's outer edges), decoded by a small MLP into a density and ``F`` features,
and mean-pooled over the views that see the point (:class:`FeatureField`; the paper's mean pooling
over input views). Points outside every input frustum have density 0 and zero features.

Volumes of a ragged batch are *packed*: only the ``R`` valid views of a ``(B, N)`` set are encoded,
each row remembers its sample (``batch_index``), so padding slots never cost time or leak into the
result (:class:`FrustumVolumes`).

Depth range: one ``near``/``far`` pair for every view, or one per view (tensors ``(R,)``, e.g. from
:func:`scene_near_far`: each camera's range around a scene ball, "near/far from the object bounds").
:func:`check_finite_cameras` and :func:`scene_depth_check` refuse poses GeNVS cannot use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vantage.cameras import Cameras
from vantage.nn.unet import UNetBackbone

__all__ = ["SPACINGS", "depth_planes", "depth_to_grid", "FrustumEncoder", "FrustumVolumes", "sample_volumes",
           "FeatureField", "scene_near_far", "check_finite_cameras", "scene_depth_check"]

SPACINGS = ("linear", "disparity")

#: with a scene radius, near is clamped to at least this fraction of the radius (a camera inside the scene ball)
MIN_NEAR_FRACTION = 0.01


def _check_range(near: float | Tensor, far: float | Tensor, spacing: str) -> None:
    if isinstance(near, Tensor) or isinstance(far, Tensor):
        n, f = torch.as_tensor(near), torch.as_tensor(far)
        if not (torch.isfinite(n).all() and torch.isfinite(f).all() and (n > 0).all() and (f > n).all()):
            raise ValueError("need finite 0 < near < far (camera-z distances) for every view")
    elif not 0 < near < far:
        raise ValueError(f"need 0 < near < far (camera-z distances), got near={near}, far={far}")
    if spacing not in SPACINGS:
        raise ValueError(f"depth spacing must be one of {SPACINGS}, got {spacing!r}")


def depth_planes(near: float, far: float, depth: int, spacing: str = "linear", *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """``(D,)`` camera-z depths of the centres of the ``D`` depth bins of a frustum volume.

    ``"linear"``: ``z_k = near + (k + 0.5)/D · (far − near)``; ``"disparity"``: ``1/z_k = 1/near +
    (k + 0.5)/D · (1/far − 1/near)`` (finer bins close to the camera). Bin ``k`` is the ``k``-th cell
    along the volume's depth axis, so its centre is where :func:`depth_to_grid` gives ``(2k + 1)/D − 1``.
    """
    _check_range(near, far, spacing)
    s = (torch.arange(depth, dtype=torch.float64) + 0.5) / depth
    z = near + s * (far - near) if spacing == "linear" else 1.0 / (1.0 / near + s * (1.0 / far - 1.0 / near))
    return z.to(dtype=dtype, device=device)


def depth_to_grid(z: Tensor, near: float | Tensor, far: float | Tensor, spacing: str = "linear") -> Tensor:
    """Camera-z depth ``(...)`` -> normalised depth coordinate of ``grid_sample`` (``align_corners=False``):
    ``−1`` at ``near``, ``+1`` at ``far``, linear in depth or disparity. Depths ``<= 0`` map far outside.
    ``near``/``far``: floats or tensors broadcastable to ``z``."""
    if spacing == "linear":
        s = (z - near) / (far - near)
    else:
        s = (1.0 / z.clamp_min(1e-6) - 1.0 / near) / (1.0 / far - 1.0 / near)
        s = torch.where(z > 0, s, torch.full_like(s, 10.0))
    return 2.0 * s - 1.0


class FrustumEncoder(nn.Module):
    """2D UNet mapping each view to a pixel-aligned frustum volume (Chan et al. 2023; the
    paper uses a DeepLabV3+ network, we use our ADM-style :class:`~vantage.nn.unet.UNetBackbone`
    without a noise embedding).

    ``forward(images (R, 3, H, W) in [-1, 1]) -> (R, C, D, h, w)``: the UNet's ``ch`` output channels at
    full resolution are area-averaged to ``h = w = volume_resolution``, then a SiLU and a 3x3 conv give
    ``C·D`` channels, reshaped (channel ``c·D + k`` is feature ``c`` of depth plane ``k``). The wide last
    layer runs at the volume's resolution, not the image's.
    """

    def __init__(self, *, resolution: int, channels: int, depth: int, volume_resolution: int, ch: int,
                 ch_mult: Sequence[int], num_res_blocks: int, attn_resolutions: Sequence[int] = (),
                 norm_groups: int = 8, num_heads: int = 1) -> None:
        super().__init__()
        if not 1 <= volume_resolution <= resolution:
            raise ValueError(f"volume_resolution must be in [1, resolution={resolution}], got {volume_resolution}")
        self.resolution, self.channels, self.depth = resolution, channels, depth
        self.volume_resolution = volume_resolution
        self.unet = UNetBackbone(in_channels=3, out_channels=ch, resolution=resolution, ch=ch,
                                 ch_mult=ch_mult, num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                                 mid_attention=False, mid_res_blocks=1, num_heads=num_heads, groups=norm_groups,
                                 emb_dim=0, zero_init=False)
        self.head = nn.Conv2d(ch, channels * depth, 3, padding=1)

    def forward(self, images: Tensor) -> Tensor:
        R, r = images.shape[0], self.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"the frustum encoder takes (R, 3, {r}, {r}) images, got {tuple(images.shape)}")
        h = self.unet(images)
        if self.volume_resolution != r:
            h = F.adaptive_avg_pool2d(h, self.volume_resolution)
        v = self.volume_resolution
        return self.head(F.silu(h)).reshape(R, self.channels, self.depth, v, v)


@dataclass
class FrustumVolumes:
    """The frustum volumes of the valid views of a batch of view sets, packed.

    Attributes:
        volumes: ``(R, C, D, h, w)``, one per valid view (row ``r`` belongs to sample ``batch_index[r]``).
        w2c: ``(R, 4, 4)`` world-to-camera of each view (OpenCV axes).
        K: ``(R, 3, 3)`` pixel intrinsics of each view, for images of ``width x height``.
        width, height: the input image size the intrinsics refer to (the volume spans the whole image).
        batch_index: ``(R,)`` long, the sample of each row.
        batch_size: ``B``.
        near, far, spacing: the depth range and spacing of the planes (:func:`depth_planes`): floats for every
            row, or ``(R,)`` tensors (one camera-z range per view).
    """

    volumes: Tensor
    w2c: Tensor
    K: Tensor
    width: int
    height: int
    batch_index: Tensor
    batch_size: int
    near: float | Tensor
    far: float | Tensor
    spacing: str = "linear"

    @classmethod
    def from_cameras(cls, volumes: Tensor, cameras: Cameras, batch_index: Tensor, batch_size: int,
                     near: float | Tensor, far: float | Tensor, spacing: str = "linear") -> FrustumVolumes:
        """Build from the ``(R,)`` source :class:`Cameras` of the rows (inverts their poses once); ``near``/``far``
        floats or ``(R,)`` tensors."""
        _check_range(near, far, spacing)
        R = volumes.shape[0]
        if tuple(cameras.shape) != (R,):
            raise ValueError(f"need one camera per volume ({R},), got {tuple(cameras.shape)}")
        rng = []
        for name, v in (("near", near), ("far", far)):
            if isinstance(v, Tensor):
                if tuple(v.shape) != (R,):
                    raise ValueError(f"per-view {name} must have shape ({R},), got {tuple(v.shape)}")
                rng.append(v.to(volumes))
            else:
                rng.append(float(v))
        return cls(volumes, cameras.w2c.to(volumes), cameras.K.to(volumes), cameras.width, cameras.height,
                   batch_index.to(volumes.device), int(batch_size), rng[0], rng[1], spacing)

    def _rows(self, rows: Tensor, batch_index: Tensor, batch_size: int) -> FrustumVolumes:
        pick = [v[rows] if isinstance(v, Tensor) else v for v in (self.near, self.far)]
        return FrustumVolumes(self.volumes[rows], self.w2c[rows], self.K[rows], self.width, self.height, batch_index,
                              batch_size, pick[0], pick[1], self.spacing)

    def samples(self, index: Tensor | Sequence[int]) -> FrustumVolumes:
        """The volumes of samples ``index (b,)`` (in that order, repeats allowed) as a batch of ``b`` samples."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.batch_index.device).flatten()
        match = self.batch_index[None, :] == index[:, None]  # (b, R)
        new_b, rows = match.nonzero(as_tuple=True)  # row-major: grouped by new sample, rows in their order
        return self._rows(rows, new_b, int(index.numel()))

    @staticmethod
    def cat(parts: Sequence[FrustumVolumes]) -> FrustumVolumes:
        """Concatenate batches (sample ``b`` of part ``i`` becomes sample ``offset_i + b``); the parts share image
        size and spacing, and either all have float ranges (equal) or all per-view tensors."""
        if not parts:
            raise ValueError("FrustumVolumes.cat needs at least one part")
        first = parts[0]
        if len(parts) == 1:
            return first
        offsets, total = [], 0
        for p in parts:
            if (p.width, p.height, p.spacing) != (first.width, first.height, first.spacing):
                raise ValueError("FrustumVolumes.cat: parts differ in image size or depth spacing")
            offsets.append(total)
            total += p.batch_size
        rng = []
        for name in ("near", "far"):
            values = [getattr(p, name) for p in parts]
            if all(isinstance(v, Tensor) for v in values):
                rng.append(torch.cat(values))
            elif not any(isinstance(v, Tensor) for v in values) and len(set(values)) == 1:
                rng.append(values[0])
            else:
                raise ValueError(f"FrustumVolumes.cat: parts have different {name} ranges")
        return FrustumVolumes(torch.cat([p.volumes for p in parts]), torch.cat([p.w2c for p in parts]),
                              torch.cat([p.K for p in parts]), first.width, first.height,
                              torch.cat([p.batch_index + o for p, o in zip(parts, offsets)]), total, rng[0], rng[1],
                              first.spacing)


def sample_volumes(vols: FrustumVolumes, points: Tensor) -> tuple[Tensor, Tensor]:
    """Read every view's volume at world points.

    Args:
        vols: the packed volumes (``R`` rows).
        points: ``(B, P, 3)`` world points per sample; row ``r`` reads ``points[batch_index[r]]``.

    Returns:
        ``(features (R, P, C), inside (R, P) bool)``: trilinear samples (0 outside the volume) and
        whether the point lies in the view's frustum (in front of the camera, inside the image, depth
        within ``[near, far]``).
    """
    if points.ndim != 3 or points.shape[0] != vols.batch_size or points.shape[-1] != 3:
        raise ValueError(f"points must be (B={vols.batch_size}, P, 3), got {tuple(points.shape)}")
    pts = points[vols.batch_index].to(vols.volumes.dtype)  # (R, P, 3)
    p_cam = torch.einsum("rij,rpj->rpi", vols.w2c[:, :3, :3], pts) + vols.w2c[:, None, :3, 3]
    z = p_cam[..., 2]
    pix = torch.einsum("rij,rpj->rpi", vols.K, p_cam)
    zs = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    gx = 2.0 * pix[..., 0] / zs / vols.width - 1.0  # pixel centres at +0.5 <-> align_corners=False
    gy = 2.0 * pix[..., 1] / zs / vols.height - 1.0
    near, far = (v[:, None] if isinstance(v, Tensor) else v for v in (vols.near, vols.far))  # (R, 1) or float
    gz = depth_to_grid(z, near, far, vols.spacing)
    grid = torch.stack([gx, gy, gz], dim=-1)  # (R, P, 3) as (x -> w, y -> h, z -> D)
    inside = (z > 0) & (grid.abs() <= 1.0).all(dim=-1)
    out = F.grid_sample(vols.volumes, grid[:, None, None], mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # (R, C, 1, 1, P)
    return out[:, :, 0, 0].transpose(1, 2), inside


class FeatureField(nn.Module):
    """The 3D feature field of a set of input views: ``(density, features)`` at world points.

    Per view, the sampled volume features ``(C,)`` go through an MLP (``layers`` hidden layers of
    ``hidden`` units, SiLU) to ``1 + F`` values: density ``σ = softplus(raw)`` (per world unit) and
    ``F`` features whose first three are RGB (``tanh``, in [-1, 1]). The per-view results are
    mean-pooled over the views whose frustum contains the point (the paper pools across input
    views); a point no view sees has ``σ = 0`` and zero features.

    ``forward(vols, points (B, P, 3)) -> (density (B, P), features (B, P, F))``.
    """

    def __init__(self, in_channels: int, out_features: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        if out_features < 3:
            raise ValueError(f"the field needs at least 3 feature channels (RGB first), got {out_features}")
        if layers < 1 or hidden < 1:
            raise ValueError(f"need layers >= 1 and hidden >= 1, got {layers}, {hidden}")
        mods: list[nn.Module] = []
        c = in_channels
        for _ in range(layers):
            mods += [nn.Linear(c, hidden), nn.SiLU()]
            c = hidden
        mods.append(nn.Linear(c, 1 + out_features))
        self.mlp = nn.Sequential(*mods)
        self.out_features = out_features

    def decode(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., C)`` volume features -> ``(density (...), features (..., F))`` of one view."""
        out = self.mlp(feats)
        rgb, rest = out[..., 1:4].tanh(), out[..., 4:]
        return F.softplus(out[..., 0]), torch.cat([rgb, rest], dim=-1)

    def forward(self, vols: FrustumVolumes, points: Tensor) -> tuple[Tensor, Tensor]:
        feats, inside = sample_volumes(vols, points)
        density, features = self.decode(feats)  # (R, P), (R, P, F)
        w = inside.to(density.dtype)
        B, P = points.shape[:2]
        both = torch.cat([density[..., None], features], dim=-1) * w[..., None]
        total = torch.zeros(B, P, both.shape[-1], dtype=both.dtype, device=both.device).index_add_(
            0, vols.batch_index, both)
        count = torch.zeros(B, P, dtype=w.dtype, device=w.device).index_add_(0, vols.batch_index, w)
        pooled = total / count.clamp_min(1.0)[..., None]
        return pooled[..., 0], pooled[..., 1:]


def _origin_depth(c2w: Tensor) -> Tensor:
    """Camera-z depth ``(...)`` of the world origin for OpenCV camera-to-world poses ``(..., 4, 4)``:
    ``−forward · centre``."""
    return -(c2w[..., :3, 2] * c2w[..., :3, 3]).sum(-1)


def scene_near_far(cameras: Cameras, radius: float) -> tuple[Tensor, Tensor]:
    """Per-camera depth range of a scene ball of ``radius`` at the world origin: ``(near, far)``, each of
    ``cameras.shape``: ``far = z0 + radius``, ``near = max(z0 − radius, MIN_NEAR_FRACTION · radius)`` with
    ``z0`` the camera-z depth of the origin (OpenCV cameras: ``z0 = −forward · centre``). A camera inside the
    ball gets ``near`` clamped to that small positive value; :func:`scene_depth_check` (with ``radius``)
    refuses cameras that do not have the origin in front of them."""
    if not radius > 0:
        raise ValueError(f"scene radius must be > 0, got {radius}")
    z0 = _origin_depth(cameras.c2w)
    return (z0 - radius).clamp_min(MIN_NEAR_FRACTION * radius), z0 + radius


def check_finite_cameras(cameras: Cameras, what: str, valid: Tensor | None = None) -> None:
    """Raise, naming the tensor and the first bad camera, when a pose (``c2w``) or intrinsics (``K``) entry is
    NaN or infinite (NaN fails every comparison, so range checks alone would let it through; ``Cameras()``
    validates its tensors, but one changed in place is not re-checked). ``valid`` (bool, ``cameras.shape``):
    check only those cameras (numbered in that order, as :func:`scene_depth_check` numbers them)."""
    for name, t in (("pose (c2w)", cameras.c2w), ("intrinsics (K)", cameras.K)):
        if valid is not None:
            t = t[valid.to(t.device)]
        flat = ~torch.isfinite(t.reshape(-1, *t.shape[-2:])).flatten(1).all(-1)  # (number of cameras,)
        if flat.any():
            i = int(flat.nonzero()[0, 0])
            raise ValueError(f"genvs: the {what} camera {i} has a non-finite {name} (NaN or inf); check the poses "
                             f"of this data")


def scene_depth_check(cameras: Cameras, near: float, far: float, what: str, *, radius: float | None = None) -> None:
    """Raise when a camera does not see the scene centre (the world origin) between ``near`` and ``far``.

    GeNVS only samples and stores the space between the near and far planes of every camera; an
    object-centred scene at the origin must lie inside that range. A camera whose origin-depth is
    ``<= near`` is *inside* the near plane of the scene (a missing/identity pose puts the camera at
    the origin itself). ``cameras`` has any shape; ``what`` names them in the message. Non-finite poses
    or intrinsics are refused first (:func:`check_finite_cameras`). With ``radius`` (per-camera ranges,
    :func:`scene_near_far`) the check is that the origin lies in front of the camera, beyond the clamped near.
    """
    check_finite_cameras(cameras, what)
    z0 = _origin_depth(cameras.c2w.reshape(-1, 4, 4).double())
    if radius is not None:
        bad = (z0 <= MIN_NEAR_FRACTION * radius).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise ValueError(f"genvs: {what} camera {i} sees the scene centre (world origin) at depth "
                             f"{float(z0[i]):.3g}: it is not in front of the camera (scene_radius={radius:g} sets "
                             f"each camera's near/far around it; a missing or identity pose also gives this: GeNVS "
                             f"needs real camera poses)")
        return
    bad = ((z0 <= near) | (z0 >= far)).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        where = "inside the near plane" if z0[i] <= near else "beyond the far plane"
        raise ValueError(f"genvs: {what} camera {i} sees the scene centre (world origin) at depth {float(z0[i]):.3g}, "
                         f"{where} of the rendering range near={near:g} .. far={far:g} (camera-z); move the camera, "
                         f"or set near/far for this data (a missing or identity pose also gives this: GeNVS needs "
                         f"real camera poses)")
