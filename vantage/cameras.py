"""Cameras in one convention, and conversions from every format vantage reads.

The internal convention (documented in ``docs/cameras.md``):

* ``c2w`` is a ``(..., 4, 4)`` camera-to-world matrix with **OpenCV camera axes**:
  x right, y down, z forward (the camera looks along its +z axis).
* ``K`` is a ``(..., 3, 3)`` intrinsics matrix **in pixels**, with pixel *centres* at
  ``+0.5``: the pixel in row ``i`` and column ``j`` covers ``[j, j+1) x [i, i+1)`` and its
  centre is ``(u, v) = (j + 0.5, i + 0.5)``.
* ``width`` and ``height`` are the image size in pixels, shared by the whole batch.
* World units are arbitrary. The synthetic data and the spherical helpers use world +z as
  "up": polar angle from +z, azimuth ``atan2(y, x)``, radius from the origin.

Outside conventions handled here:

* OpenGL / Blender / nerfstudio camera axes: x right, y up, z backward. Converting is a flip
  of the camera's y and z axes: ``c2w_cv = c2w_gl @ diag(1, -1, -1, 1)``.
* COLMAP and SRN store OpenCV axes (COLMAP as world-to-camera, SRN as camera-to-world).
* RealEstate10K: OpenCV world-to-camera 3x4, intrinsics normalised by width/height.
* NMR/DVR: ``world_mat`` is an OpenCV world-to-camera 4x4, ``camera_mat`` holds intrinsics
  normalised to ``[-1, 1]`` image coordinates (``u_ndc = (u_px / W) * 2 - 1``).
* Zero-1-to-3 (Objaverse renders): 3x4 world-to-camera in Blender's camera axes, world +z up.

Every conversion has a matching inverse and is tested by round trips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Cameras",
    "FLIP_YZ",
    "look_at",
    "intrinsics_from_fov",
    "cartesian_to_spherical",
    "spherical_to_cartesian",
    "zero123_relative_pose",
    "ring_cameras",
    "orbit_cameras",
    "hemisphere_cameras",
    "alternating_order",
]

# diag(1, -1, -1, 1): swaps OpenCV <-> OpenGL camera axes (its own inverse).
FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def _flip(like: Tensor) -> Tensor:
    return FLIP_YZ.to(dtype=like.dtype, device=like.device)


def _check_matrix(name: str, m: Tensor, rows: int, cols: int) -> None:
    if not isinstance(m, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if m.ndim < 2 or m.shape[-2:] != (rows, cols):
        raise ValueError(f"{name} must have shape (..., {rows}, {cols}), got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or Inf values")


def to_homogeneous(m: Tensor, name: str = "matrix") -> Tensor:
    """Pad a ``(..., 3, 4)`` matrix with the row ``[0, 0, 0, 1]`` to ``(..., 4, 4)``."""
    if m.ndim >= 2 and m.shape[-2:] == (4, 4):
        return m
    if m.ndim < 2 or m.shape[-2:] != (3, 4):
        raise ValueError(f"{name} must have shape (..., 4, 4) or (..., 3, 4), got {tuple(m.shape)}")
    _check_matrix(name, m, 3, 4)
    bottom = torch.zeros(*m.shape[:-2], 1, 4, dtype=m.dtype, device=m.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([m, bottom], dim=-2)


def invert_rigid(m: Tensor, name: str = "pose") -> Tensor:
    """Invert ``(..., 4, 4)`` rigid (or similarity) transforms; raise on singular ones."""
    m = to_homogeneous(m, name)
    det = torch.linalg.det(m[..., :3, :3].double())
    if (det.abs() < 1e-9).any():
        bad = torch.nonzero(det.abs() < 1e-9).flatten().tolist()
        raise ValueError(f"{name} is not invertible (rotation block has determinant ~0) at index {bad}")
    return torch.linalg.inv(m.double()).to(m.dtype)


def intrinsics_from_fov(
    fov_deg: float, width: int, height: int | None = None, *, axis: str = "x"
) -> Tensor:
    """Pixel intrinsics ``(3, 3)`` of a pinhole camera with the given field of view.

    ``axis`` says which image side ``fov_deg`` spans ("x": width, "y": height). The
    principal point is the image centre ``(W/2, H/2)`` (pixel centres at +0.5).
    """
    height = width if height is None else height
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    side = width if axis == "x" else height
    f = 0.5 * side / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenCV camera-to-world ``(..., 4, 4)`` for cameras at ``eye`` looking at ``target``.

    ``eye``, ``target``: ``(..., 3)``; ``target`` defaults to the origin and ``up`` to world
    +z. The camera's y axis (down in the image) is as close to ``-up`` as possible. When the
    viewing direction is parallel to ``up`` (a camera on the pole) world +y is used instead.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32) if not isinstance(eye, Tensor) else eye
    if eye.shape[-1] != 3:
        raise ValueError(f"eye must have shape (..., 3), got {tuple(eye.shape)}")
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target).to(eye)
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up)
    up = up.to(eye).expand_as(eye)
    forward = target - eye
    norm = forward.norm(dim=-1, keepdim=True)
    if (norm < 1e-9).any():
        raise ValueError("look_at: eye and target coincide")
    forward = forward / norm
    right = torch.linalg.cross(forward, up, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    if degenerate.any():
        alt = torch.tensor([0.0, 1.0, 0.0]).to(eye).expand_as(eye)
        right = torch.where(degenerate, torch.linalg.cross(forward, alt, dim=-1), right)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = down
    c2w[..., :3, 2] = forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def cartesian_to_spherical(xyz: Tensor) -> Tensor:
    """``(..., 3)`` points to ``(..., 3)`` = (polar from +z, azimuth atan2(y, x), radius).

    Angles in radians; azimuth in ``(-pi, pi]``; polar in ``[0, pi]``.
    """
    r = xyz.norm(dim=-1)
    polar = torch.acos((xyz[..., 2] / r.clamp_min(1e-12)).clamp(-1.0, 1.0))
    azimuth = torch.atan2(xyz[..., 1], xyz[..., 0])
    return torch.stack([polar, azimuth, r], dim=-1)


def spherical_to_cartesian(polar: Tensor, azimuth: Tensor, radius: Tensor) -> Tensor:
    """Inverse of :func:`cartesian_to_spherical`; arguments broadcast, result ``(..., 3)``."""
    polar, azimuth, radius = torch.broadcast_tensors(
        torch.as_tensor(polar, dtype=torch.float32),
        torch.as_tensor(azimuth, dtype=torch.float32),
        torch.as_tensor(radius, dtype=torch.float32),
    )
    s = torch.sin(polar)
    return torch.stack([radius * s * torch.cos(azimuth), radius * s * torch.sin(azimuth),
                        radius * torch.cos(polar)], dim=-1)


@dataclass
class Cameras:
    """A batch of pinhole cameras of one image size.

    Attributes:
        c2w: ``(..., 4, 4)`` camera-to-world, OpenCV axes (x right, y down, z forward).
        K: ``(..., 3, 3)`` intrinsics in pixels, pixel centres at +0.5.
        width, height: image size in pixels.
    """

    c2w: Tensor
    K: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        self.c2w = to_homogeneous(torch.as_tensor(self.c2w, dtype=torch.float32)
                                  if not isinstance(self.c2w, Tensor) else self.c2w, "Cameras.c2w")
        _check_matrix("Cameras.c2w", self.c2w, 4, 4)
        if not isinstance(self.K, Tensor):
            self.K = torch.as_tensor(self.K, dtype=self.c2w.dtype)
        _check_matrix("Cameras.K", self.K, 3, 3)
        if self.K.shape[:-2] != self.c2w.shape[:-2]:
            self.K = self.K.expand(*self.c2w.shape[:-2], 3, 3).clone()
        self.K = self.K.to(self.c2w)
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    # ------------------------------------------------------------------ batching
    @property
    def shape(self) -> torch.Size:
        return self.c2w.shape[:-2]

    def __len__(self) -> int:
        return self.shape[0] if len(self.shape) else 1

    def __getitem__(self, idx) -> Cameras:
        if not isinstance(idx, tuple):
            idx = (idx,)
        idx = idx + (slice(None), slice(None))
        return Cameras(self.c2w[idx], self.K[idx], self.width, self.height)

    def to(self, *args, **kwargs) -> Cameras:
        return Cameras(self.c2w.to(*args, **kwargs), self.K.to(*args, **kwargs), self.width, self.height)

    def reshape(self, *shape: int) -> Cameras:
        return Cameras(self.c2w.reshape(*shape, 4, 4), self.K.reshape(*shape, 3, 3), self.width, self.height)

    def flatten(self) -> Cameras:
        return self.reshape(-1)

    @staticmethod
    def stack(cams: Sequence[Cameras], dim: int = 0) -> Cameras:
        _same_size(cams)
        return Cameras(torch.stack([c.c2w for c in cams], dim), torch.stack([c.K for c in cams], dim),
                       cams[0].width, cams[0].height)

    @staticmethod
    def cat(cams: Sequence[Cameras], dim: int = 0) -> Cameras:
        _same_size(cams)
        return Cameras(torch.cat([c.c2w for c in cams], dim), torch.cat([c.K for c in cams], dim),
                       cams[0].width, cams[0].height)

    def allclose(self, other: Cameras, atol: float = 1e-5) -> bool:
        return (self.width, self.height) == (other.width, other.height) and torch.allclose(
            self.c2w, other.c2w, atol=atol) and torch.allclose(self.K, other.K, atol=atol)

    # ------------------------------------------------------------------ basics
    @property
    def R(self) -> Tensor:
        """``(..., 3, 3)`` camera-to-world rotation (columns: camera x, y, z in world)."""
        return self.c2w[..., :3, :3]

    @property
    def centers(self) -> Tensor:
        """``(..., 3)`` camera centres in world coordinates."""
        return self.c2w[..., :3, 3]

    @property
    def forward(self) -> Tensor:
        """``(..., 3)`` unit viewing directions (camera +z) in world coordinates."""
        return self.c2w[..., :3, 2]

    @property
    def w2c(self) -> Tensor:
        """``(..., 4, 4)`` world-to-camera (OpenCV axes)."""
        return invert_rigid(self.c2w, "Cameras.c2w")

    @property
    def fx(self) -> Tensor:
        return self.K[..., 0, 0]

    @property
    def fy(self) -> Tensor:
        return self.K[..., 1, 1]

    @property
    def cx(self) -> Tensor:
        return self.K[..., 0, 2]

    @property
    def cy(self) -> Tensor:
        return self.K[..., 1, 2]

    @classmethod
    def from_look_at(cls, eye: Tensor, target: Tensor | None = None, *, K: Tensor | None = None,
                     fov_deg: float = 50.0, width: int = 64, height: int | None = None,
                     up: Tensor | None = None) -> Cameras:
        """Cameras at ``eye (..., 3)`` looking at ``target``; intrinsics ``K`` or ``fov_deg``."""
        height = width if height is None else height
        c2w = look_at(eye, target, up)
        K = intrinsics_from_fov(fov_deg, width, height) if K is None else K
        return cls(c2w, K.to(c2w), width, height)

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_w2c(cls, w2c: Tensor, K: Tensor, width: int, height: int) -> Cameras:
        """From an OpenCV world-to-camera ``(..., 3|4, 4)`` (e.g. COLMAP)."""
        return cls(invert_rigid(w2c, "w2c"), K, width, height)

    @classmethod
    def from_opengl(cls, c2w_gl: Tensor, K: Tensor, width: int, height: int) -> Cameras:
        """From a camera-to-world with OpenGL/Blender/nerfstudio camera axes (y up, z back)."""
        c2w_gl = to_homogeneous(c2w_gl)
        return cls(c2w_gl @ _flip(c2w_gl), K, width, height)

    def to_opengl(self) -> Tensor:
        """Camera-to-world ``(..., 4, 4)`` with OpenGL/Blender/nerfstudio camera axes."""
        return self.c2w @ _flip(self.c2w)

    from_blender = from_opengl
    to_blender = to_opengl
    from_nerfstudio = from_opengl
    to_nerfstudio = to_opengl

    @classmethod
    def from_colmap(cls, R_w2c: Tensor, t_w2c: Tensor, K: Tensor, width: int, height: int) -> Cameras:
        """From COLMAP's world-to-camera rotation ``(..., 3, 3)`` and translation ``(..., 3)``."""
        w2c = torch.cat([R_w2c, t_w2c.unsqueeze(-1)], dim=-1)
        return cls.from_w2c(w2c, K, width, height)

    def to_colmap(self) -> tuple[Tensor, Tensor]:
        """COLMAP ``(R_w2c (..., 3, 3), t_w2c (..., 3))``."""
        w2c = self.w2c
        return w2c[..., :3, :3], w2c[..., :3, 3]

    @classmethod
    def from_srn(cls, c2w: Tensor, K: Tensor, width: int, height: int) -> Cameras:
        """SRN ``pose/*.txt`` already holds an OpenCV camera-to-world 4x4."""
        return cls(c2w, K, width, height)

    def to_srn(self) -> Tensor:
        return self.c2w.clone()

    @staticmethod
    def _normalized_to_pixels(K_n: Tensor, width: int, height: int) -> Tensor:
        """Intrinsics normalised to [-1, 1] image coordinates -> pixel intrinsics."""
        K = K_n[..., :3, :3].clone()
        K[..., 0, :] = K_n[..., 0, :3] * (width / 2)
        K[..., 1, :] = K_n[..., 1, :3] * (height / 2)
        K[..., 0, 2] = (K_n[..., 0, 2] + 1.0) * (width / 2)
        K[..., 1, 2] = (K_n[..., 1, 2] + 1.0) * (height / 2)
        K[..., 2, :] = torch.tensor([0.0, 0.0, 1.0]).to(K)
        return K

    @classmethod
    def from_nmr(cls, world_mat: Tensor, camera_mat: Tensor, width: int, height: int) -> Cameras:
        """NMR/DVR ``cameras.npz``: ``world_mat_i`` (OpenCV w2c 4x4 or 3x4) and ``camera_mat_i``.

        ``camera_mat`` maps camera coordinates to image coordinates normalised to [-1, 1]
        (``u_ndc = 2 u_px / W - 1``); a 4x4 ``camera_mat`` is read by its top-left 3x3.
        """
        K = cls._normalized_to_pixels(camera_mat, width, height)
        return cls.from_w2c(world_mat, K, width, height)

    def to_nmr(self) -> tuple[Tensor, Tensor]:
        """``(world_mat (..., 4, 4), camera_mat (..., 4, 4))`` as stored in DVR ``cameras.npz``."""
        cam = torch.zeros(*self.shape, 4, 4, dtype=self.K.dtype, device=self.K.device)
        cam[..., 0, 0] = self.fx * 2 / self.width
        cam[..., 0, 1] = self.K[..., 0, 1] * 2 / self.width
        cam[..., 0, 2] = self.cx * 2 / self.width - 1.0
        cam[..., 1, 1] = self.fy * 2 / self.height
        cam[..., 1, 2] = self.cy * 2 / self.height - 1.0
        cam[..., 2, 2] = 1.0
        cam[..., 3, 3] = 1.0
        return self.w2c, cam

    @classmethod
    def from_realestate10k(cls, intrinsics_n: Tensor, w2c: Tensor, width: int, height: int) -> Cameras:
        """RealEstate10K: ``intrinsics_n (..., 4)`` = (fx, fy, cx, cy) normalised by W/H, OpenCV w2c 3x4."""
        fx, fy, cx, cy = intrinsics_n.unbind(-1)
        K = torch.zeros(*intrinsics_n.shape[:-1], 3, 3, dtype=intrinsics_n.dtype)
        K[..., 0, 0], K[..., 1, 1] = fx * width, fy * height
        K[..., 0, 2], K[..., 1, 2] = cx * width, cy * height
        K[..., 2, 2] = 1.0
        return cls.from_w2c(w2c, K, width, height)

    def to_realestate10k(self) -> tuple[Tensor, Tensor]:
        """``(intrinsics_n (..., 4), w2c (..., 3, 4))``; inverse of :meth:`from_realestate10k`."""
        intr = torch.stack([self.fx / self.width, self.fy / self.height,
                            self.cx / self.width, self.cy / self.height], dim=-1)
        return intr, self.w2c[..., :3, :]

    @classmethod
    def from_zero123(cls, w2c_blender: Tensor, K: Tensor, width: int, height: int) -> Cameras:
        """Zero-1-to-3 / Objaverse ``NNN.npy``: 3x4 world-to-camera in Blender camera axes."""
        c2w_gl = invert_rigid(w2c_blender, "Zero-1-to-3 RT")
        return cls.from_opengl(c2w_gl, K, width, height)

    def to_zero123(self) -> Tensor:
        """``(..., 3, 4)`` world-to-camera in Blender camera axes."""
        return invert_rigid(self.to_opengl(), "Cameras")[..., :3, :]

    # ------------------------------------------------------------------ geometry
    def relative_to(self, reference: Cameras) -> Tensor:
        """``(..., 4, 4)`` pose of these cameras in the frame of ``reference`` cameras.

        ``T = w2c_reference @ c2w_self``: maps points from this camera's frame into the
        reference camera's frame (both OpenCV axes).
        """
        return reference.w2c @ self.c2w

    def spherical(self) -> Tensor:
        """``(..., 3)`` camera centres as (polar from +z, azimuth atan2(y, x), radius), radians."""
        return cartesian_to_spherical(self.centers)

    def pixel_grid(self) -> Tensor:
        """``(H, W, 2)`` pixel-centre coordinates (u, v) = (j + 0.5, i + 0.5)."""
        v, u = torch.meshgrid(torch.arange(self.height, dtype=self.c2w.dtype, device=self.c2w.device) + 0.5,
                              torch.arange(self.width, dtype=self.c2w.dtype, device=self.c2w.device) + 0.5,
                              indexing="ij")
        return torch.stack([u, v], dim=-1)

    def rays(self) -> tuple[Tensor, Tensor]:
        """Per-pixel rays in world space.

        Returns ``(origins, directions)``, each ``(..., H, W, 3)``; directions have unit norm.
        """
        uv = self.pixel_grid()
        ones = torch.ones_like(uv[..., :1])
        pix = torch.cat([uv, ones], dim=-1)  # (H, W, 3)
        K_inv = torch.linalg.inv(self.K)  # (..., 3, 3)
        d_cam = torch.einsum("...ij,hwj->...hwi", K_inv, pix)
        d_world = torch.einsum("...ij,...hwj->...hwi", self.R, d_cam)
        d_world = d_world / d_world.norm(dim=-1, keepdim=True)
        origins = self.centers[..., None, None, :].expand_as(d_world)
        return origins, d_world

    def plucker(self) -> Tensor:
        """Plücker ray map ``(..., 6, H, W)``: (direction, origin × direction) per pixel."""
        o, d = self.rays()
        m = torch.linalg.cross(o, d, dim=-1)
        return torch.cat([d, m], dim=-1).movedim(-1, -3)

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points ``(..., P, 3)`` to pixels.

        Returns ``(uv (..., P, 2), depth (..., P))``; depth is the camera-z distance (negative
        behind the camera). Pixel centres are at +0.5.
        """
        w2c = self.w2c
        p_cam = torch.einsum("...ij,...pj->...pi", w2c[..., :3, :3], points) + w2c[..., None, :3, 3]
        z = p_cam[..., 2]
        pix = torch.einsum("...ij,...pj->...pi", self.K, p_cam)
        uv = pix[..., :2] / z.unsqueeze(-1).where(z.unsqueeze(-1).abs() > 1e-12,
                                                  torch.full_like(z.unsqueeze(-1), 1e-12))
        return uv, z

    def unproject(self, depth: Tensor) -> Tensor:
        """World points ``(..., H, W, 3)`` of a z-depth map ``(..., H, W)``."""
        uv = self.pixel_grid()
        pix = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
        d_cam = torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(self.K), pix)
        p_cam = d_cam * depth.unsqueeze(-1)
        return torch.einsum("...ij,...hwj->...hwi", self.R, p_cam) + self.centers[..., None, None, :]

    def resize(self, width: int, height: int | None = None) -> Cameras:
        """Cameras for the image resized to ``width x height`` (intrinsics scaled)."""
        height = round(self.height * width / self.width) if height is None else height
        sx, sy = width / self.width, height / self.height
        K = self.K.clone()
        K[..., 0, :] = K[..., 0, :] * sx
        K[..., 1, :] = K[..., 1, :] * sy
        K[..., 2, :] = self.K[..., 2, :]
        return Cameras(self.c2w.clone(), K, width, height)

    def crop(self, left: int, top: int, width: int, height: int) -> Cameras:
        """Cameras for the crop ``[top:top+height, left:left+width]`` of the image."""
        if left < 0 or top < 0 or left + width > self.width or top + height > self.height:
            raise ValueError(f"crop box (left={left}, top={top}, {width}x{height}) exceeds the "
                             f"{self.width}x{self.height} image")
        K = self.K.clone()
        K[..., 0, 2] = K[..., 0, 2] - left
        K[..., 1, 2] = K[..., 1, 2] - top
        return Cameras(self.c2w.clone(), K, width, height)

    def center_crop(self, size: int) -> Cameras:
        """Central square crop of side ``size`` pixels."""
        return self.crop((self.width - size) // 2, (self.height - size) // 2, size, size)


def _same_size(cams: Sequence[Cameras]) -> None:
    if not cams:
        raise ValueError("need at least one Cameras")
    sizes = {(c.width, c.height) for c in cams}
    if len(sizes) > 1:
        raise ValueError(f"cannot combine cameras of different image sizes: {sorted(sizes)}")


def zero123_relative_pose(cond: Cameras | Tensor, target: Cameras | Tensor) -> Tensor:
    """Zero-1-to-3's relative pose ``(..., 4)``: [Δpolar, sin Δazimuth, cos Δazimuth, Δradius].

    Arguments are cameras or camera centres ``(..., 3)`` in a world with +z up. Δ is
    target minus condition; Δazimuth is taken modulo 2π (only sin/cos are used).
    """
    c = cond.centers if isinstance(cond, Cameras) else cond
    t = target.centers if isinstance(target, Cameras) else target
    sc, st = cartesian_to_spherical(c.double()), cartesian_to_spherical(t.double())
    d_az = torch.remainder(st[..., 1] - sc[..., 1], 2 * math.pi)
    out = torch.stack([st[..., 0] - sc[..., 0], torch.sin(d_az), torch.cos(d_az),
                       st[..., 2] - sc[..., 2]], dim=-1)
    return out.to(c.dtype if c.is_floating_point() else torch.float32)


# ---------------------------------------------------------------------- trajectories
def orbit_cameras(n: int, *, elevation_deg: float = 30.0, radius: float = 2.5, fov_deg: float = 40.0,
                  resolution: int = 64, start_azimuth_deg: float = 0.0, arc_deg: float = 360.0,
                  target: Sequence[float] = (0.0, 0.0, 0.0)) -> Cameras:
    """``n`` cameras on a circle at ``elevation_deg`` above the xy-plane, looking at ``target``.

    Azimuths start at ``start_azimuth_deg`` and advance counter-clockwise (seen from +z) by
    ``arc_deg / n`` for a full circle, or span the arc inclusively for a partial one.
    """
    if n < 1:
        raise ValueError(f"orbit needs n >= 1 views, got {n}")
    step = arc_deg / n if abs(arc_deg - 360.0) < 1e-9 or n == 1 else arc_deg / (n - 1)
    az = torch.tensor([math.radians(start_azimuth_deg + i * step) for i in range(n)])
    polar = torch.full_like(az, math.radians(90.0 - elevation_deg))
    tgt = torch.tensor(target, dtype=torch.float32)
    eye = spherical_to_cartesian(polar, az, torch.full_like(az, radius)) + tgt
    return Cameras.from_look_at(eye, tgt.expand_as(eye), fov_deg=fov_deg, width=resolution)


def ring_cameras(n: int = 24, **kwargs) -> Cameras:
    """The NMR-like ring: ``n`` (24) views 360/n degrees apart at a fixed elevation (30°).

    View ``i`` has azimuth ``2π i / n``: the index a ring-index model (ViewFusion) sees.
    """
    return orbit_cameras(n, **kwargs)


def hemisphere_cameras(n: int, *, generator: torch.Generator | None = None, radius: float = 2.5,
                       min_elevation_deg: float = 5.0, max_elevation_deg: float = 85.0,
                       fov_deg: float = 40.0, resolution: int = 64) -> Cameras:
    """``n`` cameras drawn uniformly (by area) on the upper hemisphere band, looking at the origin.

    SRN-like layout. Deterministic given ``generator``.
    """
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    v = torch.rand(n, generator=generator, dtype=torch.float64)
    lo, hi = math.sin(math.radians(min_elevation_deg)), math.sin(math.radians(max_elevation_deg))
    z = lo + (hi - lo) * u  # uniform in z <=> uniform in area on the sphere
    polar = torch.acos(z).float()
    az = (2 * math.pi * v).float()
    eye = spherical_to_cartesian(polar, az, torch.full_like(az, radius))
    return Cameras.from_look_at(eye, fov_deg=fov_deg, width=resolution)


def alternating_order(step_deg: float = 10.0, total_deg: float = 360.0) -> list[float]:
    """Azimuth offsets in generation order: +s, −s, +2s, −2s, …, ending at 180° for a full orbit.

    For ``step_deg=10`` this gives the 35 offsets of interpolated denoising's 36-view orbit
    (the input at 0° is not included): ``[10, -10, 20, -20, ..., 170, -170, 180]``.
    """
    n = round(total_deg / step_deg)
    if abs(n * step_deg - total_deg) > 1e-6:
        raise ValueError(f"step_deg={step_deg} does not divide total_deg={total_deg}")
    out: list[float] = []
    half = n // 2
    for k in range(1, half + (n % 2) + 1):
        out.append(k * step_deg)
        if not (n % 2 == 0 and k == half):
            out.append(-k * step_deg)
    return out[: n - 1]
