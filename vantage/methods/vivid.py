"""VIVID: novel view synthesis with a pixel-space EDM2 diffusion model (Elata et al. 2024, "Novel View
Synthesis with Pixel-Space Diffusion Models", arXiv 2411.07765).

* Network (:class:`~vantage.nn.edm2_unet.XAttnPairNet`): two EDM2 UNets of magnitude-preserving layers
  (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", arXiv 2312.02696):
  an encoder UNet over the source view, whose attention-block outputs are appended as keys/values to the
  matching attention blocks of the denoiser UNet (joint self + cross attention).
* Camera: the 20-D vector (relative target -> source 3x4 pose, both intrinsics; standardised with the
  dataset statistics ``camera_mean``/``camera_std`` of the config) mixed into the noise embedding of both
  UNets like a class label (:mod:`vantage.methods.vivid_camera`). ``camera="plucker"`` (our extension)
  concatenates per-pixel Plücker maps of both cameras to both UNets' inputs instead.
* Optional (``epipolar_bias``, off by default): source keys near the query pixel's epipolar line get a learned
  attention bias (our formulation of the paper's option, :mod:`vantage.nn.epipolar`).
* Preconditioning and loss (EDM2): ``D = c_skip·x + c_out·F(c_in·x; c_noise)`` with σ_data = 0.5 and
  ``c_noise = ln(σ)/4``; the uncertainty-weighted loss ``λ(σ)/e^u·‖D − y‖² + u`` (EDM2 Eq. 21) with the
  learned per-σ log-variance ``u`` (:class:`~vantage.diffusion.denoisers.LogVarHead`) and
  ``ln σ ~ N(P_mean = −0.8, P_std = 1.6)``.
* Sampling: EDM's Heun sampler, 32 steps on Karras σ's (0.002 … 80, ρ = 7).
* Guidance by a separately trained weaker network (VIVID's unconditional model; autoguidance, Karras et al.
  2024, "Guiding a Diffusion Model with a Bad Version of Itself"): ``D̃ = D_g + w·(D − D_g)``, ``w = 1.5``,
  optionally only for σ in ``guidance_interval``. The guide is another checkpoint (``guide_checkpoint`` or
  the ``guide=`` argument) of the same resolution.
* Training schedule (EDM2): power-function EMA and inverse-square-root learning-rate decay are the
  trainer's (``--set train.ema=power --set train.lr_schedule=inv_sqrt``, see ``docs/vivid.md``).

Presets: ``vivid-shapes32`` (CPU-sized), ``vivid-shapes64``, ``vivid-re10k64`` (the paper's 64x64 base model),
``vivid-uncond`` (its unconditional guide) and ``vivid-shapes32-uncond``. Training pairs: any two views, or
RealEstate10K's "mid"/"long" frame gaps (``pair_gap``); single-image pairs are mixed in by the data
(:mod:`vantage.data.single_image`). The 64 -> 256 super-resolution stage is :mod:`vantage.methods.vivid_sr`.
See ``docs/vivid.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vantage.data.pairs import PairBatch, PairSampler
from vantage.diffusion.denoisers import EDM2Denoiser, LogVarHead
from vantage.diffusion.guidance import guide_by_network
from vantage.diffusion.losses import edm2_loss
from vantage.diffusion.noise import randn
from vantage.diffusion.samplers import get_sampler
from vantage.diffusion.schedules import karras_sigmas, sample_lognormal_sigma
from vantage.methods import register_preset
from vantage.methods.base import (
    Method,
    MethodConfig,
    SingleViewPairs,
    ViewCond,
    check_choice,
    check_sampling_counts,
    int_tuples,
)
from vantage.methods.vivid_camera import (
    REFERENCE_MEAN,
    REFERENCE_STD,
    camera_vector,
    normalize_camera_vector,
    plucker_maps,
)
from vantage.nn.edm2_unet import EDM2UNetConfig, XAttnPairNet
from vantage.nn.epipolar import EpipolarDistances

__all__ = ["VIVIDConfig", "VIVID"]


@dataclass
class VIVIDConfig(MethodConfig):
    """Configuration of :class:`VIVID` (flat, every field settable with ``--set field=value``).

    Attributes:
        resolution: square image side in pixels (paper: 64 for the base model).
        model_channels, channel_mult, channel_mult_noise, channel_mult_emb, num_blocks, attn_resolutions,
            extra_attn, channels_per_head, dropout: structure of both UNets
            (:class:`~vantage.nn.edm2_unet.EDM2UNetConfig`; paper: 128, (1, 2, 3, 4), None, None, 3, (16, 8),
            1, 64, 0).
        logvar_channels: Fourier features of the log-variance head (128).
        conditional: False makes the unconditional guide: no encoder, zero camera label and zero cross
            keys/values (VIVID's ``uncond``); it still takes (and ignores) a :class:`ViewCond`.
        encoder_time: give the encoder the noise level too (VIVID's default; False = its ``no_time_enc``).
        camera: ``"vector"`` (the 20-D vector as a label) or ``"plucker"`` (Plücker maps of both cameras
            concatenated to both UNets' inputs; our extension).
        camera_mean, camera_std: 20 numbers each: statistics of the raw camera vector on the training data at
            this resolution (:func:`~vantage.methods.vivid_camera.camera_statistics`); None = no standardisation.
        plucker_scale: ``"plucker"``: camera translations are divided by this scene scale.
        epipolar_bias: add the epipolar attention bias to every cross-attention block of the denoiser
            (:mod:`vantage.nn.epipolar`; with either ``camera``; needs ``conditional``). Off by default (as is the
            reference code's option).
        epipolar_strength, epipolar_width: initial per-head strength ``a`` and width ``ω`` (map pixels) of the
            bias ``a·exp(−½(d/ω)²)``; both learned. ``epipolar_strength=0`` starts as the model without it.
        P_mean, P_std: training noise levels ``ln σ ~ N(P_mean, P_std²)`` (paper: −0.8, 1.6).
        sigma_min, sigma_max, rho: Karras σ's for sampling (0.002, 80, 7).
        guide_checkpoint: run folder or checkpoint of the guide network ("" = none).
        guidance_interval: ``(σ_lo, σ_hi)``: guide only there (Kynkäänniemi et al. 2024); None = everywhere.
        default_guidance: guide weight ``w`` of ``D_g + w·(D − D_g)`` (paper: 1.5); it applies when a guide is
            configured; 1 (or 0) means no guidance.
        pair_gap: how training pairs are drawn: None = source and target uniformly among the scene's views (the
            reference's RealEstate10K training); ``"mid"`` (30-60 frames), ``"long"`` (60-120) or ``(lo, hi)`` =
            video frames with ``lo <= |source - target| <= hi`` (VIVID's evaluation gaps; ``PairSampler``'s
            ``"frame_gap"`` mode).
        pair_on_short: with ``pair_gap``, a clip too short for the gap is an ``"error"`` naming it, or ``"skip"``
            (left out and reported).
    """

    resolution: int = 64
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    channel_mult_noise: int | None = None
    channel_mult_emb: int | None = None
    num_blocks: int = 3
    attn_resolutions: tuple[int, ...] = (16, 8)
    extra_attn: int | None = 1
    channels_per_head: int = 64
    dropout: float = 0.0
    logvar_channels: int = 128
    conditional: bool = True
    encoder_time: bool = True
    camera: str = "vector"
    camera_mean: tuple[float, ...] | None = None
    camera_std: tuple[float, ...] | None = None
    plucker_scale: float = 1.0
    epipolar_bias: bool = False
    epipolar_strength: float = 1.0
    epipolar_width: float = 1.0
    P_mean: float = -0.8
    P_std: float = 1.6
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    guide_checkpoint: str = ""
    guidance_interval: tuple[float, float] | None = None
    default_sampler: str = "heun"
    default_steps: int = 32
    default_guidance: float = 1.5
    preview_sampler: str = "heun"
    preview_steps: int = 12
    pair_gap: str | tuple[int, int] | None = None
    pair_on_short: str = "error"

    def __post_init__(self) -> None:
        int_tuples(self, "channel_mult", "attn_resolutions")
        check_choice("camera", self.camera, ("vector", "plucker"))
        for name in ("camera_mean", "camera_std"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 20:
                    raise ValueError(f"{name} must hold 20 numbers (the camera vector's statistics), got {len(value)}")
                setattr(self, name, value)
        if (self.camera_mean is None) != (self.camera_std is None):
            raise ValueError("give both camera_mean and camera_std, or neither")
        if self.camera_std is not None and any(s < 0 for s in self.camera_std):
            raise ValueError("camera_std entries must be >= 0")
        if not self.P_std > 0 or not 0 < self.sigma_min < self.sigma_max or not self.plucker_scale > 0:
            raise ValueError("need P_std > 0, 0 < sigma_min < sigma_max and plucker_scale > 0")
        if self.epipolar_bias and not self.conditional:
            raise ValueError("epipolar_bias needs a conditional model: the unconditional guide has no source view "
                             "whose keys the bias could favour (set epipolar_bias=false for the guide)")
        if not self.epipolar_width > 0:
            raise ValueError(f"epipolar_width must be > 0 (map pixels), got {self.epipolar_width}")
        if self.guidance_interval is not None:
            lo, hi = (float(v) for v in self.guidance_interval)
            if not 0 <= lo <= hi:
                raise ValueError(f"guidance_interval must be (sigma_lo, sigma_hi) with 0 <= lo <= hi, got {lo}, {hi}")
            self.guidance_interval = (lo, hi)
        check_sampling_counts(self)
        self.unet_config()  # validates the structure
        try:
            self.pair_sampler()
        except ValueError as e:
            raise ValueError(f"pair_gap={self.pair_gap!r}, pair_on_short={self.pair_on_short!r}: {e}") from None

    def pair_sampler(self) -> PairSampler:
        """The training pairs' :class:`PairSampler` (one source view; see ``pair_gap``)."""
        if isinstance(self.pair_gap, list):
            self.pair_gap = tuple(self.pair_gap)
        if self.pair_gap is None:
            return PairSampler(min_cond=1, max_cond=1, mode="random", on_short=self.pair_on_short)
        return PairSampler(min_cond=1, max_cond=1, mode="frame_gap", frame_gap=self.pair_gap,
                           on_short=self.pair_on_short)

    def unet_config(self) -> EDM2UNetConfig:
        """Structure of both UNets (the encoder drops the decoder blocks after its last attention block)."""
        plucker = self.camera == "plucker" and self.conditional
        return EDM2UNetConfig(
            resolution=self.resolution, in_channels=3 + 12 * plucker, out_channels=3,
            label_dim=20 if self.camera == "vector" else 0, model_channels=self.model_channels,
            channel_mult=self.channel_mult, channel_mult_noise=self.channel_mult_noise,
            channel_mult_emb=self.channel_mult_emb, num_blocks=self.num_blocks,
            attn_resolutions=self.attn_resolutions, extra_attn=self.extra_attn,
            channels_per_head=self.channels_per_head, dropout=self.dropout, epipolar_bias=self.epipolar_bias,
            epipolar_strength=self.epipolar_strength, epipolar_width=self.epipolar_width)

    def encoder_config(self) -> EDM2UNetConfig:
        """Structure of the encoder UNet over the source view (the denoiser's)."""
        return self.unet_config()


class VIVID(SingleViewPairs, Method):
    """VIVID (see the module docstring). ``net`` is the encoder + denoiser pair, ``logvar`` the uncertainty head;
    a pair batch is unpacked by :class:`~vantage.methods.base.SingleViewPairs` (one source view per sample)."""

    name = "vivid"
    pair_view = "source view"
    config_class = VIVIDConfig

    def __init__(self, config: VIVIDConfig) -> None:
        super().__init__(config)
        enc = config.encoder_config() if config.conditional else None
        self.net = XAttnPairNet(config.unet_config(), enc, encoder_time=config.encoder_time)
        self.logvar = LogVarHead(config.logvar_channels)
        object.__setattr__(self, "_guides", {})  # loaded guide networks, by path (not submodules)

    # ------------------------------------------------------------------------------ conditioning
    def conditioning(self, cond: ViewCond) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """``(source (B, 3, R, R), label (B, 20) | None, maps (B, 12, R, R) | None)`` of a :class:`ViewCond`."""
        cfg = self.config
        if not isinstance(cond, ViewCond):
            raise TypeError(f"VIVID's denoiser needs cond: ViewCond, got {type(cond).__name__}")
        if cond.drop is not None and bool(cond.drop.any()):
            raise ValueError("VIVID is not trained with condition dropout (no classifier-free guidance); "
                             "guide it by a separate network instead (guide_checkpoint / guide=)")
        res = cfg.resolution
        if tuple(cond.images.shape[-2:]) != (res, res):
            raise ValueError(f"VIVID is configured for {res}x{res} images; the source view is "
                             f"{cond.images.shape[-1]}x{cond.images.shape[-2]}")
        b, dev = cond.images.shape[0], cond.images.device
        label = maps = None
        if cfg.camera == "vector":
            if cfg.conditional:
                label = camera_vector(cond.source, cond.target, res)
                if cfg.camera_mean is not None:
                    label = normalize_camera_vector(label, cfg.camera_mean, cfg.camera_std)
                label = label.to(dev)
            else:
                label = torch.zeros(b, 20, device=dev)
        elif cfg.conditional:
            maps = plucker_maps(cond.source, cond.target, res, cfg.plucker_scale).to(dev)
        return (cond.images if cfg.conditional else None), label, maps

    def _call(self, net: nn.Module, x_in: Tensor, c_noise: Tensor, cond: ViewCond) -> Tensor:
        source, label, maps = self.conditioning(cond)
        if maps is not None:
            maps = maps.to(x_in.dtype)
            x_in, source = torch.cat([x_in, maps], 1), torch.cat([source.to(x_in.dtype), maps], 1)
        source = None if source is None else source.to(x_in.dtype)
        if self.config.epipolar_bias:  # distances per attention resolution, computed once per call
            return net(x_in, c_noise, source, label, epipolar=EpipolarDistances(cond.target, cond.source))
        return net(x_in, c_noise, source, label)

    def edm2_denoiser(self) -> EDM2Denoiser:
        """The unguided ``D(x, σ, cond: ViewCond) -> x̂0`` (``return_logvar=True`` also gives ``u(σ)``)."""
        cfg = self.config
        return EDM2Denoiser(self.net, cfg.sigma_data, logvar_head=self.logvar, sigma_min=cfg.sigma_min,
                            sigma_max=cfg.sigma_max, call=self._call)

    # ------------------------------------------------------------------------------ training
    def pair_sampler(self) -> PairSampler:
        """One conditioning (source) view and a target: uniformly among the scene's views, or within the config's
        ``pair_gap`` frames (``"mid"``, ``"long"``, ``(lo, hi)``)."""
        return self.config.pair_sampler()

    def loss(self, batch: PairBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """EDM2's uncertainty-weighted loss on one (source, target) pair per sample.

        Draws, in order from ``generator`` (on its own device): ``ln σ ~ N(P_mean, P_std²)`` ``(B,)``, then
        ε ``(B, 3, R, R)``. Returns ``{"loss": mean over the batch, "logvar": mean u(σ)}``.
        """
        x_src, cam_src, x0, cam_tgt = self._unpack(batch)
        dev = x0.device
        gdev = generator.device if generator is not None else dev
        b = x0.shape[0]
        sigma = sample_lognormal_sigma(b, self.config.P_mean, self.config.P_std, generator=generator,
                                       device=gdev).to(dev)
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(dev, x0.dtype)
        x = x0 + sigma.view(-1, 1, 1, 1).to(x0.dtype) * noise
        D, logvar = self.edm2_denoiser()(x, sigma, ViewCond(x_src, cam_src, cam_tgt), return_logvar=True)
        per_sample = edm2_loss(D.float(), x0.float(), sigma, logvar.float(), self.config.sigma_data)
        return {"loss": per_sample.mean(), "logvar": logvar.detach().float().mean()}

    # ------------------------------------------------------------------------------ sampling
    def resolve_guide(self, guide: Any = None) -> VIVID | None:
        """The guide network: ``guide`` (a :class:`VIVID`, or a run folder / checkpoint path) or the config's
        ``guide_checkpoint``; None when neither is given. Raises for another method or another resolution."""
        if guide is None:
            guide = self.config.guide_checkpoint or None
        if guide is None:
            return None
        if isinstance(guide, str | Path):
            key = str(Path(guide).resolve())
            if key not in self._guides:
                from vantage.train.checkpoint import load_checkpoint

                try:
                    self._guides[key] = load_checkpoint(guide)
                except FileNotFoundError:
                    raise ValueError(f"guide checkpoint not found: {guide}") from None
            guide = self._guides[key]
        if not isinstance(guide, VIVID):
            raise ValueError(f"the guide must be a vivid network, got {getattr(guide, 'name', type(guide).__name__)}")
        if guide.config.resolution != self.config.resolution:
            r, g = self.config.resolution, guide.config.resolution
            raise ValueError(f"the guide network works at {g}x{g} but this model at {r}x{r}; "
                             f"guide with a network of the same resolution")
        param = next(self.parameters())
        return guide.to(param.device).eval()

    def single_view_denoiser(self, guidance: float | None = None, *, guide: Any = None,
                             interval: tuple[float, float] | None = None) -> nn.Module:
        """``D(x, σ, cond: ViewCond) -> x̂0`` for one source view per sample, guided by a second network.

        Args:
            guidance: ``w`` in ``D̃ = D_g + w·(D − D_g)`` (None: ``default_guidance``); 1 or 0 = unguided.
                Without a guide, ``default_guidance`` means unguided and any other weight is an error.
            guide: the guide (:class:`VIVID` or a checkpoint path); default ``config.guide_checkpoint``.
            interval: ``(σ_lo, σ_hi)`` where guidance applies (default ``config.guidance_interval``).
        """
        plain = self.edm2_denoiser()
        w = self.config.default_guidance if guidance is None else float(guidance)
        if w in (0.0, 1.0):
            return plain
        guide_net = self.resolve_guide(guide)
        if guide_net is None:
            if w == self.config.default_guidance:
                return plain
            raise ValueError(f"guidance {w:g} needs a guide network: configure guide_checkpoint=RUN_DIR (--set at "
                             f"convert or train time) or pass guide=; use guidance 1 for none")
        interval = self.config.guidance_interval if interval is None else interval
        return guide_by_network(plain, guide_net.edm2_denoiser(), w, interval=interval)

    def sampling_sigmas(self, steps: int, sampler: str | None = None) -> Tensor:
        """``(steps + 1,)`` Karras σ's from ``sigma_max`` to ``sigma_min`` (ρ = ``rho``), then 0, for every
        ``sampler``."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return karras_sigmas(steps, self.config.sigma_min, self.config.sigma_max, self.config.rho)

    @torch.no_grad()
    def preview(self, batch: PairBatch, generator: torch.Generator | None = None) -> Tensor:
        """``(n, 3, R, R)`` unguided samples of the first ``n = min(preview_count, B)`` targets."""
        x_src, cam_src, x0, cam_tgt = self._unpack(batch)
        n = min(self.config.preview_count, x0.shape[0])
        cond = ViewCond(x_src[:n], cam_src[:n], cam_tgt[:n])
        with self.evaluating():
            sigmas = self.sampling_sigmas(self.config.preview_steps)
            x = randn((n, *x0.shape[1:]), generator, device=x0.device) * float(sigmas[0])
            out = get_sampler(self.config.preview_sampler)(self.edm2_denoiser(), x, sigmas, cond, generator=generator)
        return out.clamp(-1, 1)


# ---------------------------------------------------------------------------------------- presets
def _shapes_stats(resolution: int) -> dict[str, tuple[float, ...]]:
    """Statistics of the camera vector over the ordered pairs of the synthetic data's default 24-view ring
    (30° elevation, radius 2.5, 40° field of view) at ``resolution``: ``camera_statistics`` of those pairs."""
    pose_mean = (-0.0435, 0.0, 0.0, 0.0, 0.0, 0.7391, 0.4518, -1.1296, 0.0, 0.4518, 0.2174, 1.9565)
    pose_std = (0.6902, 0.3612, 0.6255, 1.5639, 0.3612, 0.1725, 0.2989, 0.7472, 0.6255, 0.2989, 0.5176, 1.2941)
    f = round(0.5 * resolution / 0.36397023426620234, 4)  # tan(20°)
    intr = (f, f, resolution / 2, resolution / 2)
    return {"camera_mean": pose_mean + intr + intr, "camera_std": pose_std + (0.0,) * 8}


_SHAPES = {"default_sampler": "heun", "default_steps": 32, "default_guidance": 1.5, "dropout": 0.0,
           "input_elevation_deg": 30.0, "input_radius": 2.5, "input_fov_deg": 40.0}
# Training defaults (``vantage train``; the command line overrides them). EDM2's (Karras et al. 2024): Adam
# (0.9, 0.99) without weight decay or clipping, inverse-sqrt decay after a reference step, power-function EMA
# (sigma_rel 0.05; EDM2 also keeps 0.10 for its post-hoc EMA: --set train.ema_posthoc=true, off by default). The
# paper's base model: lr 0.012 at batch 1024, decay after 35k steps, with EDM2's 10 Mimg ramp-up; the synthetic
# presets: the CPU-sized recipe of docs/vivid.md.
EDM2_TRAIN = {"lr_schedule": "inv_sqrt", "betas": (0.9, 0.99), "grad_clip": None, "ema": "power", "ema_std": 0.05}
PAPER_TRAIN = {"lr": 0.012, "lr_decay_ref": 35_000, "warmup": "10mimg", **EDM2_TRAIN}
SHAPES_TRAIN = {"lr": 0.01, "lr_decay_ref": 5000, "warmup": 500, **EDM2_TRAIN}
register_preset("vivid-shapes32", "vivid", {
    **_SHAPES, "resolution": 32, "model_channels": 32, "channel_mult": (1, 2, 2), "num_blocks": 2,
    "attn_resolutions": (8,), "extra_attn": None, "channels_per_head": 32, **_shapes_stats(32),
    "preview_steps": 12,
}, "tiny VIVID on 32x32 synthetic objects (2.8M parameters: encoder + denoiser EDM2 UNets, camera vector); "
   "CPU-sized", train=SHAPES_TRAIN)
register_preset("vivid-shapes32-uncond", "vivid", {
    **_SHAPES, "resolution": 32, "model_channels": 32, "channel_mult": (1, 2, 2), "num_blocks": 2,
    "attn_resolutions": (8,), "extra_attn": None, "channels_per_head": 32, **_shapes_stats(32),
    "conditional": False, "default_guidance": 1.0,
}, "the unconditional guide for vivid-shapes32 (no encoder, zero camera label)", train=SHAPES_TRAIN)
register_preset("vivid-shapes64", "vivid", {
    **_SHAPES, "resolution": 64, "model_channels": 32, "channel_mult": (1, 2, 2, 2), "num_blocks": 2,
    "attn_resolutions": (16, 8), "extra_attn": 1, "channels_per_head": 32, **_shapes_stats(64),
}, "small VIVID on 64x64 synthetic objects (4.8M parameters; attention at 16 and 8 plus VIVID's extra attention)",
   train=SHAPES_TRAIN)
register_preset("vivid-re10k64", "vivid", {
    "resolution": 64, "model_channels": 128, "channel_mult": (1, 2, 3, 4), "num_blocks": 3,
    "attn_resolutions": (16, 8), "extra_attn": 1, "channels_per_head": 64, "dropout": 0.0,
    "camera_mean": REFERENCE_MEAN, "camera_std": REFERENCE_STD, "default_sampler": "heun", "default_steps": 32,
    "default_guidance": 1.5,
}, "the paper's 64x64 RealEstate10K base model (channels 128, mult 1-2-3-4, 3 blocks, attention 16/8 + extra, "
   "RealEstate10K camera statistics; Heun 32, guidance 1.5 by a guide network)", train={**PAPER_TRAIN, "batch": 1024})
register_preset("vivid-uncond", "vivid", {
    "resolution": 64, "model_channels": 128, "channel_mult": (1, 2, 3, 4), "num_blocks": 3,
    "attn_resolutions": (16, 8), "extra_attn": 1, "channels_per_head": 64, "dropout": 0.0,
    "camera_mean": REFERENCE_MEAN, "camera_std": REFERENCE_STD, "conditional": False, "default_guidance": 1.0,
}, "the paper's unconditional guide for vivid-re10k64 (same UNet, no encoder, zero camera label)",
   train={**PAPER_TRAIN, "batch": 1024})
