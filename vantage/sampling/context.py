"""A bounded conditioning context: which views of a growing set a set denoiser composes.

In an autoregressive orbit the set grows by one view per generated target, so a strategy that conditions on
*every* view of the set (ViewFusion's composed strategy, :func:`vantage.methods.viewfusion.composed_strategy`;
interpolated denoising, :class:`~vantage.sampling.interpolated.InterpolatedDenoising`, every view in its window)
costs ``N + j`` network rows per denoiser call at orbit step ``j``: a ``T``-view orbit costs
``steps · (T·N + T(T−1)/2)`` rows, quadratic in ``T``. :func:`nearest_context` bounds it: the input views are
always kept, plus the ``K`` generated views **nearest in pose** to the target, so a view costs at most ``N + K``
rows and the orbit ``steps · (T·N + K·T − K(K+1)/2)`` (for ``T ≥ K``), linear in ``T``.

Why nearest in pose and not the ``K`` most recent: the views that constrain a target are those that see the
same surface, i.e. the cameras close to it. In a sequential orbit the most recent views are the neighbours on
one side only, and at the end of the circle they miss the first generated views on the other side of the
input, which the last target borders (no loop closure); in the alternating order the most recent view lies on
the *opposite* side of the input. Nearest in pose keeps the neighbours on both sides in every order.

**Pose distance** (:func:`pose_angles`): the angle between the directions from the world origin to the two
camera centres (object-centric cameras around the origin, ``docs/cameras.md``). On a ring at one elevation it
ranks views like the azimuth difference; it also handles other elevations (``--cameras``) without the
distortion of ``|Δ azimuth| + |Δ elevation|`` near the poles. Angles equal within 1 µrad (symmetric views at
±s) count as equal; ties go to the view generated later (the later slot).

Slots: :func:`vantage.sampling.autoregressive_orbit` puts the inputs in slots ``0..N−1`` and says so in
``ViewSetCond.inputs``; for a set that does not say, the first valid view is the input (as interpolated denoising
assumes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vantage.cameras import Cameras

__all__ = ["pose_angles", "nearest_context"]


def pose_angles(cameras: Cameras, target: Cameras) -> Tensor:
    """``(B, S)`` float64 angles in radians (in ``[0, π]``) between the directions from the world origin to the
    centres of ``cameras (B, S)`` and of ``target (B,)``."""
    v = cameras.centers.double()
    t = target.centers.double()[:, None].to(v.device)
    cross = torch.linalg.cross(v, t.expand_as(v), dim=-1).norm(dim=-1)
    return torch.atan2(cross, (v * t).sum(dim=-1))


def nearest_context(valid: Tensor, cameras: Cameras, target: Cameras, *, max_generated: int,
                    inputs: int | None = None) -> Tensor:
    """``(B, S)`` bool: the views to condition on, out of a set with ``valid (B, S)`` and ``cameras (B, S)``,
    for ``target (B,)`` cameras: every valid input slot (the first ``inputs`` slots; None: the first valid slot)
    and at most ``max_generated`` (``K >= 0``) other valid slots, nearest in pose first (module docstring).
    With ``K`` at least the number of other valid views this is ``valid`` itself."""
    if max_generated < 0:
        raise ValueError(f"max_generated must be >= 0, got {max_generated}")
    valid = valid.bool().cpu()
    B, S = valid.shape
    slots = torch.arange(S)
    if inputs is None:
        is_input = torch.nn.functional.one_hot(valid.long().argmax(dim=1), S).bool()
    else:
        is_input = (slots < inputs).expand(B, S)
    is_input = is_input & valid
    candidates = valid & ~is_input
    if max_generated == 0 or not candidates.any():
        return is_input
    key = torch.round(pose_angles(cameras.to("cpu"), target.to("cpu")) * 1e6)  # µrad: symmetric views tie
    key = torch.where(candidates, key, torch.full_like(key, float("inf")))
    first = torch.sort(key.flip(1), dim=1, stable=True).indices[:, :max_generated]  # ties: the later slot
    picked = torch.zeros(B, S, dtype=torch.bool).scatter_(1, S - 1 - first, True)
    return is_input | (picked & candidates)
