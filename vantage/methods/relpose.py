"""``relpose``: a Zero-1-to-3-style relative-pose single-view model (Liu et al. 2023, "Zero-1-to-3:
Zero-shot One Image to 3D Object", ICCV; the base model of ViewFusion's interpolated denoising).

* **Pose**: the relative camera of Zero-1-to-3, ``[Δpolar, sin Δazimuth, cos Δazimuth, Δradius]``
  (target minus source) of the two camera *centres* in spherical coordinates about the world origin:
  polar angle measured from world +z (up), azimuth ``atan2(y, x)`` about the z (orbit) axis, radius
  the distance to the origin (:func:`vantage.cameras.zero123_relative_pose`, the function our
  Zero-1-to-3 data conversion is tested against). It assumes cameras orbiting and looking at the
  origin of a +z-up world (the synthetic data, Objaverse/GSO renders, NMR, SRN); a rotation of the
  whole scene about the z axis leaves it unchanged, and the camera's roll and look direction are
  not seen.
* **Network** (:class:`RelPoseNet`): an ADM-style :class:`~vantage.nn.unet.UNet` on
  ``concat[noisy target, conditioning image]`` (6 input channels), FiLM in every ResBlock from the
  noise-level embedding plus a linear projection of ``concat[image embedding, pose embedding]``.
  The image embedding is a small learned encoder (:class:`ImageEncoder`: strided convs, global
  average pool, linear). It **stands in for Zero-1-to-3's frozen CLIP image embedding**, which cannot
  be used here (no pretrained weights are shipped or downloaded). The pose embedding is an MLP of the
  4-vector; Zero-1-to-3 concatenates the raw 4-vector to the CLIP token and projects both linearly
  (``cc_projection``), which our joint linear projection into the embedding mirrors.
* **Noise and loss**: 3DiM's: the continuous cosine logSNR schedule on ``[logsnr_min, logsnr_max]``
  (:class:`~vantage.diffusion.schedules.CosineLogSNR`), ``t ~ U[0, 1)``, VP-scaled input, per-sample
  MSE of ε (Zero-1-to-3's objective) or of v (``prediction="v"``, the small presets; see
  ``docs/3dim.md`` for why). Zero-1-to-3 is a latent model fine-tuned from Stable Diffusion; we
  train in pixel space from scratch.
* **Classifier-free guidance** (Ho & Salimans 2022): with probability ``cond_dropout`` a training
  sample is dropped, by a fresh mask per step drawn from the step's generator after t and ε. With
  ``cond_drop="all"`` (default) a drop zeroes the concatenated image, the image embedding and the
  pose embedding together: exactly the null branch Zero-1-to-3 samples with (zeros for the concat
  latent and for the whole projected CLIP+pose token). Zero-1-to-3's *training* draws differently
  (``u ~ U[0, 1)``: CLIP embedding replaced by the empty-prompt embedding for ``u < 0.1``, concat
  latent zeroed for ``0.05 <= u < 0.15``, both for ``0.05 <= u < 0.1``; the pose is never dropped), so
  its sampling null branch is never seen in training; our joint drop trains the branch that is used.
  ``cond_drop="pose"`` drops only the pose (3DiM's CFG). The guided ε is ``(1 + w)·ε_c − w·ε_u``
  (ε form, as in 3DiM; Zero-1-to-3's ``scale`` s is ``w = s − 1``).
* **Sampling**: :meth:`RelPose.single_view_denoiser` is ``D(x, σ, ViewCond) -> x̂0`` with the same
  contract as 3DiM's, so the strategies of :mod:`vantage.sampling` (single, stochastic) and
  ``vantage sample`` use it unchanged; σ's are the schedule at uniform ``t``
  (:meth:`RelPose.sampling_sigmas`).

Presets: ``relpose-shapes32`` (CPU-sized, like ``3dim-shapes32``) and ``relpose-shapes64``. See
``docs/relpose.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vantage.cameras import Cameras, zero123_relative_pose
from vantage.diffusion.schedules import CosineLogSNR
from vantage.methods import register_preset
from vantage.methods.base import (
    MethodConfig,
    check_choice,
    check_sampling_counts,
    check_unet_resolution,
    int_tuples,
)
from vantage.methods.vp_view import VPViewMethod, check_vp_config
from vantage.nn.blocks import group_norm
from vantage.nn.embeddings import MLPEmbedder, logsnr_to_cosine_time
from vantage.nn.unet import UNet, UNetConfig, UNetSize

__all__ = ["RelPoseConfig", "RelPose", "RelPoseNet", "ImageEncoder", "relative_pose", "check_pose_unet", "POSE_DIM"]

#: length of the relative pose vector [Δpolar, sin Δazimuth, cos Δazimuth, Δradius]
POSE_DIM = 4


def relative_pose(source: Cameras, target: Cameras) -> Tensor:
    """``(..., 4)`` Zero-1-to-3 relative pose [Δpolar, sin Δazimuth, cos Δazimuth, Δradius], Δ = target − source.

    Spherical coordinates of the camera centres about the world origin, +z up (polar from +z, azimuth
    ``atan2(y, x)``, radius); angles in radians, the radius in world units. Same as
    :func:`vantage.cameras.zero123_relative_pose`, returned in float32.
    """
    return zero123_relative_pose(source, target).float()


@dataclass
class PoseUNetConfig(MethodConfig, UNetSize):
    """The fields :class:`RelPoseConfig` and the regression baseline's config share (documented there): the UNet
    (:class:`~vantage.nn.unet.UNetSize`), the conditioning image encoder and the pose embedding. Validated by
    :func:`check_pose_unet`."""

    encoder_ch: int = 32
    image_emb_dim: int = 256
    pose_emb_dim: int = 64


@dataclass
class RelPoseConfig(PoseUNetConfig):
    """Configuration of :class:`RelPose` (flat, so every field can be set with ``--set field=value``).

    Attributes:
        resolution: square image side in pixels (inputs and targets).
        ch, ch_mult, num_res_blocks, attn_resolutions, num_heads, dropout, norm_groups: the UNet
            (:class:`~vantage.nn.unet.UNetConfig`): base channels, multiplier per level, ResBlocks per
            level, feature-map sides with self-attention, heads, ResBlock dropout, GroupNorm groups.
        emb_ch: width of the noise-level embedding fed to every ResBlock (None: ``4·ch``).
        encoder_ch: base channels of the image encoder (doubled at each of its first two stride-2
            convs); must be divisible by ``norm_groups``.
        image_emb_dim: size of the global image embedding (Zero-1-to-3's CLIP ViT-L/14: 768).
        pose_emb_dim: size of the pose embedding (an MLP of the 4-vector).
        logsnr_min, logsnr_max: limits of the cosine logSNR schedule (3DiM: −20, 20).
        cond_dropout: probability of dropping a training sample's conditioning (CFG), a fresh mask
            every step.
        cond_drop: what a drop removes: ``"all"`` (concatenated image, image embedding and pose:
            Zero-1-to-3's null branch) or ``"pose"`` (the pose only, as 3DiM).
        prediction: ``"eps"`` (Zero-1-to-3, 3DiM) or ``"v"`` (Salimans & Ho 2022; bounded x̂0 at the
            low-SNR end, used by the small presets).
        clip_x0: clamp the (guided) x̂0 to [−1, 1] when sampling.
        default_sampler, default_steps: Zero-1-to-3's demo samples with DDIM η = 1 (= ``"ddpm"``
            ancestral), 50 steps.
        default_guidance: CFG weight ``w`` in the ε form ``(1 + w)ε_c − wε_u``; 2 = Zero-1-to-3's
            ``scale`` 3 (``ε_u + s(ε_c − ε_u)``).
        preview_sampler, preview_steps, preview_count, input_elevation_deg, input_radius, input_fov_deg:
            see :class:`~vantage.methods.base.MethodConfig`.
    """

    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    cond_dropout: float = 0.1
    cond_drop: str = "all"
    prediction: str = "eps"
    clip_x0: bool = True
    default_sampler: str = "ddpm"
    default_steps: int = 50
    default_guidance: float = 2.0

    def __post_init__(self) -> None:
        check_choice("cond_drop", self.cond_drop, ("all", "pose"))
        check_vp_config(self, "cond_dropout")
        check_pose_unet(self)


def check_pose_unet(config: Any) -> None:
    """Validate (and normalise) the fields :class:`RelPoseConfig` and the regression baseline's config share:
    resolution vs ``ch_mult``, ``encoder_ch`` a multiple of ``norm_groups``, embedding sizes, sampling
    counts; ``ch_mult`` and ``attn_resolutions`` become int tuples."""
    check_unet_resolution(config.resolution, config.ch_mult)
    if config.encoder_ch < 1 or config.encoder_ch % config.norm_groups:
        raise ValueError(f"encoder_ch ({config.encoder_ch}) must be a positive multiple of norm_groups "
                         f"({config.norm_groups})")
    if config.image_emb_dim < 1 or config.pose_emb_dim < 1:
        raise ValueError("image_emb_dim and pose_emb_dim must be >= 1")
    check_sampling_counts(config)
    int_tuples(config, "ch_mult", "attn_resolutions")


class ImageEncoder(nn.Module):
    """Global embedding of the conditioning image (our stand-in for Zero-1-to-3's CLIP embedding).

    ``(B, 3, H, W)`` -> ``(B, out_dim)``: conv 3x3 to ``ch``, then ``levels`` × [GroupNorm, SiLU,
    conv 3x3 stride 2] (channels ``ch, 2ch, 4ch, 4ch, …``) down to about 4x4, GroupNorm, SiLU,
    global average pool, linear.
    """

    def __init__(self, ch: int, out_dim: int, resolution: int, groups: int) -> None:
        super().__init__()
        levels = max(1, resolution.bit_length() - 3)  # 32 px -> 3 strided convs (4x4), 64 -> 4
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 3, padding=1)]
        c = ch
        for lvl in range(levels):
            c_out = ch * 2 ** min(lvl + 1, 2)
            layers += [group_norm(c, groups), nn.SiLU(), nn.Conv2d(c, c_out, 3, stride=2, padding=1)]
            c = c_out
        layers += [group_norm(c, groups), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def unet_config(config: RelPoseConfig) -> UNetConfig:
    """The :class:`UNetConfig` of a relpose config: 3 + 3 concatenated input channels, ADM/3DiM-style
    blocks (FiLM, resampling ResBlocks, ``(h + skip)/√2``, zero-initialised outputs), the noise level
    as 3DiM's cosine time ``t ∈ (0, 1)`` scaled by 1000, and a linear ``cond_vec`` of the image and
    pose embeddings added to the noise embedding."""
    c = config
    emb = c.emb_ch or 4 * c.ch
    return UNetConfig(resolution=c.resolution, in_channels=3, out_channels=3, concat_channels=3, ch=c.ch,
                      ch_mult=c.ch_mult, num_res_blocks=c.num_res_blocks, attn_resolutions=c.attn_resolutions,
                      mid_attention=True, num_heads=c.num_heads, dropout=c.dropout, norm_groups=c.norm_groups,
                      emb_freq_dim=c.ch, emb_hidden_dim=emb, emb_dim=emb, emb_scale=1000.0, emb_order="sin_cos",
                      cond_dim=c.image_emb_dim + c.pose_emb_dim, cond_embed="linear", emb_mode="film",
                      block_emb_act=True, resample="resblock", skip_rescale=True, zero_init=True)


class RelPoseNet(nn.Module):
    """``forward(x_cond, x_noisy, logsnr, cam_cond, cam_target, drop=None) -> (B, 3, H, W)`` (ε or v).

    Args of ``forward``:
        x_cond: ``(B, 3, H, W)`` conditioning view in [-1, 1].
        x_noisy: ``(B, 3, H, W)`` VP-scaled noisy target ``sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε``.
        logsnr: ``(B,)`` (or 0-dim) logSNR ``λ = −2 ln σ`` of ``x_noisy``.
        cam_cond, cam_target: :class:`Cameras` ``(B,)``; only their relative pose (:func:`relative_pose`)
            is used.
        drop: optional ``(B,)`` bool: drop these samples' conditioning (``cond_drop`` says what).
    """

    def __init__(self, config: RelPoseConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet(unet_config(config))
        self.image_encoder = ImageEncoder(config.encoder_ch, config.image_emb_dim, config.resolution,
                                          config.norm_groups)
        self.pose_embed = MLPEmbedder(POSE_DIM, config.pose_emb_dim, config.pose_emb_dim)

    def forward(self, x_cond: Tensor, x_noisy: Tensor, logsnr: Tensor | float, cam_cond: Cameras,
                cam_target: Cameras, drop: Tensor | None = None) -> Tensor:
        B = x_noisy.shape[0]
        if x_cond.shape != x_noisy.shape:
            raise ValueError(f"x_cond {tuple(x_cond.shape)} and x_noisy {tuple(x_noisy.shape)} must have the same "
                             f"shape (B, 3, H, W)")
        for name, cams in (("cam_cond", cam_cond), ("cam_target", cam_target)):
            if tuple(cams.shape) != (B,):
                raise ValueError(f"{name} must have shape ({B},), got {tuple(cams.shape)}")
        lam = torch.as_tensor(logsnr, dtype=torch.float32, device=x_noisy.device)
        lam = lam.expand(B) if lam.ndim == 0 else lam
        x_cond = x_cond.to(x_noisy.dtype)
        pose = relative_pose(cam_cond.to(x_noisy.device), cam_target.to(x_noisy.device))  # (B, 4)
        img_emb = self.image_encoder(x_cond)
        pose_emb = self.pose_embed(pose.to(img_emb.dtype))
        if drop is not None:
            if tuple(drop.shape) != (B,):
                raise ValueError(f"drop must have shape ({B},), got {tuple(drop.shape)}")
            keep = ~drop.to(device=x_noisy.device, dtype=torch.bool)
            pose_emb = torch.where(keep[:, None], pose_emb, torch.zeros_like(pose_emb))
            if self.config.cond_drop == "all":
                img_emb = torch.where(keep[:, None], img_emb, torch.zeros_like(img_emb))
                x_cond = torch.where(keep[:, None, None, None], x_cond, torch.zeros_like(x_cond))
        t = logsnr_to_cosine_time(lam, self.config.logsnr_min, self.config.logsnr_max)
        return self.unet(x_noisy, t, cond_vec=torch.cat([img_emb, pose_emb], dim=1), concat=x_cond)


class RelPose(VPViewMethod):
    """Zero-1-to-3-style relative-pose model (see the module docstring). ``net`` is the
    :class:`RelPoseNet`, ``schedule`` the cosine logSNR schedule. Training, guidance and sampling are
    :class:`~vantage.methods.vp_view.VPViewMethod`'s (the contract of 3DiM's); the dropout is of the
    conditioning (``cond_dropout``, ``cond_drop``)."""

    name = "relpose"
    config_class = RelPoseConfig
    drop_keyword = "drop"
    dropout_field = "cond_dropout"
    dropped_stat = "cond_dropped"

    def __init__(self, config: RelPoseConfig) -> None:
        super().__init__(config)
        self.net = RelPoseNet(config)
        self.schedule = CosineLogSNR(config.logsnr_min, config.logsnr_max)

    def cond_dropout_mask(self, batch: int, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu") -> Tensor:
        """``(batch,)`` bool: True where the conditioning is dropped (probability ``cond_dropout``); a
        fresh mask per training step (:meth:`~vantage.methods.vp_view.VPViewMethod.dropout_mask`)."""
        return self.dropout_mask(batch, generator, device)


# ---------------------------------------------------------------------------------------- presets
_SHAPES = {"default_sampler": "ddpm", "dropout": 0.0, "prediction": "v", "cond_drop": "all",
           "input_elevation_deg": 30.0, "input_radius": 2.5, "input_fov_deg": 40.0}
register_preset("relpose-shapes32", "relpose", {
    **_SHAPES, "resolution": 32, "ch": 32, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 1, "attn_resolutions": (4, 8),
    "num_heads": 4, "emb_ch": 128, "encoder_ch": 32, "image_emb_dim": 128, "pose_emb_dim": 64,
    "default_steps": 64, "default_guidance": 0.0, "preview_steps": 16,
}, "tiny Zero-1-to-3-style relative-pose model on 32x32 synthetic objects (2.3M parameters, 9.0 MB fp32; "
   "UNet layout of 3dim-shapes32, v-prediction, a learned image embedding in place of CLIP, no CFG by default)")
register_preset("relpose-shapes64", "relpose", {
    **_SHAPES, "resolution": 64, "ch": 32, "ch_mult": (1, 2, 2, 4), "num_res_blocks": 2,
    "attn_resolutions": (8, 16), "num_heads": 4, "emb_ch": 128, "encoder_ch": 32, "image_emb_dim": 256,
    "pose_emb_dim": 64, "default_steps": 128, "default_guidance": 2.0,
}, "small Zero-1-to-3-style relative-pose model on 64x64 synthetic objects (5.7M parameters; CPU-friendly; "
   "CFG 2 = Zero-1-to-3's scale 3)")
