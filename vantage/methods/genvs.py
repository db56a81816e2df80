"""GeNVS: Chan et al. 2023, "Generative Novel View Synthesis with 3D-Aware Diffusion Models" (ICCV).

Pipeline (tensor shapes for a batch of ``B`` samples with ``N`` input-view slots, ``valid (B, N)``):

1. **Lift**: every valid input view ``(3, H, W)`` -> :class:`~vantage.nn.frustum.FrustumEncoder`
   -> a pixel-aligned frustum volume ``(C, D, h, w)`` (``volume_channels`` x ``volume_depth`` planes between
   ``near`` and ``far`` (or, with ``scene_radius``, each camera's own range around the scene ball at the origin),
   linear in depth or disparity, over an ``h = w = volume_resolution`` pixel grid),
   packed as ``(R, C, D, h, w)`` for the ``R`` valid views (:class:`~vantage.nn.frustum.FrustumVolumes`).
2. **Field**: a 3D point is projected into each input camera (OpenCV c2w, ``K`` in pixels), its volume is
   sampled trilinearly, a small MLP decodes density + ``feature_channels`` features, mean-pooled over the
   input views that see the point (:class:`~vantage.nn.frustum.FeatureField`).
3. **Render**: at the target camera, ``samples_stratified`` + ``samples_importance`` samples per ray,
   alpha compositing on a ``background`` (white for the synthetic data), at ``render_resolution`` and bilinearly
   upsampled: a feature image ``(B, F, H, W)`` whose first 3 channels are an RGB render; also opacity and
   depth (:mod:`vantage.nn.volume_render`).
4. **Denoise**: the feature image is concatenated to the noisy target ``x = x0 + σε`` of an ADM-style
   UNet ``F`` with EDM preconditioning (Karras et al. 2022, Table 1; σ_data = 0.5):
   ``D(x; σ) = c_skip x + c_out F(c_in x; c_noise = ln σ / 4, features)``.
5. **Train** end to end: ``ln σ ~ N(P_mean, P_std²)``, EDM loss ``λ(σ)‖D − x0‖²`` with
   ``λ = 1/c_out²``, plus ``rgb_loss_weight`` × the MSE between each sample's RGB render and *its own* target
   (at the render resolution; the public re-implementation broadcast a ``(B, 3, H, W)`` render against a
   ``(B, 1, 3, H, W)`` target, pairing every render with every target). Conditioning dropout: with probability
   ``cond_dropout`` a sample's feature image is replaced by zeros (a fresh mask per step from the step's
   generator), which also enables classifier-free guidance. Optional augmentation (``augment_flip``, default
   off): a whole sample mirrored left-right, its images flipped and its cameras mirrored with the world
   (:func:`mirror_cameras`), so the geometry stays exact.

Sampling (:mod:`vantage.methods.genvs_sampling`): :meth:`GeNVS.single_view_denoiser` is
``D(x, σ, ViewCond | ViewSetCond) -> x̂0``; it renders the conditioning once per view set and target and caches
it, and caches the encoded volumes per view set apart from that, so a sampling loop encodes each set once, also
across targets (fixed input views). The ``"genvs-pooled"`` strategy conditions every step on the input,
up to ``sample_max_views − 2`` random earlier generated views and the latest one (the paper's autoregressive
sampling), each with its own volume, mean-pooled in the field. :meth:`GeNVS.render_conditioning`
gives the RGB render and depth of the field at the target.

The configuration and the presets (``genvs-shapes32``, CPU-sized; ``genvs-shapes64`` and ``genvs-srn128``,
paper-like; see ``docs/genvs.md`` for where we deviate from the paper) are in :mod:`vantage.methods.genvs_config`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.mirror import mirror_cameras, mirror_view_set  # noqa: F401 (re-exported)
from vantage.data.pairs import PairBatch, PairSampler
from vantage.data.views import ViewSet
from vantage.diffusion.denoisers import EDMDenoiser
from vantage.diffusion.losses import edm_loss, per_sample_mse
from vantage.diffusion.noise import randn
from vantage.diffusion.samplers import get_sampler
from vantage.diffusion.schedules import karras_sigmas, sample_lognormal_sigma
from vantage.methods.base import Method, ViewCond
from vantage.methods.genvs_config import GeNVSConfig, unet_config
from vantage.methods.genvs_sampling import GeNVSDenoiser, GeNVSPooled, VolumeCache, as_view_set
from vantage.nn.frustum import (
    FeatureField,
    FrustumEncoder,
    FrustumVolumes,
    check_finite_cameras,
    scene_depth_check,
    scene_near_far,
)
from vantage.nn.unet import UNet
from vantage.nn.volume_render import render_image, upsample

__all__ = ["GeNVSConfig", "GeNVS", "GeNVSDenoiser", "GeNVSPooled", "unet_config", "mirror_cameras",
           "mirror_view_set"]


def _field_of(field: FeatureField, vols: FrustumVolumes):
    """``points (b, P, 3) -> (density, features)`` of ``vols`` (a FieldFn bound to these volumes)."""
    return lambda pts: field(vols, pts)


def _unet_call(net: UNet, x_in: Tensor, c_noise: Tensor, features: Tensor) -> Tensor:
    return net(x_in, c_noise.float(), concat=features)


class GeNVS(Method):
    """GeNVS (module docstring). ``encoder``: 2D -> frustum volumes; ``field``: decoder MLP; ``net``: the UNet."""

    name = "genvs"
    config_class = GeNVSConfig
    uses_input_poses = True
    supports_guidance = True
    default_strategy = "genvs-pooled"  # `vantage sample` / `vantage evaluate` without --strategy

    def __init__(self, config: GeNVSConfig) -> None:
        super().__init__(config)
        c = config
        self.encoder = FrustumEncoder(
            resolution=c.resolution, channels=c.volume_channels, depth=c.volume_depth,
            volume_resolution=c.volume_resolution or c.resolution, ch=c.encoder_ch, ch_mult=c.encoder_ch_mult,
            num_res_blocks=c.encoder_res_blocks, attn_resolutions=c.encoder_attn_resolutions,
            norm_groups=c.norm_groups, num_heads=c.num_heads)
        self.field = FeatureField(c.volume_channels, c.feature_channels, c.mlp_hidden, c.mlp_layers)
        self.net = UNet(unet_config(c))

    # ------------------------------------------------------------------------------ conditioning
    def background(self, device: torch.device | str | None = None) -> Tensor:
        """``(F,)`` background feature: ``config.background`` RGB, then zeros."""
        bg = torch.zeros(self.config.feature_channels, device=device)
        bg[:3] = torch.tensor(self.config.background, device=device)
        return bg

    def check_inputs(self, views: Any, target: Any) -> None:
        """Raise a one-line error for inputs GeNVS cannot use (module docstring for the expected shapes)."""
        r = self.config.resolution
        if not isinstance(views, ViewSet) or not isinstance(getattr(views, "cameras", None), Cameras):
            raise ValueError("genvs needs posed input views (a ViewSet with cameras: OpenCV c2w, K in pixels); "
                             f"got {type(getattr(views, 'cameras', views)).__name__} for the input cameras")
        if not isinstance(target, Cameras):
            raise ValueError(f"genvs needs the target cameras (Cameras (B,)), got {type(target).__name__}")
        B, N, C, H, W = views.images.shape
        if (C, H, W) != (3, r, r):
            raise ValueError(f"genvs is configured for 3x{r}x{r} images but the input views are {C}x{H}x{W}; "
                             f"use data at {r} px or --set resolution={H}")
        for what, cams in (("input", views.cameras), ("target", target)):
            if (cams.width, cams.height) != (r, r):
                raise ValueError(f"the {what} cameras are for {cams.width}x{cams.height} images, expected {r}x{r}")
        if tuple(target.shape) != (B,):
            raise ValueError(f"target cameras must have shape ({B},), got {tuple(target.shape)}")
        if not views.valid.any(dim=1).all():
            raise ValueError("genvs: every sample needs at least one valid input view")
        check_finite_cameras(target, "target")
        check_finite_cameras(views.cameras, "input", views.valid)
        inputs = views.cameras[views.valid.to(views.cameras.c2w.device)]
        if (c := self.config).check_cameras:
            scene_depth_check(target, c.near, c.far, "target", radius=c.scene_radius)
            scene_depth_check(inputs, c.near, c.far, "input", radius=c.scene_radius)

    def near_far(self, cameras: Cameras) -> tuple[float | Tensor, float | Tensor]:
        """The camera-z range of ``cameras``: the config's ``(near, far)`` floats, or with ``scene_radius`` the
        per-camera tensors of :func:`~vantage.nn.frustum.scene_near_far` (each of ``cameras.shape``)."""
        c = self.config
        if c.scene_radius is None:
            return c.near, c.far
        return scene_near_far(cameras, float(c.scene_radius))

    def encode(self, views: ViewSet) -> FrustumVolumes:
        """Frustum volumes ``(R, C, D, h, w)`` of the ``R`` valid views of ``views (B, N)`` (packed)."""
        dev = next(self.parameters()).device
        b_idx, n_idx = views.valid.to(dev).nonzero(as_tuple=True)
        images = views.images.to(dev)[b_idx, n_idx]
        cams = views.cameras.to(dev)
        rows = Cameras(cams.c2w[b_idx, n_idx], cams.K[b_idx, n_idx], cams.width, cams.height)
        vols = self.encoder(images.float()).float()  # fp32 volumes (and poses) even under bf16 autocast
        near, far = self.near_far(rows)
        return FrustumVolumes.from_cameras(vols, rows, b_idx, views.batch_size, near, far, self.config.depth_spacing)

    def render(self, views: ViewSet, target: Cameras, *, generator: torch.Generator | None = None,
               check: bool = True, volumes: FrustumVolumes | None = None) -> dict[str, Tensor]:
        """Render the field of ``views (B, N)`` at ``target (B,)``.

        ``generator``: stratified jitter and importance uniforms (training); None: deterministic samples.
        ``volumes``: the views' :meth:`encode` (e.g. from a cache); None: encode them here.
        Returns ``{"features" (B, F, H, W) upsampled to the image size, "rgb" (B, 3, h, w), "opacity"
        (B, 1, h, w), "depth" (B, 1, h, w)}`` at the render resolution ``h`` (depth: camera-z, 0 where empty).
        """
        if check:
            self.check_inputs(views, target)
        c = self.config
        vols = self.encode(views) if volumes is None else volumes
        if vols.batch_size != target.shape[0]:
            raise ValueError(f"the volumes hold {vols.batch_size} samples but there are {target.shape[0]} targets")
        dev = vols.volumes.device
        with torch.autocast(dev.type, enabled=False):  # projection and compositing in fp32 (bf16 is ~0.5 px off)
            tgt = target.to(dev)
            near, far = self.near_far(tgt)
            out = render_image(lambda pts: self.field(vols, pts), tgt, near=near, far=far,
                               n_coarse=c.samples_stratified, n_fine=c.samples_importance,
                               background=self.background(dev), resolution=c.render_resolution,
                               chunk=c.render_chunk, generator=generator, use_checkpoint=c.checkpoint_render,
                               subset=lambda idx: _field_of(self.field, vols.samples(idx)))
        feats = out["features"]
        return {"features": upsample(feats, c.resolution), "rgb": feats[:, :3], "opacity": out["opacity"],
                "depth": out["depth"]}

    def rgb_loss(self, rgb: Tensor, target: Tensor) -> Tensor:
        """``(B,)`` MSE between each RGB render ``(B, 3, h, w)`` and *its own* target ``(B, 3, H, W)`` (area-
        downsampled to ``h``). Any other shape is refused (no broadcasting of renders against targets)."""
        if rgb.ndim != 4 or target.ndim != 4 or rgb.shape[:2] != target.shape[:2]:
            raise ValueError(f"rgb_loss pairs renders (B, 3, h, w) with targets (B, 3, H, W); got "
                             f"{tuple(rgb.shape)} and {tuple(target.shape)}")
        if target.shape[-2:] != rgb.shape[-2:]:
            target = F.interpolate(target, size=rgb.shape[-2:], mode="area")
        return per_sample_mse(rgb.float(), target.float())

    def edm_denoiser(self) -> EDMDenoiser:
        """The EDM-preconditioned UNet ``D(x, σ, features (B, F, H, W)) -> x̂0`` (Karras et al. 2022, Eq. 7)."""
        c = self.config
        return EDMDenoiser(self.net, c.sigma_data, sigma_min=c.sigma_min, sigma_max=c.sigma_max, call=_unet_call)

    # ------------------------------------------------------------------------------ training
    def pair_sampler(self) -> PairSampler:
        """``min_views..max_views`` random input views of the object and a target view."""
        return PairSampler(min_cond=self.config.min_views, max_cond=self.config.max_views, mode="random",
                           shuffle=True)

    def dropout_mask(self, batch: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
        """``(batch,)`` bool, True where the conditioning is dropped (probability ``cond_dropout``)."""
        gdev = generator.device if generator is not None else torch.device(device)
        return (torch.rand(batch, generator=generator, device=gdev) < self.config.cond_dropout).to(device)

    def augment(self, batch: PairBatch, generator: torch.Generator | None = None) -> tuple[PairBatch, Tensor]:
        """``(batch, flip (B,) bool)``: each sample mirrored as a whole with probability ``augment_flip``
        (:func:`mirror_view_set` on its input views and its target); one uniform per sample from ``generator``."""
        B = batch.cond.batch_size
        gdev = generator.device if generator is not None else batch.cond.images.device
        flip = (torch.rand(B, generator=generator, device=gdev) < self.config.augment_flip).cpu()
        if not flip.any():
            return batch, flip
        return replace(batch, cond=mirror_view_set(batch.cond, flip), target=mirror_view_set(batch.target, flip)), flip

    def loss(self, batch: PairBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """EDM loss of the denoiser + ``rgb_loss_weight`` × the RGB render loss, per sample, batch-averaged.

        Draws from ``generator`` (on its own device), in order: with ``augment_flip > 0`` first the flip draw
        ``(B,)`` (:meth:`augment`), then σ ``(B,)``, ε ``(B, 3, H, W)``, the dropout mask ``(B,)``, then the
        rendering's jitter and importance uniforms. Returns ``{"loss", "diffusion", "rgb", "opacity",
        "cond_dropped"}``, and ``"flipped"`` (the fraction mirrored) with ``augment_flip > 0``.
        """
        flipped = None
        if self.config.augment_flip > 0:
            batch, flipped = self.augment(batch, generator)
        views, target = batch.cond, batch.target.cameras[:, 0]
        self.check_inputs(views, target)
        x0 = batch.target.images[:, 0]
        if x0.shape[-2:] != views.images.shape[-2:]:
            raise ValueError(f"targets are {x0.shape[-1]}x{x0.shape[-2]} but the input views are "
                             f"{views.images.shape[-1]}x{views.images.shape[-2]}")
        B, dev = x0.shape[0], x0.device
        gdev = generator.device if generator is not None else dev
        c = self.config
        sigma = sample_lognormal_sigma(B, c.P_mean, c.P_std, generator=generator, device=gdev).to(dev)
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(dev)
        drop = self.dropout_mask(B, generator, dev)
        r = self.render(views, target, generator=generator, check=False)
        feats = r["features"] * (~drop).to(r["features"].dtype)[:, None, None, None]
        denoised = self.edm_denoiser()(x0 + sigma[:, None, None, None] * noise, sigma, feats)
        diffusion = edm_loss(denoised.float(), x0.float(), sigma, c.sigma_data)
        rgb = self.rgb_loss(r["rgb"], x0)
        total = diffusion.mean() + c.rgb_loss_weight * rgb.mean()
        out = {"loss": total, "diffusion": diffusion.mean().detach(), "rgb": rgb.mean().detach(),
               "opacity": r["opacity"].mean().detach(), "cond_dropped": drop.float().mean()}
        if flipped is not None:
            out["flipped"] = flipped.float().mean().to(dev)
        return out

    # ------------------------------------------------------------------------------ sampling
    def single_view_denoiser(self, guidance: float | None = None, *, cache_size: int | None = None) -> GeNVSDenoiser:
        """``D(x, σ, cond) -> x̂0`` for ``cond``: :class:`ViewCond` (one view per sample; ``drop`` honoured) or
        :class:`~vantage.sampling.strategies.ViewSetCond` (a set per sample). ``guidance`` ``w``: classifier-free
        guidance ``(1 + w)ε_c − wε_u`` with the zero feature image as the null condition (None or 0: none)."""
        return GeNVSDenoiser(self, guidance or 0.0, cache_size=cache_size or self.config.cache_size)

    set_denoiser = single_view_denoiser

    def volume_cache(self, size: int | None = None) -> VolumeCache:
        """A :class:`~vantage.methods.genvs_sampling.VolumeCache` of ``size`` view sets (default ``cache_size``),
        e.g. for :meth:`render_conditioning` of one input set at many cameras."""
        return VolumeCache(size or self.config.cache_size)

    @torch.no_grad()
    def render_conditioning(self, cond: ViewCond | Any, *, cache: VolumeCache | None = None) -> dict[str, Tensor]:
        """The field of ``cond``'s input views rendered at its target camera (deterministic samples):
        ``{"rgb" (B, 3, H, W) in [-1, 1], "depth" (B, 1, H, W) camera-z (0 where the opacity is < 0.5),
        "opacity" (B, 1, H, W)}``, upsampled to the image size. ``cache``: take the frustum volumes from it
        (:meth:`volume_cache`; each distinct input set is encoded once across calls); None: encode here."""
        views, target, _ = as_view_set(cond)
        self.check_inputs(views, target)
        r = self.render(views, target, volumes=None if cache is None else cache.volumes(self, views), check=False)
        size = self.config.resolution
        opacity = upsample(r["opacity"], size)
        depth = upsample(r["depth"], size) * (opacity >= 0.5)
        return {"rgb": upsample(r["rgb"], size).clamp(-1, 1), "depth": depth, "opacity": opacity}

    def sampling_sigmas(self, steps: int, sampler: str | None = None) -> Tensor:
        """``(steps + 1,)`` Karras et al. (2022) σ's from ``sigma_max`` to ``sigma_min`` (ρ = 7), then 0, for
        every ``sampler``."""
        return karras_sigmas(int(steps), self.config.sigma_min, self.config.sigma_max)

    @torch.no_grad()
    def preview(self, batch: PairBatch, generator: torch.Generator | None = None) -> Tensor:
        """``(n, 3, H, W)`` targets of the first ``n = min(preview_count, B)`` pairs, from all their input views."""
        from vantage.sampling.strategies import ViewSetCond

        c = self.config
        n = min(c.preview_count, batch.target.images.shape[0])
        cond = ViewSetCond(batch.cond.index(slice(0, n)), batch.target.cameras[:n, 0])
        with self.evaluating():
            sigmas = self.sampling_sigmas(c.preview_steps)
            x = randn((n, *batch.target.images.shape[2:]), generator, device=batch.target.images.device)
            out = get_sampler(c.preview_sampler)(self.single_view_denoiser(c.default_guidance), x * float(sigmas[0]),
                                                 sigmas, cond, generator=generator)
        return out.clamp(-1, 1)
