"""What every method provides: a config dataclass and a module with ``loss`` and denoisers.

A method is an ``nn.Module`` built from one config dataclass (every field documented). The
trainer (:mod:`vantage.train`) knows nothing else about it:

* ``pair_sampler()``: how training pairs are drawn from a :class:`~vantage.data.views.SceneDataset`
  (how many conditioning views, which mode).
* ``loss(batch, generator)``: a :class:`~vantage.data.pairs.PairBatch` on the right device
  -> ``dict`` with ``"loss"`` (scalar to minimise) and any other scalars to log.
* ``single_view_denoiser()`` (view-conditioned methods): a denoiser
  ``D(x, sigma, cond: ViewCond) -> x̂0`` for one conditioning view per sample; multi-view
  strategies (:mod:`vantage.sampling`) wrap it. Methods whose network takes a set natively
  implement ``set_denoiser()`` instead (or too).
* ``sampling_sigmas(steps, sampler=None)``: the ``(steps + 1,)`` σ's to sample on, ending with 0; a method
  may choose the grid by sampler name (the VP methods give Heun EDM's grid, ``docs/diffusion.md``).
* ``preview(batch, generator)``: a few generated views for periodic sample grids.

Shared here: :class:`SingleViewPairs` (unpacking one-conditioning-view pair batches),
:meth:`Method.evaluating` (eval mode for a block), and the config checks ``check_*`` / :func:`int_tuples`
that the methods' ``__post_init__`` use.

Checkpoints (written by :mod:`vantage.train.checkpoint`) store ``config.json`` =
``{"method": name, "config": dataclasses.asdict(config), ...}`` so a checkpoint alone rebuilds the
method through :func:`vantage.methods.build_method`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vantage.cameras import Cameras
from vantage.data.pairs import PairBatch, PairSampler

__all__ = ["MethodConfig", "Method", "ViewCond", "SingleViewPairs", "config_from_dict", "check_choice",
           "check_probability", "check_unet_resolution", "check_sampling_counts", "int_tuples", "sampler_options_for",
           "check_batch_resolution"]


@dataclass
class MethodConfig:
    """Fields every method config has.

    Attributes:
        resolution: square image side the network works at (pixels).
        sigma_data: standard deviation of the data (images in [-1, 1]); EDM-style methods use it.
        default_sampler: sampler name (``vantage.diffusion.SAMPLERS``) used when none is given.
        default_steps: sampling steps used when none is given.
        default_guidance: guidance weight used when none is given (0 = no guidance).
        default_sampler_options: extra options of the default sampler, used whenever it runs (e.g.
            ``{"s_noise": 0.7}``: colder ancestral samples; :mod:`vantage.diffusion.sampler_options`).
            Another sampler chosen at sampling time runs with its own defaults.
        preview_sampler, preview_steps, preview_count: sampler, steps and number of targets of the
            periodic sample grids written during training (the method's ``preview``).
        input_elevation_deg, input_radius, input_fov_deg: the camera assumed for an unposed input
            image in ``vantage sample`` (the training data's camera at azimuth 0: for the synthetic
            data, its ring at 30° elevation, radius 2.5, 40° horizontal field of view).
    """

    resolution: int = 64
    sigma_data: float = 0.5
    default_sampler: str = "dpmpp_2m"
    default_steps: int = 32
    default_guidance: float = 0.0
    default_sampler_options: dict[str, Any] = field(default_factory=dict)
    preview_sampler: str = "dpmpp_2m"
    preview_steps: int = 20
    preview_count: int = 4
    input_elevation_deg: float = 30.0
    input_radius: float = 2.5
    input_fov_deg: float = 40.0


@dataclass
class ViewCond:
    """Conditioning for a single-view denoiser: one source view per sample and the target camera.

    Attributes:
        images: ``(B, 3, H, W)`` source views in [-1, 1].
        source: :class:`Cameras` ``(B,)`` of the source views.
        target: :class:`Cameras` ``(B,)`` of the view to generate.
        drop: optional ``(B,)`` bool: drop the conditioning (classifier-free guidance's null branch).
    """

    images: Tensor
    source: Cameras
    target: Cameras
    drop: Tensor | None = None

    def __post_init__(self) -> None:
        b = self.images.shape[0]
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ViewCond.images must be (B, 3, H, W), got {tuple(self.images.shape)}")
        for name in ("source", "target"):
            cams = getattr(self, name)
            if tuple(cams.shape) != (b,):
                raise ValueError(f"ViewCond.{name} cameras must have shape ({b},), got {tuple(cams.shape)}")

    def to(self, device: torch.device | str) -> ViewCond:
        return ViewCond(self.images.to(device), self.source.to(device), self.target.to(device),
                        None if self.drop is None else self.drop.to(device))

    def index(self, idx: Tensor | slice) -> ViewCond:
        return ViewCond(self.images[idx], self.source[idx], self.target[idx],
                        None if self.drop is None else self.drop[idx])

    @staticmethod
    def cat(conds: list[ViewCond]) -> ViewCond:
        drops = [c.drop if c.drop is not None else torch.zeros(c.images.shape[0], dtype=torch.bool,
                                                                device=c.images.device) for c in conds]
        return ViewCond(torch.cat([c.images for c in conds]), Cameras.cat([c.source for c in conds]),
                        Cameras.cat([c.target for c in conds]), torch.cat(drops))


class Method(nn.Module):
    """Base class of every method (see the module docstring for the contract)."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config

    def pair_sampler(self) -> PairSampler:
        """How training pairs are drawn (default: one random conditioning view)."""
        return PairSampler(min_cond=1, max_cond=1, mode="random")

    def loss(self, batch: PairBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def single_view_denoiser(self) -> Any:
        raise NotImplementedError(f"method '{self.name}' has no single-view denoiser")

    @torch.no_grad()
    def preview(self, batch: PairBatch, generator: torch.Generator | None = None) -> Tensor:
        """``(B, 3, H, W)`` generated targets for sample grids (default: none)."""
        raise NotImplementedError

    def to_json(self) -> dict:
        return {"method": self.name, "config": dataclasses.asdict(self.config)}

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode inside the ``with`` block; the previous train/eval mode is restored after it (also on errors)."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)


def config_from_dict(config_class: type[MethodConfig], values: dict, *, where: str = "config") -> MethodConfig:
    """Build ``config_class`` from a dict, with an error naming unknown fields and the known ones."""
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} for {config_class.__name__}; "
                         f"known fields: {sorted(known)}")
    out = dict(values)
    for f in dataclasses.fields(config_class):  # JSON turns tuples into lists
        if f.name in out and isinstance(out[f.name], list) and "tuple" in str(f.type):
            out[f.name] = tuple(out[f.name])
    return config_class(**out)


# ------------------------------------------------------------------------------ config and batch checks
def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_probability(name: str, value: float) -> None:
    """ValueError naming ``name`` unless ``0 <= value < 1`` (a dropout probability)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def check_unet_resolution(resolution: int, ch_mult: Sequence[int], name: str = "ch_mult") -> None:
    """ValueError unless ``resolution >= 8`` and the ``len(ch_mult)`` levels of a UNet can halve it evenly."""
    factor = 2 ** (len(ch_mult) - 1)
    if resolution < 8 or resolution % factor:
        raise ValueError(f"resolution {resolution} must be >= 8 and divisible by 2^(len({name}) - 1) = {factor}")


def check_sampling_counts(config: MethodConfig) -> None:
    """ValueError unless ``default_steps``, ``preview_steps`` and ``preview_count`` are all >= 1 and
    ``default_sampler_options`` are options of ``default_sampler`` (normalised in place)."""
    from vantage.diffusion.sampler_options import check_sampler_options

    if min(config.default_steps, config.preview_steps, config.preview_count) < 1:
        raise ValueError("default_steps, preview_steps and preview_count must be >= 1")
    config.default_sampler_options = check_sampler_options(config.default_sampler, config.default_sampler_options,
                                                           "default_sampler_options")


def sampler_options_for(config: MethodConfig | None, sampler: str | None) -> dict[str, Any]:
    """The options to run ``sampler`` with for a model of ``config``: its ``default_sampler_options`` when
    ``sampler`` is None or the default sampler (``-``/``_`` and case ignored), otherwise none."""
    from vantage.diffusion.samplers import get_sampler

    if config is None:
        return {}
    if sampler is None or get_sampler(sampler) is get_sampler(config.default_sampler):
        return dict(getattr(config, "default_sampler_options", None) or {})
    return {}


def int_tuples(config: object, *names: str) -> None:
    """Set each field ``names`` of ``config`` to a tuple of ints (JSON and ``--set`` give lists)."""
    for name in names:
        setattr(config, name, tuple(int(v) for v in getattr(config, name)))


def check_batch_resolution(batch: PairBatch, resolution: int, name: str) -> None:
    """ValueError unless the targets of ``batch`` are ``resolution`` x ``resolution`` (``name``: the method)."""
    h, w = batch.target.images.shape[-2:]
    if (h, w) != (resolution, resolution):
        raise ValueError(f"{name} is configured for {resolution}x{resolution} images but the batch has {w}x{h}; "
                         f"use data at {resolution} px or --set resolution={h}")


class SingleViewPairs:
    """Mixin of a :class:`Method` trained on one (conditioning view, target) pair per sample.

    Its ``pair_sampler`` is :class:`Method`'s default (one random conditioning view); ``_unpack`` checks a
    pair batch against ``config.resolution`` and splits it. ``pair_view`` names the conditioning view in
    the error for a sample without one.
    """

    pair_view: ClassVar[str] = "conditioning view"
    name: ClassVar[str]
    config: MethodConfig

    def _unpack(self, batch: PairBatch) -> tuple[Tensor, Cameras, Tensor, Cameras]:
        """``(x_cond (B, 3, H, W), cameras (B,), x_target (B, 3, H, W), cameras (B,))`` of a pair batch."""
        check_batch_resolution(batch, self.config.resolution, self.name)
        if not batch.cond.valid[:, 0].all():
            raise ValueError(f"{self.name} needs one {self.pair_view} per sample (cond.valid[:, 0] must be all True)")
        return (batch.cond.images[:, 0], batch.cond.cameras[:, 0], batch.target.images[:, 0],
                batch.target.cameras[:, 0])
