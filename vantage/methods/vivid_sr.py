"""VIVID's super-resolution stage (Elata et al. 2024, "Novel View Synthesis with Pixel-Space Diffusion Models",
arXiv 2411.07765): a second pixel-space EDM2 model that turns the base model's 64x64 target into 256x256.

It is the base model's network (:class:`~vantage.methods.vivid.VIVID`: encoder UNet over the source view, joint
self + cross attention, the 20-D camera vector as a label, EDM2 preconditioning and uncertainty-weighted loss),
at the high resolution ``R``, with one more input: the low-resolution target (``low_resolution`` ``r``)
bilinearly upsampled to ``R`` and concatenated to the scaled noisy target ``c_in·x``:

```
 source view x_s (R x R) ──► encoder UNet ──────────────────────────► keys/values of the attention blocks
 [c_in·x ; up(x_low) + s·n] (R x R, 6 channels) ──► denoiser UNet ──► F;   D = c_skip·x + c_out·F
```

* Training (pairs at ``R``): the low-resolution target is made from the target itself, ``x_low = down(x_0)``
  (antialiased bilinear to ``r``), then ``up(x_low)`` (bilinear back to ``R``); it is augmented with Gaussian
  noise of standard deviation ``s = noisy_sr`` (0.25, as the reference code does) so that the model does not
  copy the low-resolution input's artefacts. Loss, σ distribution and sampler are the base model's (EDM2 Eq. 21;
  ln σ ~ N(−0.8, 1.6²); Heun, 32 steps).
* Sampling: :meth:`VIVIDSR.upsample` of the base model's samples, conditioned on the high-resolution source
  and the same cameras. No guidance (the paper's SR stage is unguided); ``s·n`` is drawn once per sample from
  the sampling generator (the reference draws it anew at every network call; one draw keeps the conditioning
  fixed along the trajectory).
* ``vantage sample --checkpoint BASE --sr-checkpoint SR`` chains the two (``docs/vivid.md``); the SR model's
  ``low_resolution`` must be the base model's resolution.

Presets: ``vivid-sr256`` (64 -> 256 on RealEstate10K: 64 channels, mult 1-2-3-4, 3 blocks, heads of 32, no
attention above the lowest level, RealEstate10K statistics at 256 px: the structure of the reference code's SR
configuration) and ``vivid-shapes-sr64`` (32 -> 64 on the synthetic data, CPU-sized). ``vivid-sr`` names the
method itself (its bare defaults: no camera statistics, so the camera vector is not standardised, and no training
defaults), as every method name does; the paper's stage is ``vivid-sr256``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vantage.cameras import Cameras
from vantage.data.pairs import PairBatch
from vantage.diffusion.losses import edm2_loss
from vantage.diffusion.noise import randn
from vantage.diffusion.samplers import get_sampler
from vantage.diffusion.schedules import sample_lognormal_sigma
from vantage.methods import register_preset
from vantage.methods.base import ViewCond, sampler_options_for
from vantage.methods.vivid import PAPER_TRAIN, SHAPES_TRAIN, VIVID, VIVIDConfig, _shapes_stats
from vantage.methods.vivid_camera import reference_camera_statistics
from vantage.nn.edm2_unet import EDM2UNetConfig

__all__ = ["VIVIDSRConfig", "VIVIDSR", "SRCond", "downsample", "upsample_bilinear"]


def downsample(x: Tensor, size: int) -> Tensor:
    """``(B, C, R, R) -> (B, C, size, size)``: antialiased bilinear (how the training low-resolution target is made)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def upsample_bilinear(x: Tensor, size: int) -> Tensor:
    """``(B, C, r, r) -> (B, C, size, size)``: bilinear, pixel centres aligned (``align_corners=False``)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@dataclass
class SRCond(ViewCond):
    """:class:`ViewCond` of the SR stage: ``images`` is the high-resolution source ``(B, 3, R, R)``, and
    ``low_res`` ``(B, 3, R, R)`` the upsampled low-resolution target (noise-augmented) concatenated to the input."""

    low_res: Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low_res is None or tuple(self.low_res.shape) != tuple(self.images.shape):
            got = None if self.low_res is None else tuple(self.low_res.shape)
            raise ValueError(f"SRCond.low_res must be the upsampled target {tuple(self.images.shape)}, got {got}")

    def to(self, device: torch.device | str) -> SRCond:
        v = super().to(device)
        return SRCond(v.images, v.source, v.target, v.drop, self.low_res.to(device))

    def index(self, idx: Tensor | slice) -> SRCond:
        v = super().index(idx)
        return SRCond(v.images, v.source, v.target, v.drop, self.low_res[idx])


@dataclass
class VIVIDSRConfig(VIVIDConfig):
    """Configuration of :class:`VIVIDSR`: :class:`~vantage.methods.vivid.VIVIDConfig` (``resolution`` is the
    high one, ``R``) plus:

    Attributes:
        low_resolution: side ``r`` of the low-resolution targets it upsamples (the base model's resolution);
            None = ``resolution // 4`` (the paper's 64 -> 256).
        noisy_sr: standard deviation of the Gaussian noise added to the upsampled low-resolution target, in
            training and sampling (reference: 0.25).
        encoder_channels_per_head: attention head width of the encoder UNet (over the source view); None = the
            denoiser's ``channels_per_head``. The reference code's SR network has heads of 32 in its denoiser and
            of 64 (EDM2's default) in its encoder; ``vantage convert vivid`` sets 64 for its weights.

    The structure defaults are the reference code's SR configuration (64 channels, heads of 32, no extra
    attention; the rest as :class:`~vantage.methods.vivid.VIVIDConfig`). Guidance fields must stay unset
    (``default_guidance = 1``, no ``guide_checkpoint``): the stage is unguided.
    """

    resolution: int = 256
    low_resolution: int | None = None
    noisy_sr: float = 0.25
    model_channels: int = 64
    channels_per_head: int = 32
    extra_attn: int | None = None
    default_guidance: float = 1.0
    encoder_channels_per_head: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low_resolution is None:
            self.low_resolution = max(1, self.resolution // 4)
        if not 1 <= self.low_resolution < self.resolution:
            raise ValueError(f"low_resolution must be in [1, resolution={self.resolution}), got {self.low_resolution}")
        if self.noisy_sr < 0:
            raise ValueError(f"noisy_sr must be >= 0, got {self.noisy_sr}")
        if not self.conditional:
            raise ValueError("the SR stage needs its source view (conditional=True)")
        if self.guide_checkpoint or self.default_guidance not in (0.0, 1.0):
            raise ValueError("the SR stage is unguided: leave guide_checkpoint empty and default_guidance at 1")
        if self.encoder_channels_per_head is not None and self.encoder_channels_per_head < 1:
            raise ValueError(f"encoder_channels_per_head must be >= 1 or None, got {self.encoder_channels_per_head}")

    def unet_config(self) -> EDM2UNetConfig:
        """The denoiser: the base structure with 3 more input channels (the upsampled low-resolution target)."""
        base = super().unet_config()
        return dataclasses.replace(base, in_channels=base.in_channels + 3)

    def encoder_config(self) -> EDM2UNetConfig:
        """The encoder: the base structure (3 input channels), heads of ``encoder_channels_per_head``."""
        base = super().unet_config()
        if self.encoder_channels_per_head is None:
            return base
        return dataclasses.replace(base, channels_per_head=self.encoder_channels_per_head)


class VIVIDSR(VIVID):
    """VIVID's super-resolution stage (see the module docstring)."""

    name = "vivid-sr"
    config_class = VIVIDSRConfig

    def _call(self, net: nn.Module, x_in: Tensor, c_noise: Tensor, cond: ViewCond) -> Tensor:
        if not isinstance(cond, SRCond):
            raise TypeError(f"the SR stage needs cond: SRCond (source, cameras and the low-resolution target), "
                            f"got {type(cond).__name__}")
        return super()._call(net, torch.cat([x_in, cond.low_res.to(x_in.dtype)], 1), c_noise, cond)

    def low_res_condition(self, low: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, 3, r, r)`` low-resolution targets -> ``(B, 3, R, R)`` upsampled + ``noisy_sr`` Gaussian noise
        (drawn from ``generator``)."""
        cfg = self.config
        r = cfg.low_resolution
        if tuple(low.shape[-2:]) != (r, r):
            raise ValueError(f"this SR model upsamples {r}x{r} images, got {low.shape[-1]}x{low.shape[-2]}")
        up = upsample_bilinear(low, cfg.resolution)
        if cfg.noisy_sr == 0:
            return up
        return up + cfg.noisy_sr * randn(up.shape, generator, device=up.device).to(up.dtype)

    def loss(self, batch: PairBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """EDM2's uncertainty-weighted loss of the SR stage on pairs at ``resolution``.

        Draws from ``generator``, in order: ln σ ``(B,)``, ε ``(B, 3, R, R)``, the low-resolution input's noise
        ``(B, 3, R, R)``. Returns ``{"loss", "logvar"}``.
        """
        x_src, cam_src, x0, cam_tgt = self._unpack(batch)
        cfg, dev, b = self.config, x0.device, x0.shape[0]
        gdev = generator.device if generator is not None else dev
        sigma = sample_lognormal_sigma(b, cfg.P_mean, cfg.P_std, generator=generator, device=gdev).to(dev)
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(dev, x0.dtype)
        low = self.low_res_condition(downsample(x0, cfg.low_resolution), generator)
        x = x0 + sigma.view(-1, 1, 1, 1).to(x0.dtype) * noise
        D, logvar = self.edm2_denoiser()(x, sigma, SRCond(x_src, cam_src, cam_tgt, low_res=low), return_logvar=True)
        per_sample = edm2_loss(D.float(), x0.float(), sigma, logvar.float(), cfg.sigma_data)
        return {"loss": per_sample.mean(), "logvar": logvar.detach().float().mean()}

    def single_view_denoiser(self, guidance: float | None = None, *, guide=None, interval=None) -> nn.Module:
        """The unguided ``D(x, σ, cond: SRCond)``; any guidance other than none is an error."""
        if guide is not None or (guidance is not None and float(guidance) not in (0.0, 1.0)):
            raise ValueError("the SR stage is unguided (VIVID samples it without guidance); use guidance 1")
        return self.edm2_denoiser()

    @torch.no_grad()
    def upsample(self, low: Tensor, source: Tensor, source_cameras: Cameras, target_cameras: Cameras, *,
                 steps: int | None = None, sampler: str | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Super-resolve generated targets.

        Args:
            low: ``(B, 3, r, r)`` low-resolution targets in [-1, 1] (the base model's samples).
            source: ``(B, 3, R, R)`` high-resolution source views.
            source_cameras, target_cameras: :class:`Cameras` ``(B,)`` (any image size: rescaled to ``R``).
            steps, sampler: default the config's (Heun, 32).
            generator: draws the low-resolution input's noise, then the initial noise and the sampler's noise.
        Returns:
            ``(B, 3, R, R)`` in [-1, 1].
        """
        cfg = self.config
        dev = next(self.parameters()).device
        cond = SRCond(source.to(dev), source_cameras.to(dev), target_cameras.to(dev),
                      low_res=self.low_res_condition(low.to(dev), generator))
        sigmas = self.sampling_sigmas(steps or cfg.default_steps)
        x = randn(tuple(source.shape), generator, device=dev) * float(sigmas[0])
        with self.evaluating():
            out = get_sampler(sampler or cfg.default_sampler)(self.edm2_denoiser(), x, sigmas, cond,
                                                              generator=generator,
                                                              **sampler_options_for(cfg, sampler))
        return out.clamp(-1, 1)

    @torch.no_grad()
    def preview(self, batch: PairBatch, generator: torch.Generator | None = None) -> Tensor:
        """``(n, 3, R, R)``: the first ``n = min(preview_count, B)`` targets downsampled and super-resolved."""
        x_src, cam_src, x0, cam_tgt = self._unpack(batch)
        n = min(self.config.preview_count, x0.shape[0])
        return self.upsample(downsample(x0[:n], self.config.low_resolution), x_src[:n], cam_src[:n], cam_tgt[:n],
                             steps=self.config.preview_steps, sampler=self.config.preview_sampler, generator=generator)


_SR256_MEAN, _SR256_STD = reference_camera_statistics(256)
register_preset("vivid-sr256", "vivid-sr", {
    "resolution": 256, "low_resolution": 64, "model_channels": 64, "channel_mult": (1, 2, 3, 4), "num_blocks": 3,
    "attn_resolutions": (16, 8), "extra_attn": None, "channels_per_head": 32, "encoder_channels_per_head": 64,
    "dropout": 0.0, "noisy_sr": 0.25, "camera_mean": _SR256_MEAN, "camera_std": _SR256_STD, "default_sampler": "heun",
    "default_steps": 32,
}, "VIVID's 64 -> 256 super-resolution stage for vivid-re10k64 (64 channels, mult 1-2-3-4, 3 blocks, heads of 32 "
   "in the denoiser and 64 in the encoder as the reference code, "
   "low-resolution target concatenated to the input, noise augmentation 0.25; unguided)",
   train=PAPER_TRAIN)  # EDM2's schedule and EMA with the base model's values (the paper gives none for the SR stage)
register_preset("vivid-shapes-sr64", "vivid-sr", {
    "resolution": 64, "low_resolution": 32, "model_channels": 32, "channel_mult": (1, 2, 2), "num_blocks": 2,
    "attn_resolutions": (16,), "extra_attn": None, "channels_per_head": 32, **_shapes_stats(64),
    "input_elevation_deg": 30.0, "input_radius": 2.5, "input_fov_deg": 40.0, "preview_steps": 12,
}, "a small 32 -> 64 super-resolution stage for vivid-shapes32 on synthetic objects (CPU-sized)",
   train=SHAPES_TRAIN)
