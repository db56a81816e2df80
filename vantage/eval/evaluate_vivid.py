"""VIVID options of ``vantage evaluate --checkpoint``: the guide network and the super-resolution stage.

VIVID (Elata et al. 2024) samples with guidance by a second network, ``D̃ = D_g + w·(D − D_g)`` (Karras et al.
2024, "Guiding a Diffusion Model with a Bad Version of Itself", Eq. 2), and chains a super-resolution stage after
the base model. Measuring either needs them in the evaluation:

* ``--guide RUN`` makes ``RUN`` the guide network of a ``vivid`` checkpoint (as ``vantage sample --guide``);
  ``--guidance W`` overrides the protocol's weight (1: unguided). :func:`describe_guidance` says what ran, so
  ``metrics.json`` never records a weight that had no effect (the default 1.5 without a guide samples unguided).
* ``--sr-checkpoint SR`` chains a ``vivid-sr`` model: the protocol is evaluated at the SR model's resolution ``R``;
  the base model generates at its own ``r`` from the input views downsampled to ``r`` (antialiased, as the SR
  stage is trained), then every generated target is super-resolved to ``R``, conditioned on the first input view
  at ``R`` and the target's camera (:meth:`vantage.methods.vivid_sr.VIVIDSR.upsample`). Sample ``k`` of an object
  draws the SR noise from its own generator (seeded by the sample's seed), so results do not depend on the other
  objects. Ground truth and scores are at ``R``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from vantage.cameras import Cameras
from vantage.data.views import ObjectViews
from vantage.eval.scorer import EvaluationError

__all__ = ["describe_guidance", "attach_guide", "load_sr_stage", "at_resolution", "super_resolve_targets"]

_SR_SALT = 0x5125  # SR noise seed = sample seed XOR this (also vantage sample's salt)


def describe_guidance(method: Any, guidance: float) -> tuple[str, dict[str, Any]]:
    """``(text, record entries)`` of the guidance that runs with weight ``guidance``. ValueError for a VIVID weight
    that needs a guide network the model does not have, and for VIVID's SR stage (sampled through its base)."""
    if method.name == "vivid-sr":
        raise ValueError("this checkpoint is VIVID's super-resolution stage; evaluate or sample the base model and "
                         "chain it (--sr-checkpoint)")
    if method.name != "vivid":
        return f"{guidance:g}", {"guidance": guidance}
    if guidance in (0.0, 1.0):
        return "none (weight 1)", {"guidance": "none (weight 1)", "guide": None}
    guide = method.resolve_guide()
    if guide is None:
        if guidance == method.config.default_guidance:
            return "none (no guide network)", {"guidance": "none (no guide network)", "guide": None}
        raise ValueError(f"guidance {guidance:g} weighs a guide network, and this vivid checkpoint has none: give "
                         f"--guide CHECKPOINT (e.g. its unconditional model), or --guidance 1 for none")
    where = method.config.guide_checkpoint
    return (f"{guidance:g} by the guide network {where} (D_g + w·(D − D_g))",
            {"guidance": guidance, "guide": str(Path(where).resolve())})


def attach_guide(method: Any, guide: str | Path | None) -> None:
    """Make ``guide`` (a run or checkpoint folder) the guide network of a ``vivid`` model; None: leave it."""
    if guide is None:
        return
    if method.name != "vivid":
        raise EvaluationError(f"--guide gives VIVID's guide network; a '{method.name}' model has none (its guidance "
                              f"is classifier-free)")
    if not Path(guide).exists():
        raise EvaluationError(f"--guide {guide}: no such run or checkpoint folder")
    method.config.guide_checkpoint = str(guide)


def load_sr_stage(path: str | Path, base: Any, resolution: int, device: str) -> tuple[Any, Path]:
    """The ``vivid-sr`` model of ``path`` and its checkpoint folder; EvaluationError unless it upsamples the base
    model's resolution to the protocol's ``resolution``."""
    from vantage.train.checkpoint import find_checkpoint, load_checkpoint

    sr = load_checkpoint(path, device=device).eval()
    p = Path(path)
    folder = p if (p / "model.safetensors").is_file() else (find_checkpoint(p) or p)
    if sr.name != "vivid-sr":
        raise EvaluationError(f"--sr-checkpoint {folder}: a '{sr.name}' model, not VIVID's super-resolution stage "
                              f"(vivid-sr)")
    low, high, b = sr.config.low_resolution, sr.config.resolution, base.config.resolution
    if low != b:
        raise EvaluationError(f"--sr-checkpoint {folder} upsamples {low}x{low} images to {high}x{high}, but the "
                              f"checkpoint's model generates {b}x{b}: they do not chain")
    if high != resolution:
        raise EvaluationError(f"--sr-checkpoint {folder} makes {high}x{high} images but the protocol evaluates at "
                              f"{resolution}x{resolution}; add --resolution {high} or use a protocol at {high} px")
    return sr, folder


def at_resolution(views: ObjectViews, size: int) -> ObjectViews:
    """``views`` downsampled to ``size x size`` (antialiased, as the SR stage's training input) with their cameras
    rescaled; masks and depth are dropped (the base model does not read them)."""
    from vantage.methods.vivid_sr import downsample

    cams = views.cameras.resize(size, size)
    return dataclasses.replace(views, images=downsample(views.images, size), cameras=cams, masks=None, depth=None)


@torch.no_grad()
def super_resolve_targets(sr: Any, generated: torch.Tensor, source: ObjectViews, targets: Cameras,
                          seeds: list[int]) -> tuple[torch.Tensor, int]:
    """``generated (K, T, 3, r, r)`` -> ``(K, T, 3, R, R)`` super-resolved with the first view of ``source`` (at
    ``R``) and the ``targets`` cameras ``(T,)``; sample ``k`` draws from a generator seeded by ``seeds[k]``. Also
    returns the SR model's network calls per target."""
    k_samples, n = generated.shape[:2]
    src = source.images[:1].expand(n, -1, -1, -1)
    src_cam = source.cameras[[0] * n]
    calls = [0]
    hook = sr.net.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))  # the stage's NFE
    try:
        out = [sr.upsample(generated[k], src, src_cam, targets,
                           generator=torch.Generator().manual_seed(int(seeds[k]) ^ _SR_SALT)).cpu()
               for k in range(k_samples)]
    finally:
        hook.remove()
    return torch.stack(out), calls[0] // max(k_samples, 1)
