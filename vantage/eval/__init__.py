"""Evaluation: image metrics (PSNR, SSIM, LPIPS), FID/KID, FD-DINOv2, joint FID/FD-DINOv2, 3D consistency.

Scoring under protocols: docs/evaluation.md; the 3D consistency score: docs/consistency.md.

Input conventions (see docs/metrics.md): :func:`psnr`/:func:`ssim` take [0, 1] images (map
vantage's [-1, 1] images with :func:`to_unit`); :class:`LPIPS`, :class:`FIDInceptionV3` and
:class:`DINOv2Features` take [-1, 1] images (``normalize=True`` for [0, 1]). LPIPS, FID/KID and
FD-DINOv2 need local weight files (:mod:`vantage.eval.weights`); a missing one raises
:class:`WeightsUnavailable`.
"""

from vantage.eval.consistency import adjacent_view_score, consistency_score, reprojection_error, split_views
from vantage.eval.dinov2 import DINOv2Features
from vantage.eval.fid import (
    FeatureStats,
    fd_dinov2,
    feature_stats,
    fid,
    frechet_distance,
    joint_fd_dinov2,
    joint_features,
    joint_fid,
    kid,
    load_stats,
    save_stats,
)
from vantage.eval.inception import FIDInceptionV3
from vantage.eval.lpips import LPIPS
from vantage.eval.mesh import Mesh, field_mesh, marching_tetrahedra, write_mesh
from vantage.eval.metrics import psnr, ssim, to_unit
from vantage.eval.voxels import Field, FitConfig, fit_field, render_field
from vantage.eval.weights import WEIGHT_FILES, WeightsChecksumError, WeightsUnavailable, find_weights

__all__ = [
    "LPIPS",
    "WEIGHT_FILES",
    "DINOv2Features",
    "FIDInceptionV3",
    "FeatureStats",
    "WeightsChecksumError",
    "WeightsUnavailable",
    "fd_dinov2",
    "feature_stats",
    "fid",
    "find_weights",
    "frechet_distance",
    "joint_fd_dinov2",
    "joint_features",
    "joint_fid",
    "kid",
    "load_stats",
    "psnr",
    "save_stats",
    "ssim",
    "to_unit",
    # 3D consistency (vantage.eval.consistency, .voxels, .mesh)
    "Field",
    "FitConfig",
    "Mesh",
    "adjacent_view_score",
    "consistency_score",
    "field_mesh",
    "fit_field",
    "marching_tetrahedra",
    "render_field",
    "reprojection_error",
    "split_views",
    "write_mesh",
]
