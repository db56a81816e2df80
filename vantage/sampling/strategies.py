"""Multi-view strategies: one single-view denoiser, conditioned on a *set* of views.

A view-conditioned method gives a single-view denoiser ``D(x, sigma, cond: ViewCond) -> x̂0``
(one conditioning view per sample, see :class:`vantage.methods.base.ViewCond`). A *strategy*
wraps it into a denoiser over a set, ``S(x, sigma, cond: ViewSetCond) -> x̂0``, where
:class:`ViewSetCond` holds a :class:`~vantage.data.views.ViewSet` ``(B, K)`` of conditioning
views (images, cameras, ``valid`` mask) and the ``(B,)`` target cameras. A strategy has the
denoiser signature, so every sampler of :mod:`vantage.diffusion.samplers` runs it unchanged.

Every strategy works the same way. At each denoiser call :meth:`Strategy.branches` decides, per
sample, which views of the set to condition on (``M`` *branches*: an index into the set and a
fusion weight each); all branches of all samples then run as **one batched call** of the
single-view denoiser (optionally split into chunks of ``max_rows`` rows to bound memory), and
the per-branch predictions are fused by their weights. All branches share ``x`` and σ, so
fusing x̂0 with weights that sum to one is the same as fusing ε̂ (``ε = (x − x̂0)/σ`` is affine
in x̂0).

* :class:`SingleView` (``"single"``): one fixed view of the set (the input by default).
* :class:`StochasticConditioning` (``"stochastic"``, Watson et al. 2022, 3DiM, Sec. 3.2): at
  *every denoiser call* one view is drawn uniformly from the sample's valid views (the input and
  every view generated so far), with the strategy's own generator(s); a list of per-sample
  generators makes each sample's draws independent of the batch size. One branch per sample,
  so memory does not grow with the set.
* :class:`~vantage.sampling.interpolated.InterpolatedDenoising` (``"interpolated"``, ViewFusion,
  Yang et al. 2024): every view inside an azimuth window around the target (and the input) is a
  branch, fused with the paper's weights; it only implements :meth:`Strategy.branches` (the
  extension point), batching, chunking and fusion are inherited. See
  :mod:`vantage.sampling.interpolated`.

A strategy may also adapt the sampler that runs it (:meth:`Strategy.wrap_sampler`; the orbit loop
calls it): interpolated denoising's "separate noise per branch" variant does.

Classifier-free guidance (Ho & Salimans 2022) for any single-view denoiser that honours
``ViewCond.drop``: :func:`view_cfg_denoiser`, built on :func:`vantage.diffusion.guidance.cfg_denoiser`
(conditional and unconditional rows in one batched call).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.views import ViewSet
from vantage.diffusion.denoisers import DenoiserWrapper, broadcast_sigma
from vantage.diffusion.guidance import cfg_denoiser
from vantage.diffusion.noise import GeneratorLike, check_generator
from vantage.methods.base import ViewCond

__all__ = ["ViewSetCond", "Branches", "Strategy", "SingleView", "StochasticConditioning", "STRATEGIES",
           "register_strategy", "make_strategy", "view_cfg_denoiser", "GuidedViewDenoiser"]

DenoiserFn = Callable[[Tensor, Tensor, Any], Tensor]


@dataclass
class ViewSetCond:
    """Conditioning of a set denoiser: a set of views per sample and the camera to generate.

    Attributes:
        views: :class:`ViewSet` ``(B, K)``: images ``(B, K, 3, H, W)`` in [-1, 1], cameras
            ``(B, K)``, ``valid (B, K)``; every sample needs at least one valid view.
        target: :class:`Cameras` ``(B,)`` of the views being generated.
        inputs: how many leading slots of ``views`` hold the input views (:func:`~vantage.sampling.autoregressive_orbit`
            sets it: the inputs first, then the generated views); None: unknown (the first valid view is the input).
    """

    views: ViewSet
    target: Cameras
    inputs: int | None = None

    def __post_init__(self) -> None:
        b = self.views.batch_size
        if tuple(self.target.shape) != (b,):
            raise ValueError(f"ViewSetCond.target cameras must have shape ({b},), got {tuple(self.target.shape)}")
        empty = (~self.views.valid.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"ViewSetCond: sample(s) {empty} have an empty conditioning set (no valid view)")

    @property
    def batch_size(self) -> int:
        return self.views.batch_size

    def view_cond(self, b_idx: Tensor, v_idx: Tensor) -> ViewCond:
        """:class:`ViewCond` of ``R`` rows: view ``v_idx[r]`` of sample ``b_idx[r]`` (both ``(R,)``)."""
        cams = self.views.cameras
        source = Cameras(cams.c2w[b_idx, v_idx], cams.K[b_idx, v_idx], cams.width, cams.height)
        return ViewCond(self.views.images[b_idx, v_idx], source, self.target[b_idx])


@dataclass
class Branches:
    """Which views each sample conditions on in one denoiser call.

    Attributes:
        index: ``(B, M)`` long, positions in the set (``ViewSetCond.views``' second dimension).
        weight: ``(B, M)`` fusion weights (normalised over the active branches of each sample);
            ``None`` means equal weights.
        active: ``(B, M)`` bool, branches to evaluate (``None``: all). Inactive ones cost nothing.
    """

    index: Tensor
    weight: Tensor | None = None
    active: Tensor | None = None


class Strategy(DenoiserWrapper):
    """Base class: a set denoiser ``S(x (B, 3, H, W), sigma (B,), cond: ViewSetCond) -> x̂0 (B, 3, H, W)``.

    Subclasses implement :meth:`branches`. ``max_rows`` caps the rows of one call of the
    single-view denoiser (branches are chunked); ``None`` runs all branches in one call.
    """

    name: ClassVar[str] = "base"

    def __init__(self, denoiser: DenoiserFn, *, max_rows: int | None = None) -> None:
        super().__init__(denoiser, "D(x, sigma, cond: ViewCond)")
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}")
        self.max_rows = max_rows
        self.calls = 0  # denoiser calls made (NFE at the batch level)

    def branches(self, x: Tensor, sigma: Tensor, cond: ViewSetCond) -> Branches:  # pragma: no cover - abstract
        raise NotImplementedError

    def wrap_sampler(self, sampler: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """The sampler function to run this strategy with (``sampler`` itself unless a strategy needs
        more than a denoiser, e.g. per-branch noise); same signature as the samplers."""
        return sampler

    def forward(self, x: Tensor, sigma: Tensor | float, cond: ViewSetCond) -> Tensor:
        if not isinstance(cond, ViewSetCond):
            raise TypeError(f"a {type(self).__name__} strategy needs cond: ViewSetCond, got {type(cond).__name__}")
        B = x.shape[0]
        if cond.batch_size != B:
            raise ValueError(f"cond has {cond.batch_size} samples but x has {B}")
        s = broadcast_sigma(sigma, x)
        br = self.branches(x, s, cond)
        index = br.index.to(x.device)
        if index.ndim != 2 or index.shape[0] != B:
            raise ValueError(f"branches: index must be (B={B}, M), got {tuple(index.shape)}")
        active = torch.ones_like(index, dtype=torch.bool) if br.active is None else br.active.to(x.device)
        if not active.any(dim=1).all():
            raise ValueError("branches: every sample needs at least one active branch")
        b_idx, m_idx = active.nonzero(as_tuple=True)  # sample-major order
        v_idx = index[b_idx, m_idx]
        valid = cond.views.valid.to(x.device)
        if not valid[b_idx, v_idx].all():
            raise ValueError("branches: a branch points at an invalid (padding) slot of the view set")
        out = self._run(x, s, cond, b_idx, v_idx)
        self.calls += 1
        if index.shape[1] == 1 and br.active is None:
            return out  # one branch per sample, rows already in batch order
        w = (torch.ones(b_idx.shape, dtype=out.dtype, device=out.device) if br.weight is None
             else br.weight.to(device=out.device, dtype=out.dtype)[b_idx, m_idx])
        total = torch.zeros(B, dtype=out.dtype, device=out.device).index_add_(0, b_idx, w)
        if not (total > 0).all():
            raise ValueError("branches: the fusion weights of a sample sum to zero")
        fused = torch.zeros_like(x, dtype=out.dtype).index_add_(0, b_idx, out * w.view(-1, *[1] * (x.ndim - 1)))
        return fused / total.view(-1, *[1] * (x.ndim - 1))

    def _run(self, x: Tensor, s: Tensor, cond: ViewSetCond, b_idx: Tensor, v_idx: Tensor) -> Tensor:
        """Evaluate the single-view denoiser on rows ``(b_idx, v_idx)``; returns ``(R, ...)``."""
        rows = b_idx.numel()
        step = rows if self.max_rows is None else self.max_rows
        outs = []
        for lo in range(0, rows, step):
            b, v = b_idx[lo:lo + step], v_idx[lo:lo + step]
            y = self.denoiser(x[b], s[b], cond.view_cond(b.to(cond.views.images.device),
                                                        v.to(cond.views.images.device)))
            if not isinstance(y, Tensor) or y.shape != (b.numel(), *x.shape[1:]):
                got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(f"single-view denoiser returned {got}, expected {(b.numel(), *x.shape[1:])}")
            outs.append(y)
        return outs[0] if len(outs) == 1 else torch.cat(outs)


class SingleView(Strategy):
    """Condition on one view of the set: position ``view`` (an int, or a ``(B,)`` tensor per sample).

    With the default ``view=0`` (the input of an orbit) this is plain single-view conditioning.
    """

    name = "single"

    def __init__(self, denoiser: DenoiserFn, view: int | Tensor = 0, *, max_rows: int | None = None) -> None:
        super().__init__(denoiser, max_rows=max_rows)
        self.view = view

    def branches(self, x: Tensor, sigma: Tensor, cond: ViewSetCond) -> Branches:
        B, K = cond.views.valid.shape
        v = torch.as_tensor(self.view, dtype=torch.long)
        v = v.expand(B) if v.ndim == 0 else v
        if v.shape != (B,) or (v < 0).any() or (v >= K).any():
            raise ValueError(f"single: view must be an int or a ({B},) tensor of positions in [0, {K}), "
                             f"got {self.view!r}")
        return Branches(index=v.reshape(B, 1).clone())


class StochasticConditioning(Strategy):
    """3DiM's stochastic conditioning (Watson et al. 2022, Sec. 3.2): at every denoiser call, each
    sample conditions on one view drawn uniformly from its valid views.

    Args:
        denoiser: single-view denoiser ``D(x, sigma, ViewCond)``.
        generator: ``None`` (global RNG), one ``torch.Generator`` (one stream for the batch), or a
            list of ``B`` generators, one per sample: sample ``b`` then draws only from
            ``generator[b]``, so its draws do not depend on the batch size or order.
        record: keep every draw in ``history`` (a list of ``(B,)`` long tensors, one per call).

    ``last_index`` holds the ``(B,)`` positions drawn at the latest call.
    """

    name = "stochastic"

    def __init__(self, denoiser: DenoiserFn, generator: GeneratorLike = None, *, record: bool = False,
                 max_rows: int | None = None) -> None:
        super().__init__(denoiser, max_rows=max_rows)
        self.generator = generator
        self.record = record
        self.history: list[Tensor] = []
        self.last_index: Tensor | None = None

    def _uniform(self, B: int) -> Tensor:
        """``(B,)`` float64 uniforms in [0, 1), row ``b`` from ``generator[b]`` for a list."""
        g = self.generator
        if g is None:
            return torch.rand(B, dtype=torch.float64)
        if isinstance(g, torch.Generator):
            return torch.rand(B, generator=g, dtype=torch.float64, device=g.device).cpu()
        check_generator(g, B)
        return torch.cat([torch.rand(1, generator=gb, dtype=torch.float64, device=gb.device).cpu() for gb in g])

    def branches(self, x: Tensor, sigma: Tensor, cond: ViewSetCond) -> Branches:
        valid = cond.views.valid.cpu()
        counts = valid.sum(dim=1)
        j = (self._uniform(valid.shape[0]) * counts).floor().long().clamp(max=counts - 1)  # j-th valid view
        # position of the j-th valid view = number of positions whose running count is <= j
        pos = (valid.long().cumsum(dim=1) <= j[:, None]).sum(dim=1)
        self.last_index = pos
        if self.record:
            self.history.append(pos.clone())
        return Branches(index=pos[:, None])


#: strategies by name. ``"interpolated"`` (:mod:`vantage.sampling.interpolated`, which needs this module) registers
#: itself with :func:`register_strategy` when imported; ``import vantage.sampling`` imports it.
STRATEGIES: dict[str, type[Strategy]] = {"single": SingleView, "stochastic": StochasticConditioning}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` available by its ``name`` in :data:`STRATEGIES` and :func:`make_strategy`."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or cls.name in ("", "base"):
        raise TypeError(f"register_strategy needs a named Strategy subclass, got {cls!r}")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str | Strategy | Callable[..., Strategy], denoiser: DenoiserFn, *,
                  generator: GeneratorLike = None, **options: Any) -> Strategy:
    """A strategy by name (``"single"``, ``"stochastic"``, ``"interpolated"``) around a single-view ``denoiser``.

    ``name`` may also be a :class:`Strategy` subclass or a factory ``(denoiser, generator=..., **options)``.
    ``generator`` goes to strategies whose constructor takes one (stochastic); ``options`` to the constructor
    (``view=`` for single, ``max_rows=``, ``record=``; ``t_in=``, ``t_auto=``, ``window_deg=``, ``distance=``,
    ``separate_noise=`` for interpolated).
    """
    if isinstance(name, str):
        key = name.strip().lower()
        if key not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
        cls: Any = STRATEGIES[key]
    else:
        cls = name
    if isinstance(cls, type) and issubclass(cls, Strategy):
        if "generator" in inspect.signature(cls.__init__).parameters:  # strategies that draw
            options = {**options, "generator": generator}
        return cls(denoiser, **options)
    return cls(denoiser, generator=generator, **options)


# ---------------------------------------------------------------------------------------- guidance
def _to_tree(c: ViewCond) -> dict[str, Any]:
    """A :class:`ViewCond` as a dict of tensors (what :func:`cfg_denoiser` can batch)."""
    B = c.images.shape[0]
    drop = c.drop if c.drop is not None else torch.zeros(B, dtype=torch.bool, device=c.images.device)
    return {"images": c.images, "source_c2w": c.source.c2w, "source_K": c.source.K,
            "target_c2w": c.target.c2w, "target_K": c.target.K, "drop": drop.to(torch.bool),
            "source_size": (c.source.width, c.source.height), "target_size": (c.target.width, c.target.height)}


def _from_tree(t: dict[str, Any]) -> ViewCond:
    return ViewCond(t["images"], Cameras(t["source_c2w"], t["source_K"], *t["source_size"]),
                    Cameras(t["target_c2w"], t["target_K"], *t["target_size"]), t["drop"])


def _drop_all(t: dict[str, Any]) -> dict[str, Any]:
    return {**t, "drop": torch.ones_like(t["drop"])}


class GuidedViewDenoiser(DenoiserWrapper):
    """Classifier-free guidance over the view conditioning; see :func:`view_cfg_denoiser`."""

    def __init__(self, denoiser: DenoiserFn, weight: float, *, form: Literal["eps", "x0"] = "eps",
                 clip_x0: float | None = None, batched: bool = True) -> None:
        super().__init__(denoiser, "D(x, sigma, cond: ViewCond)")
        if clip_x0 is not None and not clip_x0 > 0:
            raise ValueError(f"clip_x0 must be a bound c > 0 or None, got {clip_x0}")
        self.clip_x0 = clip_x0
        self.cfg = cfg_denoiser(self._tree_call, weight, _drop_all, form=form, batched=batched)

    def _tree_call(self, x: Tensor, sigma: Tensor, tree: dict[str, Any]) -> Tensor:
        return self.denoiser(x, sigma, _from_tree(tree))

    def forward(self, x: Tensor, sigma: Tensor | float, cond: ViewCond) -> Tensor:
        if not isinstance(cond, ViewCond):
            raise TypeError(f"view guidance needs cond: ViewCond, got {type(cond).__name__}")
        out = self.cfg(x, sigma, _to_tree(cond))
        return out if self.clip_x0 is None else out.clamp(-self.clip_x0, self.clip_x0)


def view_cfg_denoiser(denoiser: DenoiserFn, weight: float, *, form: Literal["eps", "x0"] = "eps",
                      clip_x0: float | None = None, batched: bool = True) -> GuidedViewDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022) of a single-view denoiser over its conditioning.

    The unconditional branch is the same ``ViewCond`` with ``drop`` set for every row (3DiM: the
    pose embedding zeroed, as in training with pose dropout). With ``batched=True`` both branches
    are one call of ``2B`` rows.

    Args:
        denoiser: ``D(x, sigma, cond: ViewCond) -> x̂0`` honouring ``cond.drop``.
        weight: ``form="eps"``: 3DiM's ``ε̃ = (1 + w)·ε_c − w·ε_u`` (0 = no guidance, the paper
            uses 3); ``form="x0"``: ``D̃ = D_u + w·(D_c − D_u)`` (1 = no guidance). The two are the
            same guided denoiser for ``w_x0 = 1 + w_eps``.
        clip_x0: clamp the guided x̂0 to ``[-c, c]`` (3DiM clips to [-1, 1]); None = no clamp.
        batched: one network call for both branches (False: two calls, half the peak memory).
    """
    return GuidedViewDenoiser(denoiser, weight, form=form, clip_x0=clip_x0, batched=batched)
