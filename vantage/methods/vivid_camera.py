"""VIVID's camera conditioning (Elata et al. 2024, arXiv 2411.07765, Sec. 3): a 20-D vector per pair, and our
Plücker ray-map alternative.

**The 20-D vector** of a (source, target) pair, all in our camera convention (OpenCV axes, pixel intrinsics
with pixel centres at +0.5, see ``docs/cameras.md``):

* 12 numbers: the relative pose target -> source, ``T = w2c_source · c2w_target`` (it maps points from the
  target camera's frame into the source camera's frame), its top 3x4 block flattened row by row;
* 4 numbers: the source intrinsics ``(fx, fy, cx, cy)`` in pixels of the network's resolution;
* 4 numbers: the target intrinsics, likewise.

It is then standardised with dataset statistics: ``(v − mean)/std`` where ``std > 0`` and 0 where ``std = 0``
(a constant entry, e.g. the principal point of centred cameras). Cameras given at another image size are
rescaled to the network's resolution first. An identical pair (zero baseline, same rotation) is valid: its
pose block is the identity.

For RealEstate10K the reference statistics (``REFERENCE_MEAN``/``REFERENCE_STD``, 64x64 pixels) are those
published with the VIVID code; :func:`reference_camera_statistics` rescales them to another resolution the
way that code does (means of the intrinsics times ``R/64``, their standard deviations times ``(R/64)²``;
the square is the reference's choice, kept so converted weights see the inputs they were trained on).
For any other data, :func:`camera_statistics` measures them on training pairs.

**Plücker maps** (``camera="plucker"``, our extension, not in the paper): per pixel, the ray
``(d, o × d)`` of each camera, both expressed in the *source* camera's frame (so, like the vector, only
the relative pose matters), with camera translations divided by a scene scale. ``(B, 12, R, R)``:
source rays then target rays.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from vantage.cameras import Cameras

__all__ = ["REFERENCE_MEAN", "REFERENCE_STD", "reference_camera_statistics", "check_intrinsics", "at_resolution",
           "relative_pose", "camera_vector", "normalize_camera_vector", "camera_statistics", "plucker_maps"]

#: RealEstate10K statistics of the 20-D vector at 64x64 (published with the VIVID code; data, not code).
REFERENCE_MEAN = (9.6681e-01, -1.6038e-04, -3.7034e-05, -1.6904e-03, -8.7718e-05, 9.9869e-01, 3.1288e-03,
                  -1.0794e-03, 1.0653e-05, 3.0997e-03, 9.6691e-01, 1.2561e-02, 5.7708e+01, 5.7704e+01, 3.2000e+01,
                  3.2000e+01, 5.7708e+01, 5.7704e+01, 3.2000e+01, 3.2000e+01)
REFERENCE_STD = (0.1104, 0.0346, 0.2279, 0.4930, 0.0347, 0.0091, 0.0367, 0.2208, 0.2279, 0.0368, 0.1088, 1.0751,
                 6.6464, 6.6511, 0.0, 0.0, 6.6464, 6.6511, 0.0, 0.0)


def reference_camera_statistics(resolution: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` 20-tuples of the RealEstate10K statistics rescaled to ``resolution`` pixels (see the
    module docstring for the reference's rule)."""
    s = resolution / 64
    mean = REFERENCE_MEAN[:12] + tuple(m * s for m in REFERENCE_MEAN[12:])
    std = REFERENCE_STD[:12] + tuple(v * s * s for v in REFERENCE_STD[12:])
    return mean, std


def check_intrinsics(cams: Cameras, name: str) -> None:
    """Raise ``ValueError`` when ``cams`` have no usable intrinsics (``fx`` or ``fy`` not > 0)."""
    bad = ~((cams.fx > 0) & (cams.fy > 0))
    if bad.any():
        rows = bad.reshape(-1).nonzero().flatten().tolist()[:8]
        raise ValueError(f"VIVID needs the {name} cameras' intrinsics (fx, fy > 0 in pixels); rows {rows} have "
                         f"fx={cams.fx.reshape(-1)[rows].tolist()}, fy={cams.fy.reshape(-1)[rows].tolist()}")


def at_resolution(cams: Cameras, resolution: int) -> Cameras:
    """``cams`` with intrinsics rescaled to a ``resolution`` x ``resolution`` image (unchanged if already)."""
    if (cams.width, cams.height) == (resolution, resolution):
        return cams
    return cams.resize(resolution, resolution)


def relative_pose(source: Cameras, target: Cameras) -> Tensor:
    """``(B, 4, 4)`` target -> source pose ``w2c_source · c2w_target`` (computed in float64, returned float64)."""
    return torch.linalg.inv(source.c2w.double()) @ target.c2w.double()


def camera_vector(source: Cameras, target: Cameras, resolution: int | None = None) -> Tensor:
    """The raw (not standardised) 20-D vector ``(B, 20)`` float32 of each pair (see the module docstring).

    ``source``, ``target``: :class:`Cameras` ``(B,)``; ``resolution``: the network's side (cameras of another
    size are rescaled to it; None keeps them).
    """
    check_intrinsics(source, "source")
    check_intrinsics(target, "target")
    if resolution is not None:
        source, target = at_resolution(source, resolution), at_resolution(target, resolution)
    pose = relative_pose(source, target)[..., :3, :4].reshape(*source.shape, 12)

    def intr(c: Cameras) -> Tensor:
        return torch.stack([c.fx, c.fy, c.cx, c.cy], dim=-1).double()

    return torch.cat([pose, intr(source), intr(target)], dim=-1).float()


def normalize_camera_vector(v: Tensor, mean: Iterable[float], std: Iterable[float]) -> Tensor:
    """``(v − mean)/std`` where ``std > 0``, 0 where ``std = 0``; ``v (..., 20)``."""
    m = torch.as_tensor(tuple(mean), dtype=torch.float64, device=v.device)
    s = torch.as_tensor(tuple(std), dtype=torch.float64, device=v.device)
    if m.shape != (v.shape[-1],) or s.shape != m.shape:
        raise ValueError(f"camera statistics must be {v.shape[-1]} numbers each, got {m.numel()} and {s.numel()}")
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(s > 0, (v.double() - m) / safe, torch.zeros_like(m)).to(v.dtype)


def camera_statistics(pairs: Iterable[tuple[Cameras, Cameras]], resolution: int,
                      decimals: int = 4) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the raw 20-D vector over ``(source, target)`` camera batches (e.g. a dataset's
    training pairs), at ``resolution``; rounded to ``decimals`` (a std that rounds to 0 is 0: a constant)."""
    vecs = [camera_vector(s, t, resolution).reshape(-1, 20).double() for s, t in pairs]
    if not vecs:
        raise ValueError("camera_statistics needs at least one pair")
    v = torch.cat(vecs)
    mean = v.mean(0)
    std = v.std(0, unbiased=False) if v.shape[0] > 1 else torch.zeros(20, dtype=torch.float64)
    return (tuple(round(float(x), decimals) + 0.0 for x in mean),
            tuple(round(float(x), decimals) + 0.0 for x in std))


def plucker_maps(source: Cameras, target: Cameras, resolution: int, scale: float = 1.0) -> Tensor:
    """``(B, 12, R, R)`` Plücker maps of the source then the target camera, in the source camera's frame,
    translations divided by ``scale`` (float32)."""
    check_intrinsics(source, "source")
    check_intrinsics(target, "target")
    source, target = at_resolution(source, resolution), at_resolution(target, resolution)
    rel = relative_pose(source, target)
    rel[..., :3, 3] /= scale
    eye = torch.eye(4, dtype=torch.float64, device=rel.device).expand_as(rel)
    src = Cameras(eye.float(), source.K.float(), resolution, resolution).plucker()
    tgt = Cameras(rel.float(), target.K.float(), resolution, resolution).plucker()
    return torch.cat([src, tgt], dim=-3)
