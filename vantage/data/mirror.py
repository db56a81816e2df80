"""Left-right mirror augmentation of posed views: flip the images and mirror the world by ``x -> −x``.

A mirrored posed view set is another valid scene (the mirror image of the object), so a method that conditions on
posed views can train on it with the geometry exact: every pixel keeps its camera-z depth, and a world point seen
at ``(u, v)`` is seen, mirrored, at ``(W − u, v)`` in every view. GeNVS uses it (``augment_flip``, docs/genvs.md).

Camera convention (docs/cameras.md): OpenCV camera-to-world ``c2w`` (x right, y down, z forward), ``K`` in pixels,
pixel centres at +0.5.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.views import ViewSet

__all__ = ["mirror_cameras", "mirror_view_set"]


def mirror_cameras(cameras: Cameras) -> Cameras:
    """The cameras of a world mirrored by ``x -> −x``, for images flipped left-right (any shape).

    OpenCV camera-to-world ``c2w`` (x right, y down, z forward), ``K`` in pixels with pixel centres at +0.5:
    ``c2w' = M · c2w · M`` with ``M = diag(−1, 1, 1, 1)`` (world mirror on the left, camera-x mirror on the right:
    the rotation ``M R M`` is proper again, the centre ``(x, y, z) -> (−x, y, z)``), and ``K' = F · K · diag(−1, 1,
    1)`` with ``F`` the column flip ``u -> W − u``: ``cx -> W − cx``, skew ``-> −skew``, ``fx, fy, cy`` kept. A world
    point ``X`` seen at pixel ``(u, v)`` and camera-z depth ``z`` is seen, mirrored to ``(−X_x, X_y, X_z)``, at
    ``(W − u, v)`` and the same depth: column ``j`` of the image becomes column ``W − 1 − j`` (``image.flip(-1)``).
    """
    m = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=cameras.c2w.dtype, device=cameras.c2w.device))
    K = cameras.K.clone()
    K[..., 0, 2] = cameras.width - cameras.K[..., 0, 2]
    K[..., 0, 1] = -cameras.K[..., 0, 1]
    return Cameras(m @ cameras.c2w @ m, K, cameras.width, cameras.height)


def mirror_view_set(views: ViewSet, flip: Tensor) -> ViewSet:
    """``views (B, N)`` with the samples where ``flip (B,)`` is True mirrored: images (and masks, depth) flipped
    left-right, cameras by :func:`mirror_cameras` (camera-z depth is unchanged by the mirror)."""
    def sel(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        f = flip.to(t.device).reshape(-1, *([1] * (t.ndim - 1)))
        return torch.where(f, t.flip(-1), t)

    cams, mirrored = views.cameras, mirror_cameras(views.cameras)
    f = flip.to(cams.c2w.device)[:, None, None, None]
    cameras = Cameras(torch.where(f, mirrored.c2w, cams.c2w), torch.where(f, mirrored.K, cams.K), cams.width,
                      cams.height)
    return replace(views, images=sel(views.images), cameras=cameras, masks=sel(views.masks), depth=sel(views.depth))
