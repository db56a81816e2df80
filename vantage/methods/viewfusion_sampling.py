"""ViewFusion's sampling-side denoisers (Spiegl et al. 2024, arXiv 2402.02906), split from
:mod:`vantage.methods.viewfusion` (which re-exports them):

* :class:`ViewFusionDenoiser`: ``D(x, σ, ViewSetCond) -> x̂0`` composing a whole view set, with the
  per-view weights of the last call (and optionally their mean over all calls);
* :class:`ViewFusionSingleView`: its one-view case, for the strategies of :mod:`vantage.sampling`;
* :func:`composed_strategy`: the strategy factory for :func:`vantage.sampling.autoregressive_orbit`
  that composes every valid view of the set (the paper's autoregressive mode; with
  ``autoregressive=False`` the input views only), or with ``max_context=K`` the inputs and the ``K``
  generated views nearest in pose to the target (:mod:`vantage.sampling.context`), which bounds the
  cost of a view at ``N + K`` network rows per denoiser call.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from vantage.data.views import ViewSet
from vantage.diffusion.denoisers import Denoiser, append_dims
from vantage.methods.base import ViewCond
from vantage.methods.viewfusion_compose import Composition
from vantage.sampling.context import nearest_context
from vantage.sampling.strategies import ViewSetCond

if TYPE_CHECKING:
    from vantage.methods.viewfusion import ViewFusion

__all__ = ["ViewFusionDenoiser", "ViewFusionSingleView", "composed_strategy"]


class ViewFusionDenoiser(Denoiser):
    """``D(x (B, 3, H, W), σ, cond: ViewSetCond) -> x̂0 = x − σ·ε̂`` of a :class:`ViewFusion` (σ-space).

    ``forward(..., return_weights=True)`` also returns the ``(B, N, 3, H, W)`` weights; every call
    stores them in ``last_weights`` (and the :class:`Composition` in ``last``). ``calls`` counts calls.
    With ``accumulate_weights=True`` the weights of every call are also summed (``mean_weights``: their
    mean over the calls, for the weight maps of ``vantage sample --save-weights``).

    ``max_context=K`` composes only the input views (``cond.inputs`` leading slots, else the first valid view)
    and the ``K`` other views nearest in pose to the target (:func:`~vantage.sampling.context.nearest_context`;
    the slots keep their positions, the others weigh 0); None (default) composes every valid view.
    """

    def __init__(self, method: ViewFusion, clip_x0: str = "model", *, accumulate_weights: bool = False,
                 max_context: int | None = None) -> None:
        super().__init__()
        if clip_x0 not in ("model", "data", "none"):
            raise ValueError(f"clip_x0 must be 'model', 'data' or 'none', got {clip_x0!r}")
        if max_context is not None and not (isinstance(max_context, int) and max_context >= 0):
            raise ValueError(f"max_context must be None or an int >= 0 (generated views composed), got {max_context!r}")
        self.max_context = max_context
        self._context: tuple[ViewSetCond, ViewSet] | None = None
        self.method, self.clip_mode = method, clip_x0
        lo_model = -3.0 if method.config.input_range == "unit" else -1.0
        self.clip_range = {"model": (lo_model, 1.0), "data": (-1.0, 1.0), "none": None}[clip_x0]
        sched = method.sample_schedule
        self.sigma_min, self.sigma_max = sched.sigma_min * method.scale, sched.sigma_max * method.scale
        self.sigmas = (sched.sigmas * method.scale).float()
        self.last: Composition | None = None
        self.calls = 0
        self.accumulate_weights = accumulate_weights
        self.weight_sum: Tensor | None = None
        self.weight_calls = 0

    @property
    def last_weights(self) -> Tensor | None:
        """``(B, N, 3, H, W)`` weights of the latest call (None before the first)."""
        return None if self.last is None else self.last.weights

    @property
    def mean_weights(self) -> Tensor | None:
        """``(B, N, 3, H, W)`` mean of the weights over all calls (``accumulate_weights=True``; None before)."""
        return None if self.weight_sum is None else self.weight_sum / self.weight_calls

    def denoise(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor:
        if not isinstance(cond, ViewSetCond):
            raise TypeError(f"the ViewFusion set denoiser needs cond: ViewSetCond (views + target cameras), "
                            f"got {type(cond).__name__}")
        if cond.batch_size != x.shape[0]:
            raise ValueError(f"cond has {cond.batch_size} samples but x has {x.shape[0]}")
        self.last = self.method.compose(x, sigma, self.context(cond), cond.target)
        self.calls += 1
        if self.accumulate_weights:  # a new shape (another set) restarts the mean
            w = self.last.weights.detach()
            fresh = self.weight_sum is None or self.weight_sum.shape != w.shape
            self.weight_sum = w.clone() if fresh else self.weight_sum.add_(w)
            self.weight_calls = 1 if fresh else self.weight_calls + 1
        wide = torch.float32 if x.device.type == "mps" else torch.float64
        x0 = (x.to(wide) - append_dims(sigma.to(wide), x.ndim) * self.last.eps.to(wide)).to(x.dtype)
        return x0 if self.clip_range is None else x0.clamp(*self.clip_range)

    def context(self, cond: ViewSetCond) -> ViewSet:
        """The views composed for ``cond``: ``cond.views`` itself, or with ``max_context`` the same slots with
        ``valid`` cleared outside the bounded context (computed once per ``cond``; cameras only)."""
        if self.max_context is None:
            return cond.views
        if self._context is None or self._context[0] is not cond:
            v = cond.views
            keep = nearest_context(v.valid, v.cameras, cond.target, max_generated=self.max_context,
                                   inputs=cond.inputs)
            self._context = (cond, dataclasses.replace(v, valid=keep.to(v.valid.device)))
        return self._context[1]

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Any = None,  # type: ignore[override]
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        out = super().forward(x, sigma, cond)
        return (out, self.last.weights) if return_weights else out


class ViewFusionSingleView(nn.Module):
    """``D(x, σ, cond: ViewCond) -> x̂0``: a one-view set through :class:`ViewFusionDenoiser`
    (``set_denoiser``). ``ViewCond.drop`` is refused: ViewFusion has no unconditional branch."""

    def __init__(self, set_denoiser: ViewFusionDenoiser) -> None:
        super().__init__()
        self.set_denoiser = set_denoiser

    sigma_min = property(lambda self: self.set_denoiser.sigma_min)
    sigma_max = property(lambda self: self.set_denoiser.sigma_max)
    sigmas = property(lambda self: self.set_denoiser.sigmas)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: ViewCond) -> Tensor:
        if not isinstance(cond, ViewCond):
            raise TypeError(f"the single-view denoiser needs cond: ViewCond, got {type(cond).__name__}")
        if cond.drop is not None and bool(cond.drop.any()):
            raise ValueError("ViewFusion has no unconditional branch (ViewCond.drop set): use guidance 0")
        B = cond.images.shape[0]
        valid = torch.ones(B, 1, dtype=torch.bool, device=cond.images.device)
        views = ViewSet(images=cond.images[:, None], cameras=cond.source.reshape(B, 1), valid=valid,
                        view_ids=torch.zeros(B, 1, dtype=torch.long, device=valid.device))
        return self.set_denoiser(x, sigma, ViewSetCond(views, cond.target))


def composed_strategy(denoiser: Any, generator: Any = None, *, accumulate_weights: bool = False,
                      max_context: int | None = None, **options: Any) -> ViewFusionDenoiser:
    """Strategy factory for :func:`vantage.sampling.autoregressive_orbit` (``strategy=composed_strategy``):
    every denoiser call composes *all* valid views of the set (inputs and views generated so far), or with
    ``max_context=K`` the inputs and the ``K`` generated views nearest in pose to the target (the cost of a
    view is then at most ``inputs + K`` network rows per call; :mod:`vantage.sampling.context`).
    ``denoiser`` must be a ViewFusion single-view denoiser; ``generator`` is unused (deterministic).
    ``accumulate_weights``: keep the mean weights over the calls (:attr:`ViewFusionDenoiser.mean_weights`)."""
    inner = getattr(denoiser, "set_denoiser", None)
    if not isinstance(inner, ViewFusionDenoiser):
        raise TypeError("composed_strategy needs the single-view denoiser of a ViewFusion model "
                        f"(ViewFusion.single_view_denoiser()), got {type(denoiser).__name__}")
    if options:
        raise TypeError(f"composed_strategy takes only accumulate_weights and max_context, got {sorted(options)}")
    # a fresh call counter (and weight mean) per orbit step
    return ViewFusionDenoiser(inner.method, inner.clip_mode, accumulate_weights=accumulate_weights,
                              max_context=max_context)
