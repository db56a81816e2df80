"""Multi-view sampling: strategies over a set of conditioning views and autoregressive orbits.

- :mod:`~vantage.sampling.strategies`: :class:`ViewSetCond`, :class:`Strategy` and the ``single`` /
  ``stochastic`` (3DiM) strategies (``interpolated`` registers itself from its module),
  :func:`make_strategy`, and classifier-free guidance of a single-view denoiser (:func:`view_cfg_denoiser`).
- :mod:`~vantage.sampling.interpolated`: ViewFusion's interpolated denoising (Yang et al. 2024), the
  ``interpolated`` strategy (:class:`InterpolatedDenoising`, its weights), its per-branch-noise sampler
  variant and the single-target walk (:func:`sample_single_target`).
- :mod:`~vantage.sampling.walks`: every target of an object by its own single-target walk
  (:func:`sample_target_walks`), seeded per target camera.
- :mod:`~vantage.sampling.context`: a bounded conditioning context (the inputs and the ``K`` generated views
  nearest in pose, :func:`nearest_context`), the ``max_context`` of ViewFusion's composed strategy and of
  interpolated denoising.
- :mod:`~vantage.sampling.strategy_choice`: which strategy a method samples with by default and which options fit
  which strategy (:func:`~vantage.sampling.strategy_choice.choose_strategy`), shared by ``vantage sample``,
  ``vantage serve``, ``vantage evaluate`` and the benchmarks.
- :mod:`~vantage.sampling.orbit`: :func:`autoregressive_orbit` (generate a view, add it to the set,
  next target; or ``autoregressive=False``: every target from the inputs only), generation orders and
  per-sample seeding.
- :mod:`~vantage.sampling.inputs`: what ``vantage sample`` reads (images, object folders, input views)
  and its target cameras; :mod:`~vantage.sampling.targets`: partial arcs at any elevation and target
  cameras read from a file (``cameras.json``, nerfstudio ``transforms.json``).
- :mod:`~vantage.sampling.weights`: :class:`WeightRecorder`, ViewFusion's per-view composition weights
  of every generated view, and :func:`save_weight_maps`.

See ``docs/sampling.md``.
"""

from vantage.sampling.interpolated import InterpolatedDenoising, WalkResult, sample_single_target, walk_cameras
from vantage.sampling.orbit import OrbitResult, autoregressive_orbit, generation_order, sample_seeds
from vantage.sampling.strategies import (
    STRATEGIES,
    Branches,
    SingleView,
    StochasticConditioning,
    Strategy,
    ViewSetCond,
    make_strategy,
    view_cfg_denoiser,
)
from vantage.sampling.walks import TargetWalks, sample_target_walks, target_seed
from vantage.sampling.weights import ViewWeights, WeightRecorder, save_weight_maps

__all__ = ["OrbitResult", "autoregressive_orbit", "generation_order", "sample_seeds", "STRATEGIES", "Branches",
           "SingleView", "StochasticConditioning", "Strategy", "ViewSetCond", "make_strategy", "view_cfg_denoiser",
           "ViewWeights", "WeightRecorder", "save_weight_maps", "InterpolatedDenoising", "WalkResult",
           "sample_single_target", "walk_cameras", "TargetWalks", "sample_target_walks", "target_seed"]
