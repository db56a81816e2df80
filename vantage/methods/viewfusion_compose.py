"""ViewFusion's composition of per-view predictions (Spiegl et al. 2024, arXiv 2402.02906, Sec. 3).

Pure tensor functions used by :mod:`vantage.methods.viewfusion`:

* :func:`pack_rows`: ragged batching. The valid views of all samples become one flat batch of
  ``M = valid.sum()`` network rows (sample-major, views in set order); padding costs nothing.
* :func:`compose`: the rows' outputs are scattered back to ``(B, N, ...)`` per sample, padding slots
  get logits ``−inf``, and ``w = softmax_views(l)`` is taken per pixel *and* per colour channel; the
  composed noise is ``ε = Σ_i w_i ⊙ ε_i`` (the paper's composition). ``mode="mean"`` is the paper's
  no-weighting ablation: the plain mean of the valid ``ε_i``.
* :func:`target_angle`: the absolute azimuth of a camera on the ring (or relative to a reference
  camera), wrapped into ``[0, 2π)``.
* :func:`check_views`: input validation with errors that name the tensor and what was expected.
* :class:`RowRunner`: runs the network over the ``M`` rows in chunks of at most ``max_rows``; at inference,
  when the rows do not fit in memory it halves the chunk until they do (and says so once).

Shapes: ``B`` samples, ``N`` view slots, ``M`` valid views in all, images ``(3, H, W)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vantage.cameras import Cameras

__all__ = ["Composition", "COMPOSITIONS", "pack_rows", "compose", "wrap_angle", "target_angle", "check_views",
           "RowRunner", "is_out_of_memory"]

COMPOSITIONS = ("softmax", "mean")


@dataclass
class Composition:
    """Result of one composed prediction.

    Attributes:
        eps: ``(B, 3, H, W)`` float32 composed noise prediction ``Σ_i w_i ⊙ ε_i`` (for a v-prediction
            model: ε̂ recovered from the composed v̂, which is the same weighted sum of the per-view ε̂_i, the
            conversion being affine with coefficients shared by the views and ``Σ_i w_i = 1``).
        weights: ``(B, N, 3, H, W)`` float32 per-view weights (0 in padding slots; they sum to 1 over
            ``N`` at every pixel and channel).
        raw: ``(M, 6, H, W)`` raw network output per valid view (channels 0-2: ``ε_i`` or ``v_i``, 3-5:
            logits).
        batch_index, view_index: ``(M,)`` long, the sample and slot of each row of ``raw``.
        pred: ``(B, 3, H, W)`` float32 composed network output ``Σ_i w_i ⊙ raw_i[:3]`` (ε̂ or v̂, what the
            training loss compares; None: the same as ``eps``).
    """

    eps: Tensor
    weights: Tensor
    raw: Tensor
    batch_index: Tensor
    view_index: Tensor
    pred: Tensor | None = None

    @property
    def output(self) -> Tensor:
        """The composed network output (``pred``, or ``eps`` for an ε-prediction model)."""
        return self.eps if self.pred is None else self.pred


def pack_rows(valid: Tensor) -> tuple[Tensor, Tensor]:
    """``(batch_index, view_index)``, each ``(M,)`` long: the valid slots of ``valid (B, N)`` in
    sample-major order (sample 0's views in slot order, then sample 1's, ...), the reference's
    stacking order."""
    return torch.nonzero(valid, as_tuple=True)


def compose(raw: Tensor, batch_index: Tensor, view_index: Tensor, batch: int, views: int,
            mode: str = "softmax") -> tuple[Tensor, Tensor]:
    """Compose per-view outputs ``raw (M, 6, H, W)`` into ``(eps (B, 3, H, W), weights (B, N, 3, H, W))``.

    ``mode="softmax"``: logits of slots with no row are ``−inf`` and ``w = softmax`` over the view axis,
    separately for every pixel and channel (paper, Eq. for ε̂ of the composable model); a sample
    with one view gets weight 1. ``mode="mean"``: ``w_i = 1/k`` for the ``k`` valid views. Every
    sample must have at least one row. Computed in float32.
    """
    if mode not in COMPOSITIONS:
        raise ValueError(f"composition must be one of {COMPOSITIONS}, got {mode!r}")
    if raw.ndim != 4 or raw.shape[1] != 6:
        raise ValueError(f"raw network output must be (M, 6, H, W) (3 noise + 3 logit channels), "
                         f"got {tuple(raw.shape)}")
    counts = torch.bincount(batch_index, minlength=batch)
    if counts.numel() != batch or not (counts > 0).all():
        empty = (counts[:batch] == 0).nonzero().flatten().tolist()
        raise ValueError(f"sample(s) {empty} have no valid conditioning view")
    raw = raw.float()
    h, w = raw.shape[-2:]
    eps_i = raw.new_zeros(batch, views, 3, h, w)
    eps_i[batch_index, view_index] = raw[:, :3]
    if mode == "softmax":
        logits = raw.new_full((batch, views, 3, h, w), float("-inf"))
        logits[batch_index, view_index] = raw[:, 3:]
        weights = torch.softmax(logits, dim=1)
    else:
        mask = raw.new_zeros(batch, views)
        mask[batch_index, view_index] = 1.0
        weights = (mask / counts.to(mask.dtype)[:, None])[:, :, None, None, None].expand(-1, -1, 3, h, w)
    return (weights * eps_i).sum(dim=1), weights


def wrap_angle(angle: Tensor) -> Tensor:
    """``angle`` (radians) wrapped into ``[0, 2π)``."""
    out = torch.remainder(angle, 2 * math.pi)
    return torch.where(out >= 2 * math.pi, torch.zeros_like(out), out)  # remainder can round up to 2π


def target_angle(target: Cameras, reference: Cameras | None = None, *, direction: float = 1.0,
                 offset_deg: float = 0.0) -> Tensor:
    """``(B,)`` float32 ring angle of ``target`` cameras ``(B,)`` in ``[0, 2π)``.

    Absolute (``reference=None``): ``wrap(direction · atan2(y, x) + offset)`` of the camera centre
    (world +z up, azimuth counter-clockwise seen from +z, see ``docs/cameras.md``); with the
    defaults, view ``i`` of the 24-view ring (:func:`vantage.cameras.ring_cameras`) gets
    ``2πi/24``, the reference's ring-index angle. Relative: ``wrap(direction · (az_target − az_ref))``
    (the offset cancels).
    """
    wide = torch.float32 if target.c2w.device.type == "mps" else torch.float64
    az = torch.atan2(target.centers[..., 1].to(wide), target.centers[..., 0].to(wide))
    if reference is None:
        angle = direction * az + math.radians(offset_deg)
    else:
        ref = torch.atan2(reference.centers[..., 1].to(wide), reference.centers[..., 0].to(wide))
        angle = direction * (az - ref)
    out = wrap_angle(angle).float()  # float32 rounding can lift 2π − δ to 2π: that is angle 0
    return torch.where(out >= 2 * math.pi, torch.zeros_like(out), out)


def check_views(x: Tensor, images: Tensor, valid: Tensor, resolution: int) -> None:
    """Validate a noisy target ``x (B, 3, R, R)`` and conditioning views ``images (B, N, 3, R, R)`` with
    ``valid (B, N)`` bool; raise ``ValueError`` naming the tensor and the expected shape."""
    R = resolution
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, R, R):
        raise ValueError(f"noisy target x must be (B, 3, {R}, {R}), got {tuple(x.shape)}")
    B = x.shape[0]
    if images.ndim != 5 or images.shape[0] != B or tuple(images.shape[2:]) != (3, R, R):
        raise ValueError(f"conditioning views must be (B={B}, N, 3, {R}, {R}), got {tuple(images.shape)}")
    N = images.shape[1]
    if N == 0:
        raise ValueError("conditioning views have N = 0 slots; every sample needs at least one view")
    if valid.dtype != torch.bool or tuple(valid.shape) != (B, N):
        raise ValueError(f"valid mask must be a bool tensor of shape ({B}, {N}), got {valid.dtype} "
                         f"{tuple(valid.shape)}")
    empty = (~valid.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"sample(s) {empty} have no valid conditioning view (valid[b] is all False)")


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure: ``torch.OutOfMemoryError`` (CUDA, MPS) or the CPU allocator's ``RuntimeError``."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


class RowRunner:
    """Run ``net(*chunk)`` over the ``M`` rows of tensors ``(M, ...)`` in chunks of at most ``max_rows`` rows
    (None: all at once) and concatenate the outputs.

    At inference (``torch.is_grad_enabled()`` False) an allocation failure halves the chunk and retries,
    down to one row; the chunk that fitted is kept for later calls (``fitted``) and a ``UserWarning`` says
    once how many rows per call fit. In training (gradients on, where chunking saves no memory: the
    activations of every chunk are kept for backward) and when a single row does not fit, the error
    says how many rows were asked for and what to lower.
    """

    def __init__(self) -> None:
        self.fitted: int | None = None

    def __call__(self, net: Callable[..., Tensor], rows: tuple[Tensor, ...], max_rows: int | None,
                 what: str = "view rows") -> Tensor:
        total = rows[0].shape[0]
        step = start = min([x for x in (max_rows, self.fitted) if x] + [max(total, 1)])
        while True:
            try:
                out = torch.cat([net(*(x[i:i + step] for x in rows)) for i in range(0, total, step)])
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not is_out_of_memory(e):
                    raise
                device = rows[0].device
                if torch.is_grad_enabled():
                    raise RuntimeError(
                        f"out of memory on {device} training on {total} {what} (samples x conditioning "
                        f"views); lower the batch (--batch, train.micro_batch) or max_views") from e
                if step == 1:
                    raise RuntimeError(f"out of memory on {device}: even one of the {total} {what} "
                                       f"({tuple(rows[0].shape[1:])}) does not fit") from e
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                step = max(1, step // 2)
                continue
            if step < start:
                self.fitted = step
                warnings.warn(f"{total} {what} did not fit in memory on {rows[0].device} in one network call; "
                              f"ran {step} per call (max_rows / --max-rows {step} sets this directly)", stacklevel=2)
            return out
