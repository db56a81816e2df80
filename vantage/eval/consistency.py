"""3D consistency of generated views: the 3DiM score, adjacent-view scores, reprojection error.

* :func:`consistency_score`: the **3D consistency score** of 3DiM (Watson et al. 2022, "Novel
  View Synthesis with Diffusion Models", Sec. 5). A radiance field
  (:mod:`vantage.eval.voxels`, a dense voxel grid in the spirit of DVGO / Plenoxels instead of the
  paper's NeRF MLP) is fitted to a subset of the generated views and renders the held-out ones;
  PSNR/SSIM of those renders against the held-out *generated* views measure how well the views
  agree on one 3D scene (nothing is compared with ground truth). The same function on
  ground-truth views gives the ceiling the fitter reaches with perfectly consistent input.
* :func:`adjacent_view_score`: PSNR/SSIM between consecutive frames of an orbit, without depth.
  It measures how much a frame changes from the one before: high for smooth orbits, low for
  flicker *and* for large camera steps, so it is only comparable between orbits with the same
  cameras (report the ground-truth orbit's value next to it).
* :func:`reprojection_error`: with per-view depth (ground truth for true views; for generated
  views the depth rendered by a field fitted to them), pixels of view ``i`` are unprojected,
  projected into view ``j`` and their colours compared there (visible, non-occluded pixels only).

Conventions: images ``(N, 3, H, W)`` in [-1, 1]; :class:`~vantage.cameras.Cameras` ``(N,)`` with
OpenCV axes and pixel intrinsics (pixel centres at +0.5); depth ``(N, 1, H, W)`` camera-z, 0 =
background. PSNR/SSIM use :mod:`vantage.eval.metrics` on [0, 1] images (SSIM: 11x11 Gaussian
window); colour errors are in [0, 1] units.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vantage.cameras import Cameras
from vantage.eval.metrics import psnr, ssim, to_unit
from vantage.eval.voxels import _check_views, fit_field, render

__all__ = ["split_views", "consistency_score", "adjacent_view_score", "reprojection_error", "adjacent_pairs",
           "nearest_pairs"]


def split_views(n: int, holdout: str | int | Sequence[int] = "alternate") -> tuple[list[int], list[int]]:
    """``(train, test)`` view indices of ``n`` views.

    ``holdout``: ``"alternate"`` (odd views held out, the even ones fitted), an int ``k >= 2``
    (views ``1, 1 + k, 1 + 2k, ...`` held out) or an explicit sequence of held-out indices.
    """
    if isinstance(holdout, str):
        if holdout != "alternate":
            raise ValueError(f"holdout must be 'alternate', an int k >= 2 or a list of view indices, got '{holdout}'")
        holdout = 2
    if isinstance(holdout, int):
        if holdout < 2:
            raise ValueError(f"holdout k must be >= 2 (every k-th view held out), got {holdout}")
        test = list(range(1, n, holdout))
    else:
        test = sorted({int(i) for i in holdout})
        if any(not 0 <= i < n for i in test):
            raise ValueError(f"holdout indices {test} out of range for {n} views")
    train = [i for i in range(n) if i not in set(test)]
    if not test or len(train) < 1:
        raise ValueError(f"holdout {holdout!r} on {n} views leaves {len(train)} views to fit and {len(test)} to "
                         f"test; both must be non-empty")
    return train, test


def _metrics(pred: Tensor, target: Tensor) -> tuple[list[float], list[float]]:
    a, b = to_unit(pred.float().cpu()), to_unit(target.float().cpu())
    p = psnr(a, b).clamp(max=100.0).tolist()
    s = ssim(a, b).tolist() if min(a.shape[-2:]) >= 11 else [float("nan")] * len(p)
    return p, s


def _mean(x: Sequence[float]) -> float:
    return float(sum(x) / len(x)) if x else float("nan")


def consistency_score(images: Tensor, cameras: Cameras, *, holdout: str | int | Sequence[int] = "alternate",
                      background: Sequence[float] | Tensor | str = "white", grid: int = 48, iters: int = 500,
                      seed: int = 0, bbox: tuple[Sequence[float], Sequence[float]] | float = 1.0,
                      reprojection: bool = False, progress: bool = False, device: torch.device | str | None = None,
                      return_outputs: bool = False, **fit_kwargs) -> dict:
    """3DiM's 3D consistency score of views ``images (N, 3, H, W)`` at ``cameras (N,)``.

    Fits a field (:func:`~vantage.eval.voxels.fit_field` with ``grid``, ``iters``, ``seed``,
    ``bbox``, ``background`` and ``fit_kwargs``) to the views :func:`split_views` keeps, renders
    the held-out cameras and compares. Returns a JSON-friendly dict:

    ``psnr``, ``ssim`` (means over held-out views), ``psnr_per_view``, ``ssim_per_view``,
    ``train_views``, ``test_views``, ``train_psnr`` (the fit on its own views), ``seconds``,
    ``settings``; with ``reprojection=True`` also ``reprojection`` (:func:`reprojection_error` of
    all views between neighbours in the given order, with depth rendered by the fitted field);
    with ``return_outputs=True`` also ``field`` and ``renders`` (held-out renders ``(T, 3, H, W)``).
    """
    _check_views(images, cameras)
    t0 = time.perf_counter()
    train, test = split_views(images.shape[0], holdout)
    field = fit_field(images[train], cameras[train], background=background, bbox=bbox, grid=grid, iters=iters,
                      seed=seed, progress=progress, device=device, **fit_kwargs)
    dev = field.grid.device
    pred_test, _, _ = render(field, cameras[test].to(dev))
    pred_train, _, _ = render(field, cameras[train].to(dev))
    p, s = _metrics(pred_test, images[test])
    p_train, _ = _metrics(pred_train, images[train])
    out = {"psnr": _mean(p), "ssim": _mean(s), "psnr_per_view": p, "ssim_per_view": s, "train_views": train,
           "test_views": test, "train_psnr": _mean(p_train),
           "settings": {"holdout": holdout if isinstance(holdout, (str, int)) else list(test), "grid": grid,
                        "iters": iters, "seed": seed, "bbox": [field.lo.tolist(), field.hi.tolist()],
                        "background": field.background.tolist(),
                        **{k: v for k, v in fit_kwargs.items() if isinstance(v, (int, float, str, tuple, list))}}}
    if reprojection:
        _, depth, _ = render(field, cameras.to(dev))
        out["reprojection"] = reprojection_error(images, cameras, depth.cpu())
    out["seconds"] = time.perf_counter() - t0
    if return_outputs:
        out["field"], out["renders"] = field, pred_test.cpu()
    return out


def adjacent_pairs(n: int, cyclic: bool = False) -> list[tuple[int, int]]:
    """``[(0, 1), (1, 2), ...]``, plus ``(n - 1, 0)`` for a closed orbit."""
    pairs = [(i, i + 1) for i in range(n - 1)]
    return pairs + [(n - 1, 0)] if cyclic and n > 2 else pairs


def nearest_pairs(cameras: Cameras) -> list[tuple[int, int]]:
    """Each view paired with the view whose camera centre is nearest (``cameras (N,)``, N >= 2), as unordered pairs
    ``(i, j)`` with ``i < j``, each once: the neighbours of an orbit whatever order its views are stored in."""
    c = cameras.centers.double().reshape(-1, 3)
    if c.shape[0] < 2:
        raise ValueError(f"need at least 2 cameras to pair views, got {c.shape[0]}")
    d = torch.cdist(c, c)
    d.fill_diagonal_(float("inf"))
    nearest = d.argmin(dim=1).tolist()
    return sorted({(min(i, j), max(i, j)) for i, j in enumerate(nearest)})


def adjacent_view_score(images: Tensor, *, cyclic: bool = False,
                        pairs: Sequence[tuple[int, int]] | None = None) -> dict:
    """PSNR/SSIM between consecutive views ``images (N, 3, H, W)`` in [-1, 1] (no depth, no warping).

    Returns ``psnr``, ``ssim`` (means), ``psnr_per_pair``, ``ssim_per_pair`` and ``pairs``.
    ``cyclic`` adds the pair (last, first) of a closed orbit; ``pairs`` replaces the consecutive pairs
    (e.g. :func:`nearest_pairs`). See the module docstring for what this does (and does not) measure.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 2:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be (N, 3, H, W) with N >= 2, got {shape}")
    n = images.shape[0]
    pairs = adjacent_pairs(n, cyclic) if pairs is None else [tuple(x) for x in pairs]
    if not pairs or any(not (0 <= i < n and 0 <= j < n) for i, j in pairs):
        raise ValueError(f"pairs {list(pairs)} must be non-empty and index views 0..{n - 1}")
    a, b = zip(*pairs)
    p, s = _metrics(images[list(a)], images[list(b)])
    return {"psnr": _mean(p), "ssim": _mean(s), "psnr_per_pair": p, "ssim_per_pair": s,
            "pairs": [list(x) for x in pairs]}


def _warp_pair(img_i: Tensor, img_j: Tensor, cam_i: Cameras, cam_j: Cameras, depth_i: Tensor, depth_j: Tensor,
               depth_tol: float) -> tuple[Tensor, Tensor]:
    """Per-pixel colour error ``(H, W)`` (mean abs over RGB, [0, 1] units) of view ``i`` against view ``j``
    at the reprojected positions, and the validity mask ``(H, W)``."""
    h, w = img_i.shape[-2:]
    pts = cam_i.unproject(depth_i[0])  # (H, W, 3) world points
    uv, z = cam_j.project(pts.reshape(-1, 3))  # (HW, 2), (HW,)
    inside = (z > 1e-6) & (uv[:, 0] >= 0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= 0.5) & (uv[:, 1] <= h - 0.5)
    col = uv[:, 0].floor().long().clamp(0, w - 1)
    row = uv[:, 1].floor().long().clamp(0, h - 1)
    # view j must see the same surface point: its depth (nearest pixel) agrees, and every tap of the
    # bilinear sample is foreground (its foreground mask eroded by one pixel)
    fg_j = (-F.max_pool2d(-(depth_j > 0).float()[None], 3, stride=1, padding=1))[0, 0] > 0
    dj = depth_j[0][row, col]
    visible = inside & fg_j[row, col] & ((dj - z).abs() <= depth_tol * z.abs())
    grid = torch.stack([uv[:, 0] / w * 2 - 1, uv[:, 1] / h * 2 - 1], -1).reshape(1, h, w, 2)
    sampled = F.grid_sample(img_j[None].float(), grid.float(), mode="bilinear", align_corners=False)[0]
    err = ((sampled - img_i.float()).abs() / 2).mean(0)  # [-1, 1] -> [0, 1] units
    valid = visible.reshape(h, w) & (depth_i[0] > 0)
    return err, valid


def reprojection_error(images: Tensor, cameras: Cameras, depth: Tensor, *,
                       pairs: Sequence[tuple[int, int]] | None = None, cyclic: bool = False,
                       depth_tol: float = 0.03, symmetric: bool = True) -> dict:
    """Mean absolute colour difference between views after reprojection through ``depth``.

    For each pair ``(i, j)`` (default: neighbours in the given order, :func:`adjacent_pairs`) the
    foreground pixels of view ``i`` (``depth > 0``) are unprojected with ``depth (N, 1, H, W)``
    (camera-z) and projected into view ``j``; a pixel counts when it lands inside view ``j``, view
    ``j``'s depth there agrees within ``depth_tol`` (relative; occlusion test) and the bilinear
    sample of view ``j`` touches only foreground. ``symmetric`` also does ``j -> i``.

    Returns ``mae`` (mean over all valid pixels of all pairs, [0, 1] colour units; NaN when none),
    ``mae_per_pair``, ``valid_fraction`` (valid / foreground pixels) and ``pairs``.
    """
    _check_views(images, cameras)
    n, _, h, w = images.shape
    if not isinstance(depth, Tensor) or tuple(depth.shape) != (n, 1, h, w):
        shape = tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__
        raise ValueError(f"depth must be ({n}, 1, {h}, {w}) like the images (camera-z, 0 = background), got {shape}")
    pairs = list(adjacent_pairs(n, cyclic) if pairs is None else pairs)
    if any(not (0 <= i < n and 0 <= j < n) for i, j in pairs):
        raise ValueError(f"pairs {pairs} index views outside 0..{n - 1}")
    cams = cameras.to("cpu")
    depth, images = depth.float().cpu(), images.float().cpu()
    total, count, fg, per_pair = 0.0, 0, 0, []
    for i, j in pairs:
        sums, cnt = 0.0, 0
        for a, b in ([(i, j), (j, i)] if symmetric else [(i, j)]):
            err, valid = _warp_pair(images[a], images[b], cams[a], cams[b], depth[a], depth[b], depth_tol)
            sums += float(err[valid].sum())
            cnt += int(valid.sum())
            fg += int((depth[a] > 0).sum())
        per_pair.append(sums / cnt if cnt else float("nan"))
        total, count = total + sums, count + cnt
    return {"mae": total / count if count else float("nan"), "mae_per_pair": per_pair,
            "valid_fraction": count / fg if fg else 0.0, "pairs": [list(p) for p in pairs]}

