"""Interpolated denoising (ViewFusion: Yang et al., "ViewFusion: Towards Multi-View Consistency via
Interpolated Denoising", CVPR 2024, Sec. 3): a training-free set denoiser over a single-view model.

At every denoiser call each sample conditions on *every* view of its set that lies inside a window
around the target camera (and always on its input view). The views are the branches of **one**
batched call of the single-view denoiser; all branches share ``x_t`` and σ (and, by default, the
sampler's noise), and their predictions are fused with fixed weights (:class:`Strategy` does the
batching, ``max_rows`` chunking and fusion). With ``Δ_i`` the distance between view ``i`` and the
target (radians, below), view 0 the input and ``i, j ≥ 1`` the other views inside the window::

    w_0 = exp(−(Δ_0 / π) / T_in)                                   (the input view)
    w_i = (1 − w_0) · softmax_i(−Δ_i / max_j Δ_j / T_auto)         (the other views, i, j in the window)

An input without other views in the window gets weight 1. The weights sum to 1, so fusing x̂0 is
fusing ε̂ (``ε̂ = (x − x̂0)/σ`` is affine in x̂0 for a shared ``x``), which with one shared noise draw
per step is the paper's fusion of the branches' next states ``x_{t−1}``. Defaults (the paper's):
``T_in = 0.5``, ``T_auto = 0.5``, window 125°.

**Distance** ``Δ`` (``distance=``): ``"azimuth"`` (the paper's orbits, the default) is the wrapped
difference in ``[0, π]`` between the azimuths (``atan2(y, x)`` about world +z) of the camera centres
of view ``i`` and of the target; elevation and radius are ignored. It is *not* the rotation angle
between the cameras' viewing directions. ``"azimuth+elevation"`` adds ``|Δ elevation|`` (the
paper's single-target mode). Object-centric cameras around the origin are assumed
(``docs/cameras.md``).

**Window** (``window_deg``, default 125°): the other views with ``Δ_i < window`` are kept. The input
view (the first valid view of the set: in :func:`~vantage.sampling.autoregressive_orbit` the first
input) is always kept, also outside the window (a warning says so, once per strategy). Further
input views are treated like generated views (the paper has one input).

**Bounded context** (``max_context=K``): every view the strategy conditions on costs a network row, so without a
bound the view generated at orbit step ``j`` costs up to ``N + j`` rows per call (``N`` inputs, ``j`` generated
views before it, those inside the window). With ``K`` only the input views and the ``K`` generated views nearest in
pose to the target (:func:`~vantage.sampling.context.nearest_context`, as the composed strategy's ``max_context``)
are candidates; the window and the weights then apply to them as above, so a call costs at most ``N + K`` rows.
``K`` at least the number of generated views is the unbounded strategy exactly.

**Separate noise per branch** (``separate_noise=True``): in the reference implementation every
branch takes its own sampler step with its *own* noise draw ``z_i`` from the shared ``x_t``, and the
next states are then fused: ``x_{t−1} = Σ_i w_i (μ_i + σ_up z_i) = μ(fused ε̂) + σ_up Σ_i w_i z_i``.
The state stays shared; only the fresh noise differs: its standard deviation is
``σ_up·sqrt(Σ_i w_i²) < σ_up``. :func:`branch_noise_sampler` reproduces that exactly for any
sampler: the sampler runs one row per branch (all starting from the sample's ``x_T``, each with its
own noise generator) and the denoiser, given those rows, evaluates the branches at their weighted
mean (the fused state) and returns the fused x̂0 to every row. All samplers are affine in ``(x, x̂0)``
per step, so the weighted mean of the rows follows exactly the fused chain with
``Σ_i w_i z_i`` as its noise. For deterministic samplers (euler, heun, dpmpp_2m, lms, ddim η = 0)
both variants are the same. :meth:`InterpolatedDenoising.wrap_sampler` applies it; the orbit
loop calls it.

**Single-target mode** (:func:`walk_cameras`, :func:`sample_single_target`): a far target is
reached through intermediate poses, at most ``step_deg`` (10°) apart in azimuth and in elevation,
generated autoregressively with ``distance="azimuth+elevation"``; the last one is the result.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from vantage.cameras import Cameras, cartesian_to_spherical, look_at, spherical_to_cartesian
from vantage.data.pairs import sample_seed
from vantage.diffusion.noise import GeneratorLike
from vantage.sampling.context import nearest_context
from vantage.sampling.strategies import Branches, DenoiserFn, Strategy, ViewSetCond, register_strategy

__all__ = ["InterpolatedDenoising", "DISTANCES", "view_distances", "interpolation_weights", "branch_noise_sampler",
           "walk_cameras", "sample_single_target", "WalkResult"]

DISTANCES = ("azimuth", "azimuth+elevation")
_OUTSIDE = ("interpolated denoising: the input view is outside the window around the target camera; it is kept "
            "anyway (the input always conditions), the other views outside the window are not used")


def view_distances(views: Cameras, target: Cameras, distance: str = "azimuth") -> Tensor:
    """``(B, K)`` float64 distances ``Δ`` in radians between views ``(B, K)`` and targets ``(B,)``.

    ``"azimuth"``: wrapped azimuth difference of the camera centres about world +z, in ``[0, π]``;
    ``"azimuth+elevation"``: plus the absolute elevation difference (module docstring).
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    v = cartesian_to_spherical(views.centers.double())  # (B, K, 3): polar, azimuth, radius
    t = cartesian_to_spherical(target.centers.double())[:, None]  # (B, 1, 3)
    delta = (torch.remainder(v[..., 1] - t[..., 1] + math.pi, 2 * math.pi) - math.pi).abs()
    if distance == "azimuth+elevation":
        delta = delta + (v[..., 0] - t[..., 0]).abs()
    return delta


def interpolation_weights(delta: Tensor, valid: Tensor, *, input_slot: Tensor | None = None, t_in: float = 0.5,
                          t_auto: float = 0.5, window_deg: float = 125.0) -> tuple[Tensor, Tensor]:
    """ViewFusion's fusion weights (module docstring) of the views of a set.

    Args:
        delta: ``(B, K)`` distances to the target in radians (:func:`view_distances`).
        valid: ``(B, K)`` bool, the views that exist.
        input_slot: ``(B,)`` long, the input view of each sample (default: its first valid view).
        t_in, t_auto: temperatures ``T_in`` and ``T_auto`` (> 0).
        window_deg: keep the other views with ``Δ < window`` (degrees); the input is always kept.

    Returns:
        ``(weights (B, K) float64, active (B, K) bool)``: the weights sum to 1 per sample and are 0
        off the active views; ``active`` holds the input and the kept views with a positive weight.
    """
    delta, valid = delta.double(), valid.bool().to(delta.device)
    B, K = delta.shape
    slot = valid.long().argmax(dim=1) if input_slot is None else input_slot.long().to(delta.device)
    is_input = torch.nn.functional.one_hot(slot, K).bool()
    others = valid & ~is_input & (delta < math.radians(window_deg))
    has_others = others.any(dim=1)
    w0 = torch.exp(-(delta.gather(1, slot[:, None]).squeeze(1) / math.pi) / t_in)
    w0 = torch.where(has_others, w0, torch.ones_like(w0))
    scale = torch.where(others, delta, torch.zeros_like(delta)).amax(dim=1, keepdim=True).clamp_min(1e-12)
    logits = (-delta / scale / t_auto).masked_fill(~others, -math.inf)
    soft = torch.where(others, torch.softmax(logits, dim=1), torch.zeros_like(delta))  # NaN rows are not selected
    weights = torch.where(is_input, w0[:, None], soft * (1.0 - w0[:, None]))
    return weights, is_input | (others & (weights > 0))


@register_strategy
class InterpolatedDenoising(Strategy):
    """ViewFusion's interpolated denoising as a :class:`Strategy` (``"interpolated"``; module docstring).

    Args:
        denoiser: single-view denoiser ``D(x, sigma, ViewCond)`` (guided or not: guidance sits inside
            every branch).
        t_in: input temperature ``T_in`` (> 0; the paper: 0.5, ablation 1/3).
        t_auto: temperature ``T_auto`` of the other views (> 0; the paper: 0.5, ablation 1 and 0.1).
        window_deg: the window around the target, degrees (>= 0; the paper: 125).
        distance: ``"azimuth"`` or ``"azimuth+elevation"`` (module docstring).
        separate_noise: the reference's separate noise draw per branch (module docstring); applied by
            :meth:`wrap_sampler`.
        max_rows: at most this many branches per network call (same result, less memory).
        max_context: ``K >= 0``: condition on the input views and only the ``K`` other views nearest in pose to the
            target (module docstring; ``ViewSetCond.inputs`` says which slots are inputs); None: every view.

    ``last_weights`` ``(B, K)`` and ``last_active`` ``(B, K)`` hold the weights of the latest call.
    """

    name = "interpolated"

    def __init__(self, denoiser: DenoiserFn, *, t_in: float = 0.5, t_auto: float = 0.5, window_deg: float = 125.0,
                 distance: Literal["azimuth", "azimuth+elevation"] = "azimuth", separate_noise: bool = False,
                 max_rows: int | None = None, max_context: int | None = None) -> None:
        super().__init__(denoiser, max_rows=max_rows)
        for key, value in (("t_in", t_in), ("t_auto", t_auto)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"interpolated: {key} must be a temperature > 0, got {value!r}")
        if not (isinstance(window_deg, int | float) and window_deg >= 0):
            raise ValueError(f"interpolated: window_deg must be an angle >= 0 in degrees, got {window_deg!r}")
        if distance not in DISTANCES:
            raise ValueError(f"interpolated: distance must be one of {DISTANCES}, got {distance!r}")
        if max_context is not None and (isinstance(max_context, bool) or not isinstance(max_context, int)
                                        or max_context < 0):
            raise ValueError(f"interpolated: max_context must be None or an int >= 0 (generated views), "
                             f"got {max_context!r}")
        self.max_context = max_context
        self.t_in, self.t_auto, self.window_deg = float(t_in), float(t_auto), float(window_deg)
        self.distance, self.separate_noise = distance, bool(separate_noise)
        self.last_weights: Tensor | None = None
        self.last_active: Tensor | None = None
        self.warned = False
        self._cache: tuple[ViewSetCond, Branches] | None = None

    def weights(self, cond: ViewSetCond) -> Branches:
        """The branches of every view of the set: ``index (B, K)`` = positions, ``weight (B, K)``,
        ``active (B, K)``. They depend on the cameras only (computed once per ``cond``)."""
        if self._cache is not None and self._cache[0] is cond:
            return self._cache[1]
        valid = cond.views.valid.cpu()
        if self.max_context is not None:  # the inputs and the K nearest other views
            valid = nearest_context(valid, cond.views.cameras, cond.target, max_generated=self.max_context,
                                    inputs=cond.inputs)
        delta = view_distances(cond.views.cameras.to("cpu"), cond.target.to("cpu"), self.distance)
        w, active = interpolation_weights(delta, valid, t_in=self.t_in, t_auto=self.t_auto,
                                          window_deg=self.window_deg)
        slot = valid.long().argmax(dim=1)
        if not self.warned and (delta.gather(1, slot[:, None]) >= math.radians(self.window_deg)).any():
            warnings.warn(_OUTSIDE, stacklevel=2)
            self.warned = True
        B, K = valid.shape
        br = Branches(index=torch.arange(K).expand(B, K), weight=w, active=active)
        self._cache = (cond, br)
        return br

    def branches(self, x: Tensor, sigma: Tensor, cond: ViewSetCond) -> Branches:
        br = self.weights(cond)
        self.last_weights, self.last_active = br.weight, br.active
        return br

    def wrap_sampler(self, sampler: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """``sampler`` itself, or with ``separate_noise`` the :func:`branch_noise_sampler` around it."""
        return branch_noise_sampler(sampler, self) if self.separate_noise else sampler


def _branch_generators(generator: GeneratorLike, b_idx: Tensor, k_idx: Tensor, first: Tensor) -> GeneratorLike:
    """One generator per branch row: the sample's own for its input branch, for the others a child
    seeded from the sample generator's seed and the view's position (independent of the batch)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    gens = list(generator)
    starts = set(first.tolist())
    rows = []
    for r, (b, k) in enumerate(zip(b_idx.tolist(), k_idx.tolist())):
        g = gens[b]
        rows.append(g if r in starts else
                    torch.Generator(device=g.device).manual_seed(sample_seed(g.initial_seed(), k, 2)))
    return rows


def branch_noise_sampler(sampler: Callable[..., Tensor], strategy: InterpolatedDenoising) -> Callable[..., Tensor]:
    """``sampler`` with a separate noise draw per branch (the reference's variant; module docstring).

    The returned function has the sampler signature ``(denoiser, x (B, ...), sigmas, cond: ViewSetCond,
    *, generator, callback, **options)``; ``denoiser`` must be ``strategy``'s set denoiser (it is
    evaluated on the fused ``(B, ...)`` state) and ``strategy.weights(cond)`` gives the branches. The
    callback gets the fused ``x`` and x̂0 ``(B, ...)``. Returns the fused sample ``(B, ...)``.
    """

    def run(denoiser: DenoiserFn, x: Tensor, sigmas: Any, cond: ViewSetCond, *, generator: GeneratorLike = None,
            callback: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> Tensor:
        br = strategy.weights(cond)
        b_idx, k_idx = br.active.nonzero(as_tuple=True)  # sample-major; a sample's input branch first
        B = x.shape[0]
        w = br.weight[b_idx, k_idx].double()
        w = w / torch.zeros(B, dtype=torch.float64).index_add_(0, b_idx, w)[b_idx]
        counts = br.active.sum(dim=1)
        first = counts.cumsum(0) - counts  # (B,) row of each sample's input branch
        rows_b, first_d = b_idx.to(x.device), first.to(x.device)
        w = w.to(device=x.device, dtype=x.dtype).view(-1, *[1] * (x.ndim - 1))

        def fuse(rows: Tensor) -> Tensor:
            return torch.zeros_like(x).index_add_(0, rows_b, rows * w)

        def den(x_rows: Tensor, s_rows: Tensor, _: Any) -> Tensor:
            return denoiser(fuse(x_rows), s_rows[first_d], cond)[rows_b]

        cb = None
        if callback is not None:
            def cb(info: dict[str, Any]) -> None:
                callback({**info, "x": fuse(info["x"]), "denoised": info["denoised"][first_d]})

        gens = _branch_generators(generator, b_idx, k_idx, first)
        return fuse(sampler(den, x[rows_b], sigmas, None, generator=gens, callback=cb, **options))

    return run


# ------------------------------------------------------------------------------------ single target
def walk_cameras(start: Cameras, target: Cameras, *, step_deg: float = 10.0) -> Cameras:
    """``(n,)`` cameras from ``start`` (excluded) to ``target`` (included, exactly), at most ``step_deg``
    apart in azimuth and in elevation: ``n = max(⌈|Δaz|/step⌉, ⌈|Δel|/step⌉, 1)``.

    Azimuth (wrapped, the short way round), polar angle, radius and the intrinsics are interpolated
    linearly; the intermediate cameras look at the world origin with world +z up. ``start`` and
    ``target``: one camera each (``()`` or ``(1,)``).
    """
    if not step_deg > 0:
        raise ValueError(f"step_deg must be > 0, got {step_deg}")
    s, t = start.flatten().to("cpu"), target.flatten().to("cpu")
    if len(s) != 1 or len(t) != 1:
        raise ValueError(f"walk_cameras needs one start and one target camera, got {len(s)} and {len(t)}")
    (p0, a0, r0), (p1, a1, r1) = (cartesian_to_spherical(c.centers[0].double()).tolist() for c in (s, t))
    d_az = math.remainder(a1 - a0, 2 * math.pi)
    d_pol, step = p1 - p0, math.radians(step_deg)
    n = max(1, math.ceil(abs(d_az) / step - 1e-5), math.ceil(abs(d_pol) / step - 1e-5))  # float32 camera noise
    f = torch.arange(1, n + 1, dtype=torch.float64) / n
    eye = spherical_to_cartesian(p0 + d_pol * f, a0 + d_az * f, r0 + (r1 - r0) * f).to(s.c2w.dtype)
    c2w = look_at(eye)
    c2w[-1] = t.c2w[0]
    K = s.K[0] + (t.K[0] - s.K[0]) * f.to(s.K.dtype).view(n, 1, 1)
    K[-1] = t.K[0]
    return Cameras(c2w, K, s.width, s.height).to(start.c2w.device)


@dataclass
class WalkResult:
    """What :func:`sample_single_target` returns.

    Attributes:
        image: ``(B, 3, H, W)`` the generated view at each sample's target.
        paths: per sample the walk's cameras ``(n_b,)`` (the last is the target).
        path_images: per sample ``(n_b, 3, H, W)`` the views generated along the walk.
        nfe: denoiser calls (batch level, summed over the groups of equal walk length).
        seconds: wall time.
    """

    image: Tensor
    paths: list[Cameras]
    path_images: list[Tensor]
    nfe: int
    seconds: float


def sample_single_target(model: Any, inputs: Any, target: Cameras, *, step_deg: float = 10.0, t_in: float = 0.5,
                         t_auto: float = 0.5, window_deg: float = 125.0, separate_noise: bool = False,
                         max_rows: int | None = None, max_context: int | None = None,
                         distance: str = "azimuth+elevation",
                         seed: int | Sequence[int] | None = 0,
                         generator: torch.Generator | Sequence[torch.Generator] | None = None,
                         **orbit_options: Any) -> WalkResult:
    """ViewFusion's single-target mode: walk from the (first) input camera to ``target`` through
    :func:`walk_cameras` poses, each generated by interpolated denoising (``distance="azimuth+elevation"``)
    conditioned on the input and the poses before it; return the last view.
    (:func:`~vantage.sampling.walks.sample_target_walks`: many targets of one object, each by its own walk.)

    Args:
        model, inputs: as for :func:`~vantage.sampling.autoregressive_orbit` (``inputs``: ``ObjectViews``,
            a list of them or a ``ViewSet (B, N)``).
        target: :class:`Cameras` ``(B,)``, or one camera (``()`` / ``(1,)``) for every sample.
        step_deg: the largest azimuth and elevation step between poses (the paper: 10°).
        t_in, t_auto, window_deg, separate_noise, max_rows, max_context: :class:`InterpolatedDenoising` options
            (``max_context=K``: a pose conditions on the inputs and the ``K`` earlier poses nearest to it).
        distance: its distance, ``"azimuth+elevation"`` (the paper's single-target mode, default) or ``"azimuth"``.
        seed, generator: per-sample base seeds (:func:`~vantage.sampling.sample_seeds`); a sample's
            result does not depend on the batch.
        orbit_options: further :func:`~vantage.sampling.autoregressive_orbit` arguments (``sampler``,
            ``steps``, ``sigmas``, ``guidance``, ``device``, ``step_callback``, ...).
    """
    from vantage.sampling.orbit import as_view_set, autoregressive_orbit, sample_seeds

    t0 = time.perf_counter()
    views = as_view_set(inputs)
    B = views.batch_size
    tc = target.flatten()
    if len(tc) == 1:
        tc = Cameras(tc.c2w.expand(B, 4, 4), tc.K.expand(B, 3, 3), tc.width, tc.height)
    if len(tc) != B:
        raise ValueError(f"target must be one camera or ({B},) cameras, got {tuple(target.shape)}")
    seeds = sample_seeds(B, seed, generator)
    first = views.valid.long().argmax(dim=1)
    paths = [walk_cameras(views.cameras[b, int(first[b])], tc[b], step_deg=step_deg) for b in range(B)]
    options = {"t_in": t_in, "t_auto": t_auto, "window_deg": window_deg, "distance": distance,
               "separate_noise": separate_noise, "max_rows": max_rows, "max_context": max_context}
    image = torch.zeros_like(views.images[:, 0])
    path_images: list[Tensor] = [torch.empty(0)] * B
    nfe = 0
    for n in sorted({len(p) for p in paths}):  # samples with walks of equal length run as one batch
        group = [b for b in range(B) if len(paths[b]) == n]
        cams = Cameras.stack([paths[b] for b in group])
        res = autoregressive_orbit(model, views.index(group), cams, strategy=InterpolatedDenoising, order="sequential",
                                   seed=[seeds[b] for b in group], strategy_options=options, **orbit_options)
        nfe += res.nfe
        for r, b in enumerate(group):
            path_images[b] = res.images[r].cpu()
            image[b] = res.images[r, -1].to(image.device)
    return WalkResult(image=image, paths=paths, path_images=path_images, nfe=nfe, seconds=time.perf_counter() - t0)
