"""ViewFusion, composable (Spiegl et al. 2024, "ViewFusion: Learning Composable Diffusion Models for
Novel View Synthesis", arXiv 2402.02906).

* Network: one SR3-style UNet (:func:`vantage.nn.unet.viewfusion_unet_config`) applied to every
  conditioning view ``i`` separately, on ``concat[view_i, noisy target]`` (6 channels; relative
  variant: ``concat[reference view, view_i, noisy target]``, 9 channels). It outputs 6 channels:
  a noise estimate ``ε_i`` (0-2) and weight logits ``l_i`` (3-5). The target angle and the noise
  level ``γ = ᾱ`` are each encoded sinusoidally (unscaled, ``ch/2`` dims each; γ first), concatenated,
  passed through an MLP (``ch -> 4ch -> ch``, Swish) and added as a bias in every ResBlock.
* Composition (paper Sec. 3): ``w = softmax_views(l)`` per pixel and per colour channel,
  ``ε̂ = Σ_i w_i ⊙ ε_i``; views interact only through this softmax. Padding slots are masked with
  ``−inf`` logits. ``composition="mean"`` is the no-weighting ablation. Ragged batching: the valid
  views of all samples run as one flat batch (:mod:`vantage.methods.viewfusion_compose`).
* Angle: the target camera's absolute azimuth ``atan2(y, x)`` on the ring (world +z up) wrapped into
  ``[0, 2π)`` (``azimuth_direction``/``azimuth_offset_deg`` map another ring convention); relative
  variant (``angle_mode="relative"``): target azimuth minus the reference view's, wrapped. The
  reference view is the first valid view of the set.
* Training: linear β schedule (T = 2000, 1e-6 … 1e-2), SR3's continuous γ between ``ᾱ_{t−1}`` and
  ``ᾱ_t`` (Saharia et al. 2021), ε-objective; only the composed ε̂ is supervised,
  ``MSE(ε̂, ε)``. Pairs: 1..``max_views`` shuffled views, the target in the pool with probability 0.1.
* Sampling: :meth:`ViewFusion.set_denoiser` is ``D(x, σ, ViewSetCond) -> x̂0`` in σ-space
  (``x_σ = x0 + σ·ε``) with the per-view weights of the last call in ``last_weights``;
  :meth:`ViewFusion.single_view_denoiser` is its one-view case for the strategies of
  :mod:`vantage.sampling`, and :func:`composed_strategy` lets ``autoregressive_orbit`` compose the
  whole growing set at every step (the paper's autoregressive mode). The denoisers live in
  :mod:`vantage.methods.viewfusion_sampling` (re-exported here); ``vantage sample`` uses them
  (``docs/viewfusion.md``, "Sampling").
* Released weights expect images in ``[0, 1]`` (``input_range="unit"``): a noisy ``[0, 1]`` image
  ``y0 + σ'ε`` equals ``(x + 1)/2`` for our ``x = x0 + σε`` with ``σ = 2σ'`` and the *same* ε. So the
  network is fed ``(x + 1)/2`` at ``σ' = σ/2`` (γ' = 1/(1 + σ'²)) and conditioning views ``(v + 1)/2``,
  and its composed ε̂ is ours unchanged: ``x̂0 = x − σ·ε̂``. The σ tables are doubled accordingly.
  Outside the model everything stays in [−1, 1].

Presets (``vantage train --list``, parameter counts in ``docs/viewfusion.md``): ``viewfusion-nmr64``
(the paper), ``viewfusion-shapes64`` and ``viewfusion-shapes32`` (small, CPU-friendly; v-prediction, see
``ViewFusionConfig.prediction``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.pairs import PairBatch, PairSampler
from vantage.data.views import ViewSet
from vantage.diffusion.denoisers import append_dims, broadcast_sigma
from vantage.diffusion.losses import per_sample_mse, vp_training_inputs
from vantage.diffusion.noise import randn
from vantage.diffusion.samplers import get_sampler
from vantage.diffusion.schedules import DiscreteSchedule, discrete_sigmas
from vantage.methods import register_preset
from vantage.methods.base import (
    Method,
    MethodConfig,
    check_batch_resolution,
    check_choice,
    check_sampling_counts,
    check_unet_resolution,
    int_tuples,
)
from vantage.methods.viewfusion_compose import (
    COMPOSITIONS,
    Composition,
    RowRunner,
    check_views,
    compose,
    pack_rows,
    target_angle,
    wrap_angle,
)
from vantage.methods.viewfusion_convert import infer_unet_fields, map_reference_state, unwrap_reference_state
from vantage.methods.viewfusion_sampling import ViewFusionDenoiser, ViewFusionSingleView, composed_strategy
from vantage.nn.unet import UNet, UNetConfig, viewfusion_unet_config
from vantage.sampling.strategies import ViewSetCond

__all__ = ["ViewFusionConfig", "ViewFusion", "ViewFusionDenoiser", "ViewFusionSingleView", "composed_strategy",
           "unet_config", "Composition"]


@dataclass
class ViewFusionConfig(MethodConfig):
    """Configuration of :class:`ViewFusion` (defaults: the paper's NMR 64×64 model).

    Attributes:
        resolution: square image side in pixels.
        ch, ch_mult, num_res_blocks: UNet base channels, multiplier per level, ResBlocks per level
            (paper: 64, (1, 2, 3, 5), 3).
        attn_resolutions: feature-map sides with self-attention (paper: 16); ``mid_attention``: also
            in the middle (paper: yes).
        num_heads: attention heads (reference: 1). norm_groups: GroupNorm groups (paper: 32).
        dropout: dropout in the ResBlocks (paper: 0).
        emb_freq_dim, emb_hidden_dim, emb_dim: sinusoidal dims per scalar (γ, angle), MLP hidden and
            output width; None: ``ch/2``, ``4·ch``, ``ch`` (paper: 32, 256, 64).
        timesteps, beta_start, beta_end: training schedule, linear β (paper: 2000, 1e-6, 1e-2).
        sample_timesteps, sample_beta_start, sample_beta_end: the linear β schedule whose σ's sampling
            runs on (None: the training values). The γ-conditioned network accepts any schedule; the
            reference samples with T = 1000, 1e-4 … 0.09.
        min_views, max_views: conditioning views per training sample, uniform in this range (paper: 1, 6).
        target_in_pool_prob: probability that the target is one of the conditioning views (paper: 0.1).
        composition: ``"softmax"`` (learned per-pixel weights) or ``"mean"`` (no-weighting ablation).
        prediction: what the 3 output channels of a view's row are: ``"eps"`` (the paper and the released
            weights: ε, loss ‖ε̂ − ε‖²) or ``"v"`` (our option, Salimans & Ho 2022 Sec. 4:
            ``v = sqrt(γ)·ε − sqrt(1 − γ)·y0``, loss ‖v̂ − v‖² of the composed v̂). With ε, x̂0 =
            ``(z − sqrt(1 − γ)·ε̂)/sqrt(γ)`` multiplies the ε error by σ (~150 at the top of the linear-β
            schedule): a briefly trained ε model's samples stay noise under DDIM and DDPM alike (the CPU run
            ``viewfusion-shapes32`` at 40k images: x̂0 at 4–5 dB PSNR for t ≥ 0.9, docs/viewfusion.md). v-prediction
            keeps x̂0 bounded there; the CPU-sized ``viewfusion-shapes*`` presets use it. Both compose the
            same way (the softmax weights apply to the per-view outputs; ε̂ and v̂ are affine in each other
            with coefficients the views share).
        angle_mode: ``"absolute"`` (target azimuth) or ``"relative"`` (to the reference view, which is
            also concatenated channel-wise: 9 input channels).
        azimuth_direction, azimuth_offset_deg: model angle = ``direction·azimuth + offset`` (±1, degrees).
        input_range: ``"signed"`` (the network sees [−1, 1] images) or ``"unit"`` (released weights:
            [0, 1]; see the module docstring).
        clip_x0: ``"model"``: clamp x̂0 to [−1, 1] in the network's own range (the reference; for
            ``"unit"`` that is [−3, 1] in ours), ``"data"``: to [−1, 1] in ours, ``"none"``.
        max_rows: at most this many views per network call (chunks; None: all at once).
        default_sampler, default_steps, default_guidance: sampling defaults (DDPM over the whole
            sampling schedule as the paper; ViewFusion has no guidance, keep 0).
        preview_sampler, preview_steps, preview_count: periodic sample grids during training.
        input_elevation_deg, input_radius, input_fov_deg: camera assumed for an unposed input image.
    """

    resolution: int = 64
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 3, 5)
    num_res_blocks: int = 3
    attn_resolutions: tuple[int, ...] = (16,)
    mid_attention: bool = True
    num_heads: int = 1
    norm_groups: int = 32
    dropout: float = 0.0
    emb_freq_dim: int | None = None
    emb_hidden_dim: int | None = None
    emb_dim: int | None = None
    timesteps: int = 2000
    beta_start: float = 1e-6
    beta_end: float = 1e-2
    sample_timesteps: int | None = None
    sample_beta_start: float | None = None
    sample_beta_end: float | None = None
    min_views: int = 1
    max_views: int = 6
    target_in_pool_prob: float = 0.1
    composition: str = "softmax"
    prediction: str = "eps"
    angle_mode: str = "absolute"
    azimuth_direction: int = 1
    azimuth_offset_deg: float = 0.0
    input_range: str = "signed"
    clip_x0: str = "model"
    max_rows: int | None = None
    default_sampler: str = "ddpm"
    default_steps: int = 2000
    default_guidance: float = 0.0
    preview_sampler: str = "ddpm"

    def __post_init__(self) -> None:
        choices = {"composition": COMPOSITIONS, "prediction": ("eps", "v"), "angle_mode": ("absolute", "relative"),
                   "input_range": ("signed", "unit"), "clip_x0": ("model", "data", "none")}
        for name, allowed in choices.items():
            check_choice(name, getattr(self, name), allowed)
        if self.azimuth_direction not in (1, -1):
            raise ValueError(f"azimuth_direction must be 1 or -1, got {self.azimuth_direction}")
        if not 1 <= self.min_views <= self.max_views:
            raise ValueError(f"need 1 <= min_views <= max_views, got {self.min_views}, {self.max_views}")
        if not 0.0 <= self.target_in_pool_prob <= 1.0:
            raise ValueError(f"target_in_pool_prob must be in [0, 1], got {self.target_in_pool_prob}")
        check_unet_resolution(self.resolution, self.ch_mult)
        check_sampling_counts(self)
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {self.max_rows}")
        if self.default_guidance:
            raise ValueError("ViewFusion has no classifier-free guidance: default_guidance must be 0")
        int_tuples(self, "ch_mult", "attn_resolutions")


def unet_config(config: ViewFusionConfig) -> UNetConfig:
    """The :class:`UNetConfig` of a ViewFusion config (SR3 layout of the reference)."""
    c = config
    return dataclasses.replace(
        viewfusion_unet_config(c.resolution), in_channels=9 if c.angle_mode == "relative" else 6, ch=c.ch,
        ch_mult=c.ch_mult, num_res_blocks=c.num_res_blocks, attn_resolutions=c.attn_resolutions,
        mid_attention=c.mid_attention, num_heads=c.num_heads, norm_groups=c.norm_groups, dropout=c.dropout,
        emb_freq_dim=c.emb_freq_dim or c.ch // 2, emb_hidden_dim=c.emb_hidden_dim or 4 * c.ch,
        emb_dim=c.emb_dim or c.ch)


class ViewFusion(Method):
    """ViewFusion-composable (module docstring). ``net``: the UNet; ``schedule``: the training schedule."""

    name = "viewfusion"
    config_class = ViewFusionConfig
    supports_guidance = False  # no unconditional branch: no classifier-free guidance

    @property
    def uses_input_poses(self) -> bool:
        """Whether the cameras of the conditioning views matter (only the relative variant's reference
        view's azimuth does; the absolute model reads the target camera alone)."""
        return self.config.angle_mode == "relative"

    def __init__(self, config: ViewFusionConfig) -> None:
        super().__init__(config)
        c = config
        self.net = UNet(unet_config(c))
        with torch.device("cpu"):  # schedule tables are CPU float64 even under a meta/cuda default device
            self.schedule = DiscreteSchedule.make("linear", c.timesteps, c.beta_start, c.beta_end)
            self.sample_schedule = DiscreteSchedule.make(
                "linear", c.sample_timesteps or c.timesteps, c.sample_beta_start or c.beta_start,
                c.sample_beta_end or c.beta_end)
        self.scale = 2.0 if c.input_range == "unit" else 1.0  # our σ = scale · the network's σ
        self.rows = RowRunner()  # chunks of max_rows rows; halves them when a call runs out of memory

    # ------------------------------------------------------------------------------ core
    def to_model_range(self, images: Tensor) -> Tensor:
        """Images in [−1, 1] -> the network's range (identity, or ``(v + 1)/2`` for ``"unit"``)."""
        return (images + 1) * 0.5 if self.config.input_range == "unit" else images

    def angles(self, views: ViewSet, target: Cameras) -> tuple[Tensor, Tensor | None]:
        """``(angle (B,) float32 in [0, 2π), reference slot (B,) long or None)`` (absolute / relative)."""
        c = self.config
        if tuple(target.shape) != (views.batch_size,):
            raise ValueError(f"target cameras must have shape ({views.batch_size},), got {tuple(target.shape)}")
        if c.angle_mode == "absolute":
            return target_angle(target, direction=c.azimuth_direction, offset_deg=c.azimuth_offset_deg), None
        ref = views.valid.float().argmax(dim=1)  # first valid view
        bi = torch.arange(views.batch_size, device=ref.device)
        return target_angle(target, views.cameras[bi, ref], direction=c.azimuth_direction), ref

    def predict(self, z_in: Tensor, gamma: Tensor, images: Tensor, valid: Tensor, angle: Tensor,
                reference: Tensor | None = None) -> Composition:
        """Network space: ``z_in (B, 3, H, W)`` = ``sqrt(γ)·y0 + sqrt(1 − γ)·ε`` in the network's range,
        ``gamma (B,)``, ``images (B, N, 3, H, W)`` (network range; invalid slots are never read),
        ``valid (B, N)``, ``angle (B,)``, ``reference`` ``(B,)`` slots (relative mode). Returns the
        :class:`Composition` (ε̂, weights, raw rows)."""
        check_views(z_in, images, valid, self.config.resolution)
        B, N = valid.shape
        if self.config.angle_mode == "relative" and reference is None:
            raise ValueError("angle_mode='relative' needs the reference view slot of every sample")
        b_idx, n_idx = pack_rows(valid.to(z_in.device))
        dtype = z_in.dtype
        parts = [images[b_idx, n_idx].to(dtype), z_in[b_idx]]
        if reference is not None and self.config.angle_mode == "relative":
            parts.insert(0, images[torch.arange(B, device=z_in.device), reference.to(z_in.device)][b_idx].to(dtype))
        inp, g, a = torch.cat(parts, dim=1), gamma.to(z_in.device)[b_idx], angle.to(z_in.device)[b_idx, None]
        raw = self.rows(lambda x, gi, ai: self.net(x, gi, cond_vec=ai), (inp, g, a), self.config.max_rows)
        out, weights = compose(raw, b_idx, n_idx, B, N, self.config.composition)
        if self.config.prediction == "eps":
            return Composition(out, weights, raw, b_idx, n_idx)
        # v = sqrt(γ)·ε − sqrt(1 − γ)·y0 and z = sqrt(γ)·y0 + sqrt(1 − γ)·ε give ε = sqrt(γ)·v + sqrt(1 − γ)·z
        gm = append_dims(gamma.to(z_in.device, torch.float32), z_in.ndim)
        eps = gm.sqrt() * out + (1 - gm).sqrt() * z_in.float()
        return Composition(eps, weights, raw, b_idx, n_idx, pred=out)

    def compose(self, x: Tensor, sigma: Tensor | float, views: ViewSet, target: Cameras | None = None, *,
                angle: Tensor | None = None) -> Composition:
        """σ-space: composed noise ``ε̂ (B, 3, H, W)`` and weights ``(B, N, 3, H, W)`` for the noisy target
        ``x = x0 + σ·ε`` (``x``, images in [−1, 1] units), conditioning ``views`` ``(B, N)`` and the
        ``target`` cameras ``(B,)`` (or an explicit ``angle (B,)`` in radians, overriding them; wrapped into
        ``[0, 2π)`` like the camera-derived angles, so ``a`` and ``a ± 2π`` give the same result)."""
        check_views(x, views.images, views.valid, self.config.resolution)
        s = broadcast_sigma(sigma, x).to(torch.float32 if x.device.type == "mps" else torch.float64) / self.scale
        gamma = 1 / (1 + s * s)
        if angle is None:
            if target is None:
                raise ValueError("give the target cameras (B,) or an explicit angle (B,)")
            angle, ref = self.angles(views, target)
        else:
            wide = torch.float32 if x.device.type == "mps" else torch.float64  # wrap before rounding to float32
            angle = wrap_angle(torch.as_tensor(angle, dtype=wide, device=x.device).reshape(-1)).float()
            angle = torch.where(angle >= 2 * math.pi, torch.zeros_like(angle), angle)  # 2π − δ rounded up: angle 0
            ref = views.valid.float().argmax(dim=1) if self.config.angle_mode == "relative" else None
            if angle.shape != (x.shape[0],):
                raise ValueError(f"angle must hold one value per sample ({x.shape[0]},), got {tuple(angle.shape)}")
        z_in = self.to_model_range(x) * append_dims(gamma.sqrt().to(x.device), x.ndim).to(x.dtype)
        return self.predict(z_in, gamma.float(), self.to_model_range(views.images), views.valid, angle, ref)

    # ------------------------------------------------------------------------------ training
    def pair_sampler(self) -> PairSampler:
        """``min_views..max_views`` shuffled views of the object (uniform count), target in the pool
        with probability ``target_in_pool_prob``."""
        c = self.config
        return PairSampler(min_cond=c.min_views, max_cond=c.max_views, mode="random",
                           target_in_pool_prob=c.target_in_pool_prob, shuffle=True)

    def training_loss(self, x0: Tensor, views: ViewSet, target: Cameras, generator: torch.Generator | None = None,
                      noise: Tensor | None = None) -> dict[str, Tensor]:
        """``MSE(ε̂, ε)`` (or ``MSE(v̂, v)``, ``prediction="v"``) of the composed prediction for targets
        ``x0 (B, 3, H, W)`` in [−1, 1].

        Draws SR3's γ (``t`` then ``u``) and ε (unless ``noise`` is given) from ``generator``, in the
        network's range (so a ``"unit"`` model is trained exactly as the reference). Returns
        ``{"loss", "views"}`` (mean conditioning views per sample)."""
        check_views(x0, views.images, views.valid, self.config.resolution)
        dev = x0.device
        gdev = generator.device if generator is not None else dev
        tr = vp_training_inputs(self.to_model_range(x0).to(gdev), self.schedule, noise_cond="gamma",
                                prediction=self.config.prediction,  # type: ignore[arg-type]
                                generator=generator, noise=None if noise is None else noise.to(gdev))
        angle, ref = self.angles(views, target)
        out = self.predict(tr.x_in.to(dev), tr.noise_input.to(dev), self.to_model_range(views.images),
                           views.valid, angle.to(dev), ref)
        loss = per_sample_mse(out.output, tr.target.to(dev).float()).mean()
        return {"loss": loss, "views": views.valid.sum(dim=1).float().mean()}

    def _unpack(self, batch: PairBatch) -> tuple[Tensor, ViewSet, Cameras]:
        check_batch_resolution(batch, self.config.resolution, "ViewFusion")
        return batch.target.images[:, 0], batch.cond, batch.target.cameras[:, 0]

    def loss(self, batch: PairBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """:meth:`training_loss` of a pair batch (``cond`` ``(B, K)`` with ``valid``, ``target`` ``(B, 1)``)."""
        x0, views, target = self._unpack(batch)
        return self.training_loss(x0, views, target, generator)

    # ------------------------------------------------------------------------------ sampling
    def set_denoiser(self, guidance: float | None = None, *, clip_x0: str | None = None) -> ViewFusionDenoiser:
        """``D(x, σ, cond: ViewSetCond) -> x̂0`` over a whole view set (``cond.views`` ``(B, N)`` with
        ``valid``, ``cond.target`` ``(B,)``). ``clip_x0`` overrides ``config.clip_x0``; ``guidance``
        must be None or 0 (ViewFusion has no guidance)."""
        if guidance:
            raise ValueError(f"ViewFusion has no classifier-free guidance; got guidance={guidance}")
        return ViewFusionDenoiser(self, clip_x0 or self.config.clip_x0)

    def single_view_denoiser(self, guidance: float | None = None) -> ViewFusionSingleView:
        """``D(x, σ, cond: ViewCond) -> x̂0``: the one-view case of :meth:`set_denoiser` (for the
        strategies of :mod:`vantage.sampling`); ``guidance`` as there (the other methods' signature)."""
        return ViewFusionSingleView(self.set_denoiser(guidance))

    def sampling_sigmas(self, steps: int, sampler: str | None = None) -> Tensor:
        """``(steps + 1,)`` float32 σ's of the sampling schedule at ``steps`` trailing-spaced timesteps
        (all of them when ``steps = T``: the reference's DDPM), then 0; scaled for ``"unit"`` models. The
        same for every ``sampler`` (σ_max of the linear-β DDPM schedule is ~157, a moderate first step)."""
        return discrete_sigmas(self.sample_schedule, int(steps), spacing="trailing") * self.scale

    @torch.no_grad()
    def preview(self, batch: PairBatch, generator: torch.Generator | None = None) -> Tensor:
        """``(n, 3, H, W)`` targets of the first ``n = min(preview_count, B)`` pairs, sampled from all
        their conditioning views with ``preview_sampler`` / ``preview_steps``."""
        x0, views, target = self._unpack(batch)
        n = min(self.config.preview_count, x0.shape[0])
        cond = ViewSetCond(views.index(slice(0, n)), target[:n])
        with self.evaluating():
            sigmas = self.sampling_sigmas(self.config.preview_steps)
            x = randn((n, *x0.shape[1:]), generator, device=x0.device) * float(sigmas[0])
            out = get_sampler(self.config.preview_sampler)(self.set_denoiser(), x, sigmas, cond, generator=generator)
        return out.clamp(-1, 1)

    # ------------------------------------------------------------------------------ released weights
    def load_reference_state(self, obj: Any, where: str = "state dict") -> list[str]:
        """Load the reference UNet's weights (any form :func:`unwrap_reference_state` accepts) into
        ``net``; raises naming missing / unexpected / mis-shaped keys. Returns the ignored keys."""
        state, ignored = unwrap_reference_state(obj, where)
        self.net.load_state_dict(map_reference_state(state, self.net.state_dict(), where=where))
        return ignored

    @staticmethod
    def reference_config_fields(obj: Any, resolution: int, where: str = "state dict") -> dict:
        """Config fields inferred from reference weights (see :func:`infer_unet_fields`)."""
        return infer_unet_fields(unwrap_reference_state(obj, where)[0], resolution, where)


# ---------------------------------------------------------------------------------------- presets
_SHAPES = {"default_sampler": "ddpm", "preview_sampler": "ddpm", "max_views": 6, "target_in_pool_prob": 0.1,
           "mid_attention": True, "norm_groups": 8, "dropout": 0.0, "prediction": "v"}
register_preset("viewfusion-nmr64", "viewfusion", {
    "resolution": 64, "ch": 64, "ch_mult": (1, 2, 3, 5), "num_res_blocks": 3, "attn_resolutions": (16,),
    "mid_attention": True, "norm_groups": 32, "dropout": 0.0, "timesteps": 2000, "beta_start": 1e-6,
    "beta_end": 1e-2, "sample_timesteps": 1000, "sample_beta_start": 1e-4, "sample_beta_end": 0.09,
    "max_views": 6, "target_in_pool_prob": 0.1, "default_sampler": "ddpm", "default_steps": 1000,
}, "the paper's NMR configuration: 64x64, base 64, mult (1,2,3,5), 3 res blocks, attention 16 + middle, "
   "GroupNorm 32, 1-6 views, linear beta 1e-6..1e-2 T=2000; DDPM on the reference's test schedule (34M parameters)",
   # the paper's optimiser as far as the trainer goes: Adam, warm-up to 1e-4 over 2.5k steps, batch 112 (its slow
   # exponential decay afterwards is not offered: constant); it keeps no EMA, vantage keeps its default one
   train={"batch": 112, "lr": 1e-4, "warmup": 2500, "lr_schedule": "constant"})
register_preset("viewfusion-shapes64", "viewfusion", {
    **_SHAPES, "resolution": 64, "ch": 32, "ch_mult": (1, 2, 2, 4), "num_res_blocks": 2, "attn_resolutions": (16,),
    "default_steps": 200,
}, "small ViewFusion on 64x64 synthetic ring objects (CPU-friendly, 4.1M parameters; v-prediction)")
register_preset("viewfusion-shapes32", "viewfusion", {
    **_SHAPES, "resolution": 32, "ch": 32, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 1, "attn_resolutions": (8,),
    "default_steps": 100, "preview_steps": 16,
}, "tiny ViewFusion on 32x32 synthetic ring objects (CPU-friendly, 1.4M parameters; v-prediction)")
