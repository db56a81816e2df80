"""Evaluation: image metrics (PSNR, SSIM); more (LPIPS, FID/KID, 3D consistency) to come."""

from vantage.eval.metrics import psnr, ssim, to_unit

__all__ = ["psnr", "ssim", "to_unit"]
