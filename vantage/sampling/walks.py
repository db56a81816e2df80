"""Many targets in ViewFusion's single-target mode (Yang et al., CVPR 2024, Sec. 3): each by its own walk.

:func:`sample_target_walks` generates every target camera of one object *independently*: a walk from the (first)
input camera to the target in steps of at most ``step_deg`` in azimuth and in elevation
(:func:`~vantage.sampling.interpolated.walk_cameras`), every pose by interpolated denoising conditioned on the
inputs and the poses of the walk before it, the last pose kept
(:func:`~vantage.sampling.interpolated.sample_single_target`). Unlike an autoregressive orbit, no target sees the
view of another target, and their noise is independent too: the walk to a camera is seeded by
:func:`target_seed`, a hash of the run's seed and of the camera itself (pose and intrinsics to 1e-4), so a
target's result does not depend on which other targets are sampled, nor on their number or order.

Cost: a target ``Δaz`` and ``Δel`` away from the input walks ``n = max(⌈|Δaz|/step⌉, ⌈|Δel|/step⌉, 1)`` poses,
pose ``i`` conditioned on up to ``N + i − 1`` views (``N`` inputs; those within the window are branches of one
network call). The 23 targets of a 24-view orbit at 10° steps walk 2·(2 + 3 + 5 + 6 + … + 17) + 18 = 222 poses,
about ten times the 23 views the orbit generates. A target whose camera equals an input camera (the orbit's
rule: within 1e-4) is that input, without a walk.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.pairs import sample_seed
from vantage.data.views import ViewSet
from vantage.sampling.interpolated import sample_single_target, walk_cameras
from vantage.sampling.orbit import Inputs, OrbitResult, _coincident, as_view_set

__all__ = ["TargetWalks", "plan_walks", "sample_target_walks", "target_seed"]

_WALK_SALT = 0x57A1  # keeps walk seeds apart from the run seed's other uses


def target_seed(seed: int, camera: Cameras) -> int:
    """The base seed of the walk to ``camera`` (one camera): a stable hash of ``seed`` and of the camera's
    ``c2w`` (to 1e-4) and ``K`` (to 1e-2 pixels). Equal cameras get equal seeds wherever they are in a target
    list (apart from a coordinate that falls exactly on a rounding boundary)."""
    c = camera.flatten().to("cpu")
    if len(c) != 1:
        raise ValueError(f"target_seed takes one camera, got {len(c)}")
    keys = [round(v * 1e4) for v in c.c2w[0, :3].double().flatten().tolist()]
    keys += [round(v * 1e2) for v in c.K[0].double().flatten().tolist()]
    return sample_seed(int(seed), _WALK_SALT, *keys)


@dataclass
class TargetWalks:
    """What :func:`sample_target_walks` returns (one object, ``T`` targets).

    Attributes:
        images: ``(T, 3, H, W)`` the view at every target, in the targets' order.
        cameras: :class:`Cameras` ``(T,)``, the targets.
        generated: ``(T,)`` bool: False where a target is an input view (copied, no walk).
        paths: per target the walk's cameras ``(n_t,)`` (the last is the target); None for a copied target.
        path_images: per target the views along the walk ``(n_t, 3, H, W)`` (the last is ``images[t]``; poses
            that coincide with an input are that input); None for a copied target.
        seeds: per target the walk's base seed (:func:`target_seed`); None for a copied target.
        set_sizes: ``(T,)`` long: size of the conditioning set when the target pose was generated (0: copied).
        nfe: denoiser calls of all walks.
        seconds: wall time.
    """

    images: Tensor
    cameras: Cameras
    generated: Tensor
    paths: list[Cameras | None]
    path_images: list[Tensor | None]
    seeds: list[int | None]
    set_sizes: Tensor
    nfe: int
    seconds: float

    @property
    def walk_lengths(self) -> list[int]:
        """Poses walked per target (0 for a copied one)."""
        return [0 if p is None else len(p) for p in self.paths]

    def orbit_result(self) -> OrbitResult:
        """The targets as a one-sample :class:`OrbitResult` (``(1, T)``; ``order``: the copied targets first, then
        the others in the given order), for code that consumes orbits."""
        gen = self.generated.tolist()
        order = [t for t, g in enumerate(gen) if not g] + [t for t, g in enumerate(gen) if g]
        cams = Cameras(self.cameras.c2w[None], self.cameras.K[None], self.cameras.width, self.cameras.height)
        return OrbitResult(images=self.images[None], cameras=cams, order=torch.tensor([order], dtype=torch.long),
                           generated=self.generated[None].clone(), set_sizes=self.set_sizes[None].clone(),
                           nfe=self.nfe, seconds=self.seconds)


def _one_object(inputs: Inputs) -> ViewSet:
    views = as_view_set(inputs)
    if views.batch_size != 1:
        raise ValueError(f"the walks sample one object: give ObjectViews or a ViewSet (1, N), got a batch of "
                         f"{views.batch_size}")
    if not views.valid.any():
        raise ValueError("every sample needs at least one input view (empty input set)")
    return views


def _plan(views: ViewSet, targets: Cameras, step_deg: float) -> tuple[list[int], list[Cameras | None]]:
    """``(input view matching each target or -1, walk cameras of each target or None)``."""
    tc = targets.to(views.cameras.c2w.device)
    match = _coincident(views, Cameras(tc.c2w[None], tc.K[None], tc.width, tc.height))[0].tolist()
    start = views.cameras[0, int(views.valid[0].long().argmax())]
    return match, [None if match[t] >= 0 else walk_cameras(start, tc[t], step_deg=step_deg) for t in range(len(tc))]


def plan_walks(inputs: Inputs, targets: Cameras, *, step_deg: float = 10.0) -> list[Cameras | None]:
    """Per target of ``targets (T,)`` the cameras of its walk from the first input of ``inputs`` (one object; the
    last camera is the target; :func:`~vantage.sampling.interpolated.walk_cameras`), or None where the target is an
    input view (copied, no walk)."""
    return _plan(_one_object(inputs), targets, step_deg)[1]


def sample_target_walks(model: Any, inputs: Inputs, targets: Cameras, *, step_deg: float = 10.0, seed: int | None = 0,
                        progress: bool = False, step_callback: Callable[[dict[str, Any]], None] | None = None,
                        **options: Any) -> TargetWalks:
    """Every camera of ``targets`` by its own single-target walk from the inputs (module docstring).

    Args:
        model: a :class:`~vantage.methods.base.Method` with a single-view denoiser, or such a denoiser.
        inputs: the views of **one** object: ``ObjectViews``, or a ``ViewSet (1, N)``; the walks start at the
            first input's camera and every input conditions every pose.
        targets: :class:`Cameras` ``(T,)`` at the inputs' image size.
        step_deg: the largest azimuth and elevation step of a walk (the paper: 10°).
        seed: the run's seed; the walk to target ``c`` is seeded by ``target_seed(seed, c)`` (None: a random seed).
        progress: a progress bar over the targets.
        step_callback: the samplers' per-denoising-step callback of every walk, with ``"target"`` (its index),
            ``"view_step"`` (the walk's generated pose) and ``"final"`` (True for the target pose) in ``info``.
        options: :func:`~vantage.sampling.interpolated.sample_single_target` arguments (``t_in``, ``t_auto``,
            ``window_deg``, ``distance``, ``separate_noise``, ``max_rows``, ``sampler``, ``steps``, ``sigmas``,
            ``guidance``, ``device``, ``sampler_options``, ...).
    """
    t0 = time.perf_counter()
    views = _one_object(inputs)
    if not (isinstance(step_deg, int | float) and math.isfinite(step_deg) and step_deg > 0):
        raise ValueError(f"step_deg must be an angle > 0 in degrees, got {step_deg!r}")
    if targets.c2w.ndim != 3 or len(targets) == 0:
        raise ValueError(f"targets must be (T,) cameras with T >= 1, got {tuple(targets.shape)}")
    H, W = views.images.shape[-2:]
    if (targets.width, targets.height) != (W, H):
        raise ValueError(f"target cameras are for {targets.width}x{targets.height} images, the inputs are {W}x{H}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)))
    T = len(targets)
    tc = targets.to(views.cameras.c2w.device)
    match, plan = _plan(views, tc, step_deg)
    n_in = int(views.valid.sum())

    images = torch.zeros(T, 3, H, W, dtype=views.images.dtype)
    generated = torch.zeros(T, dtype=torch.bool)
    set_sizes = torch.zeros(T, dtype=torch.long)
    paths: list[Cameras | None] = [None] * T
    path_images: list[Tensor | None] = [None] * T
    seeds: list[int | None] = [None] * T
    nfe = 0
    bar: Any = range(T)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc="targets", unit="target")
    for t in bar:
        path = plan[t]
        if path is None:  # the target is an input view
            images[t] = views.images[0, match[t]].cpu()
            continue
        n_gen = int((_coincident(views, Cameras(path.c2w[None], path.K[None], W, H)) < 0).sum())
        cb = None
        if step_callback is not None:
            def cb(info: dict[str, Any], _t: int = t, _last: int = n_gen - 1) -> None:
                step_callback({**info, "target": _t, "final": info["view_step"] == _last})
        seeds[t] = target_seed(seed, tc[t])
        res = sample_single_target(model, views, tc[t], step_deg=step_deg, seed=[seeds[t]], step_callback=cb,
                                   **options)
        images[t] = res.image[0].cpu()
        paths[t], path_images[t] = res.paths[0], res.path_images[0]
        generated[t], set_sizes[t] = True, n_in + n_gen - 1
        nfe += res.nfe
    return TargetWalks(images=images, cameras=targets, generated=generated, paths=paths, path_images=path_images,
                       seeds=seeds, set_sizes=set_sizes, nfe=nfe, seconds=time.perf_counter() - t0)
