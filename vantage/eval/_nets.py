"""Helpers shared by the perceptual-metric networks: strict state-dict loading with clear errors, fp32 context."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from vantage.state_dicts import state_dict_mismatch

__all__ = ["check_images", "extract_features", "full_precision", "load_into"]


def load_into(module: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module`` with every key and shape checked; errors name ``source``.

    Missing ``*.num_batches_tracked`` buffers are tolerated (files saved before PyTorch 0.4.1 lack
    them; BatchNorm does not use them in eval mode).
    """
    own = module.state_dict()
    problems = state_dict_mismatch(own, state_dict, tolerate_missing=("num_batches_tracked",), limit=6,
                                   expected_label="expected")
    if problems:
        raise ValueError(f"{source} does not match {type(module).__name__}: {problems} (is it the right file?)")
    sd = dict(state_dict)
    for k, v in own.items():  # fill tolerated buffers so that strict loading goes through
        sd.setdefault(k, v)
    module.load_state_dict(sd, strict=True)


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Run the block in true fp32: no autocast, no TF32 convolutions/matmuls on CUDA (restored after).

    Published FID/LPIPS numbers come from fp32 networks; TF32 (on by default for cuDNN
    convolutions on Ampere and newer) shifts Inception features enough to move FID in the
    second decimal.
    """
    if device.type != "cuda":
        with torch.autocast(device.type, enabled=False):
            yield
        return
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast("cuda", enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def check_images(x: Tensor, name: str, low: float, high: float, tol: float = 1e-3) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, 3, H, W)`` with values in ``[low - tol, high + tol]``."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < low - tol or hi > high + tol:
        raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}], expected [{low:g}, {high:g}]"
                         + (" (pass normalize=True for [0, 1] images)" if low < 0 else
                            " (pass normalize=False for [-1, 1] images)"))


def extract_features(net: nn.Module, images: Tensor | Iterable[Tensor], dim: int, *, batch_size: int,
                     normalize: bool) -> Tensor:
    """``net``'s features of many images ``(N, dim)`` float32 on the CPU: one ``(N, 3, H, W)`` tensor (run in
    chunks of ``batch_size``) or an iterable of such batches; ``(0, dim)`` for no images."""
    if isinstance(images, Tensor):
        images = images.split(batch_size)
    with torch.no_grad():
        feats = [net(batch, normalize=normalize).cpu() for batch in images]
    return torch.cat(feats) if feats else torch.zeros(0, dim)
