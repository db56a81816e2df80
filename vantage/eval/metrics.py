"""Image metrics with their conventions stated: PSNR and SSIM.

Both take batches ``(B, C, H, W)`` **in [0, data_range]** (default [0, 1]) and return one value
per image ``(B,)``. vantage's images live in [-1, 1]: map them with :func:`to_unit` first. (PSNR
does not care about a shift, but SSIM's luminance term does: SSIM of [-1, 1] images with
``data_range=2`` is *not* the standard number.)

* PSNR = 10·log10(R² / MSE), the MSE over all channels and pixels of an image.
* SSIM (Wang et al. 2004, "Image quality assessment: from error visibility to structural
  similarity", Eq. 13 with the constants of Sec. III-C: K1 = 0.01, K2 = 0.03):
  - ``window="gaussian"`` (the paper's setting, vantage's default): an 11×11 Gaussian window with
    σ = 1.5 (radius ``int(3.5·σ + 0.5) = 5``), population (co)variances;
  - ``window="uniform"``: scikit-image's default, a 7×7 uniform window with sample
    (co)variances (N/(N−1) correction).

  The SSIM map is computed where the window lies inside the image (a border of the window radius
  is left out) and averaged per channel, then over channels: this equals
  ``skimage.metrics.structural_similarity(..., channel_axis=0)`` with the same settings, checked
  against ``../shared/fixtures/reference/ssim_psnr`` to 1e-5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "ssim_window", "to_unit"]


def to_unit(x: Tensor) -> Tensor:
    """vantage images in [-1, 1] -> [0, 1] (clamped), the range the metrics expect."""
    return ((x + 1) / 2).clamp(0, 1)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(x.shape)}")


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image ``(B,)``; ``inf`` for identical images."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).to(torch.float32 if x.dtype != torch.float64 else x.dtype)


def ssim_window(window: str = "gaussian", sigma: float = 1.5, size: int = 7) -> Tensor:
    """The 1-D window ``(K,)`` (weights summing to 1) whose outer product is the SSIM window."""
    if window == "gaussian":
        radius = int(3.5 * sigma + 0.5)
        r = torch.arange(-radius, radius + 1, dtype=torch.float64)
        w = torch.exp(-(r**2) / (2 * sigma**2))
        return w / w.sum()
    if window == "uniform":
        if size < 3 or size % 2 == 0:
            raise ValueError(f"uniform window size must be odd and >= 3, got {size}")
        return torch.full((size,), 1.0 / size, dtype=torch.float64)
    raise ValueError(f"window must be 'gaussian' or 'uniform', got '{window}'")


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, *, window: str = "gaussian", sigma: float = 1.5,
         size: int = 7, k1: float = 0.01, k2: float = 0.03, return_map: bool = False) -> Tensor:
    """Mean SSIM per image ``(B,)`` (or the ``(B, C, H−2r, W−2r)`` map with ``return_map``).

    Computed in float64. See the module docstring for the two window conventions.
    """
    _check_pair(x, y)
    w1 = ssim_window(window, sigma, size).to(x.device)
    k = w1.numel()
    if x.shape[-1] < k or x.shape[-2] < k:
        raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} are smaller than the {k}x{k} SSIM window")
    b, c, h, w = x.shape
    x64, y64 = x.double().reshape(b * c, 1, h, w), y.double().reshape(b * c, 1, h, w)

    def filt(t: Tensor) -> Tensor:  # separable 'valid' filtering
        t = F.conv2d(t, w1.view(1, 1, 1, k))
        return F.conv2d(t, w1.view(1, 1, k, 1))

    mx, my = filt(x64), filt(y64)
    vx, vy, vxy = filt(x64 * x64) - mx * mx, filt(y64 * y64) - my * my, filt(x64 * y64) - mx * my
    if window == "uniform":  # sample (co)variances, as scikit-image's default
        n = k * k
        vx, vy, vxy = (v * (n / (n - 1)) for v in (vx, vy, vxy))
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    smap = smap.reshape(b, c, smap.shape[-2], smap.shape[-1])
    if return_map:
        return smap
    out = smap.mean(dim=(-1, -2)).mean(dim=1)
    return out.to(torch.float32 if x.dtype != torch.float64 else x.dtype)
