"""Dataset verification: counts, resolution and camera sanity (``vantage data verify``).

Camera checks per scene:

* every rotation is orthonormal with determinant +1, focal lengths are positive and the
  principal point lies inside the image;
* object-centric data: the point closest to all optical axes (least squares) is in front of
  every camera and projects inside every image ("cameras look at the object");
* baselines: min / median / max distance between camera centres, and no two views with the
  same camera centre and orientation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from vantage.cameras import Cameras
from vantage.data.views import ObjectViews, SceneDataset

__all__ = ["VerifyReport", "check_cameras", "look_at_point", "verify_dataset"]

# Formats whose scenes are not object-centric (cameras need not converge on one point).
SCENE_FORMATS = {"realestate10k", "images"}


def look_at_point(cams: Cameras) -> torch.Tensor:
    """``(3,)`` least-squares point closest to the optical axes of ``cams (N,)``."""
    c = cams.centers.double()
    d = cams.forward.double()
    eye = torch.eye(3, dtype=torch.float64)
    P = eye - d[:, :, None] * d[:, None, :]  # projectors orthogonal to each axis
    A = P.sum(0)
    b = (P @ c[:, :, None]).sum(0).squeeze(-1)
    return torch.linalg.lstsq(A, b).solution


def check_cameras(cams: Cameras, object_centric: bool = True) -> tuple[list[str], dict]:
    """Problems found in ``cams (N,)`` and statistics (baselines, look-at point)."""
    problems: list[str] = []
    R = cams.R.double()
    n = R.shape[0]
    ortho = (R.transpose(-1, -2) @ R - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(-1, -2))
    det = torch.linalg.det(R)
    for i in torch.nonzero((ortho > 1e-3) | (det < 0.999) | (det > 1.001)).flatten().tolist():
        problems.append(f"view {i}: rotation is not a proper rotation (|RᵀR − I| = {ortho[i]:.2e}, "
                        f"det = {det[i]:.4f})")
    for i in torch.nonzero((cams.fx <= 0) | (cams.fy <= 0)).flatten().tolist():
        problems.append(f"view {i}: focal length must be positive, got fx={cams.fx[i]:.3f} fy={cams.fy[i]:.3f}")
    bad_pp = (cams.cx < 0) | (cams.cx > cams.width) | (cams.cy < 0) | (cams.cy > cams.height)
    for i in torch.nonzero(bad_pp).flatten().tolist():
        problems.append(f"view {i}: principal point ({cams.cx[i]:.1f}, {cams.cy[i]:.1f}) is outside the "
                        f"{cams.width}x{cams.height} image")
    stats: dict = {}
    if n >= 2:
        dist = torch.cdist(cams.centers.double()[None], cams.centers.double()[None])[0]
        off = dist[~torch.eye(n, dtype=torch.bool)]
        stats["baseline"] = (off.min().item(), off.median().item(), off.max().item())
        same_rot = (R[:, None] - R[None]).abs().amax(dim=(-1, -2)) < 1e-6
        dup = torch.triu((dist < 1e-6) & same_rot, diagonal=1)
        for i, j in torch.nonzero(dup).tolist():
            problems.append(f"views {i} and {j} have identical cameras")
        if object_centric and not problems:
            p = look_at_point(cams)
            stats["look_at"] = p.tolist()
            uv, z = cams.to(torch.float64).project(p.expand(n, 1, 3))
            uv, z = uv[:, 0], z[:, 0]
            outside = (z <= 0) | (uv[:, 0] < 0) | (uv[:, 0] > cams.width) | (uv[:, 1] < 0) | (
                uv[:, 1] > cams.height)
            for i in torch.nonzero(outside).flatten().tolist()[:5]:
                problems.append(f"view {i}: does not look at the object (the common look-at point "
                                f"{[round(x, 3) for x in p.tolist()]} projects to "
                                f"({uv[i, 0]:.1f}, {uv[i, 1]:.1f}) at depth {z[i]:.3f})")
    return problems, stats


@dataclass
class VerifyReport:
    """What ``verify_dataset`` found."""

    format: str
    scenes: int = 0
    views: int = 0
    resolutions: set = field(default_factory=set)
    baselines: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        out = [f"format: {self.format}", f"scenes: {self.scenes}", f"views: {self.views}",
               "resolution: " + ", ".join(f"{w}x{h}" for h, w in sorted(self.resolutions))]
        if self.baselines:
            b = torch.tensor(self.baselines)
            out.append(f"camera baselines: min {b[:, 0].min():.3f}, median {b[:, 1].median():.3f}, "
                       f"max {b[:, 2].max():.3f} (world units)")
        if self.skipped:
            out.append(f"skipped while indexing: {len(self.skipped)}")
            out += [f"  - {s}" for s in self.skipped[:10]]
        if self.errors:
            out.append(f"errors: {len(self.errors)}")
            out += [f"  - {e}" for e in self.errors[:20]]
        else:
            out.append("OK: every scene loaded and its cameras passed the sanity checks")
        return out


def _check_views(obj: ObjectViews) -> list[str]:
    problems = []
    if not torch.isfinite(obj.images).all():
        problems.append("images contain NaN/Inf")
    elif obj.images.min() < -1.0001 or obj.images.max() > 1.0001:
        problems.append(f"images outside [-1, 1]: [{obj.images.min():.3f}, {obj.images.max():.3f}]")
    if obj.masks is not None and (obj.masks.min() < 0 or obj.masks.max() > 1):
        problems.append("masks outside [0, 1]")
    return problems


def verify_dataset(ds: SceneDataset, *, limit: int | None = None, progress: bool = True) -> VerifyReport:
    """Load every scene (or the first ``limit``) of ``ds`` and check images and cameras."""
    report = VerifyReport(format=ds.format_name, skipped=[str(s) for s in ds.skipped])
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        report.errors.append("the dataset has no scenes")
        return report
    object_centric = ds.format_name not in SCENE_FORMATS
    for i in tqdm(range(n), desc="verify", disable=not progress, unit="scene"):
        name = ds.scene_name(i)
        try:
            obj = ds.load(i)
        except (ValueError, OSError, KeyError) as e:
            report.errors.append(f"{name}: {e}")
            continue
        report.scenes += 1
        report.views += len(obj)
        report.resolutions.add(obj.resolution)
        if obj.meta.get("posed", True):
            problems, stats = check_cameras(obj.cameras, object_centric=object_centric)
        else:  # placeholder cameras of an unposed image folder: nothing to check
            problems, stats = [], {}
        problems += _check_views(obj)
        report.errors += [f"{name}: {p}" for p in problems]
        if "baseline" in stats:
            report.baselines.append(stats["baseline"])
    return report
