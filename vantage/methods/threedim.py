"""3DiM: pose-conditional image-to-image diffusion (Watson et al. 2022, "Novel View Synthesis with
Diffusion Models").

* Network: the X-UNet (:class:`vantage.nn.xunet.XUNet`): the clean conditioning view and the noisy
  target are two frames through shared weights, with self- and cross-frame attention and per-pixel
  ray Fourier features of both cameras as spatial FiLM. It predicts ε of the target frame.
* Noise: the continuous cosine logSNR schedule truncated to ``[logsnr_min, logsnr_max] = [−20, 20]``
  (:class:`~vantage.diffusion.schedules.CosineLogSNR`); training draws ``t ~ U[0, 1)``, the network
  gets ``λ = logSNR(t)`` and the VP-scaled input ``sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε``.
* Loss: per-sample mean squared ε error, averaged over the batch (the paper's squared error; the
  public port's unsquared global norm and its logSNR mismatch are *not* reproduced). Option
  ``prediction="v"`` (used by the small ``3dim-shapes*`` presets) trains v-prediction instead.
* Classifier-free guidance on the pose (Ho & Salimans 2022): in training the pose embedding of a
  sample is dropped with probability ``pose_dropout`` (0.1), a fresh mask drawn from the step's
  generator every step; sampling uses the paper's ε form ``ε̃ = (1 + w)·ε_c − w·ε_u`` with
  ``w = default_guidance`` (3). Our guidance module's x0 form is the same thing with ``w_x0 = 1 + w``.
* Sampling: :meth:`ThreeDiM.single_view_denoiser` is ``D(x, σ, ViewCond) -> x̂0``
  (:class:`~vantage.diffusion.denoisers.VPDenoiser` with ``noise_cond="logsnr"``); the
  stochastic-conditioning orbit lives in :mod:`vantage.sampling`. σ's for sampling are the
  schedule at uniformly spaced ``t`` (:meth:`ThreeDiM.sampling_sigmas`), as the paper's sampler.

Presets (``vantage train --list``): ``3dim-shapes32`` (tiny, the CPU-trained default model),
``3dim-shapes64`` (small, CPU-friendly), ``3dim-shapes64-relative`` (relative poses) and
``3dim-srn128`` (the paper's SRN configuration, ~471M parameters). See ``docs/3dim.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

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
from vantage.nn.unet import UNetSize
from vantage.nn.xunet import XUNetConfig, XUNetPose

__all__ = ["ThreeDiMConfig", "ThreeDiM", "xunet_config"]


@dataclass
class ThreeDiMConfig(MethodConfig, UNetSize, XUNetPose):
    """Configuration of :class:`ThreeDiM` (flat, so every field can be set with ``--set field=value``).

    Attributes:
        resolution: square image side in pixels (inputs and targets).
        ch: X-UNet base channels (paper: 256).
        ch_mult: channel multiplier per resolution level (paper: (1, 2, 2, 4)).
        num_res_blocks: residual blocks per level (paper: 3).
        attn_resolutions: feature-map sides with self- and cross-frame attention (paper: 8, 16, 32).
        num_heads: attention heads.
        dropout: dropout inside the residual blocks.
        pose_mode: ``"absolute"``: rays of both cameras in world space (SRN models);
            ``"relative"``: rays expressed in the conditioning camera's frame (pose-free inputs).
        ray_octaves_origin: NeRF Fourier octaves of the ray origins (paper: 15).
        ray_octaves_dir: NeRF Fourier octaves of the ray directions (paper: 8).
        origin_scale: ray origins are divided by this (a scene scale in world units) before the
            Fourier features.
        emb_ch: width of the noise-level and pose embeddings (None: ``4·ch``; paper: 1024).
        norm_groups: GroupNorm groups (must divide every level's channel count).
        logsnr_min, logsnr_max: limits of the cosine logSNR schedule (paper: −20, 20).
        pose_dropout: probability of dropping a sample's pose embedding in training (CFG; 0.1).
        prediction: what the X-UNet outputs: ``"eps"`` (the paper: ε, loss ‖ε̂ − ε‖²) or ``"v"``
            (Salimans & Ho 2022, Sec. 4: ``v = sqrt(ᾱ)·ε − sqrt(1 − ᾱ)·x0``, loss ‖v̂ − v‖²). ε-prediction
            recovers ``x̂0 = (z − sqrt(1 − ᾱ)·ε̂)/sqrt(ᾱ)``, which amplifies any ε error by ``1/sqrt(ᾱ)``
            at the low-SNR end of the schedule (``e^10`` at λ = −20): a small or briefly trained
            network then starts every sample from a wrong x̂0 (we measured x̂0 worse than a constant
            image at t = 0.99 after 37k training images). v-prediction keeps x̂0 bounded there; the
            CPU-trained ``3dim-shapes*`` presets use it.
        concat_cond: also feed the conditioning view by channel concatenation to both X-UNet frames
            (our extension; see :class:`~vantage.nn.xunet.XUNetConfig`); the ``3dim-shapes32`` default
            model uses it.
        clip_x0: clamp the (guided) x̂0 to [−1, 1] when sampling, as the paper's sampler does.
        default_sampler: sampler used when none is given (paper: DDPM ancestral, ``"ddpm"``).
        default_steps: sampling steps used when none are given (paper: 256).
        default_guidance: CFG weight ``w`` in 3DiM's ε form ``(1 + w)ε_c − wε_u`` (0 = none; paper: 3).
        preview_sampler, preview_steps, preview_count: sampler, steps and number of targets of the
            periodic sample grids written during training (:meth:`ThreeDiM.preview`).
        input_elevation_deg, input_radius, input_fov_deg: the camera assumed for an unposed input
            image in ``vantage sample`` (the training data's camera at azimuth 0: for the synthetic
            data, its ring at 30° elevation, radius 2.5, 40° horizontal field of view).
    """

    logsnr_min: float = -20.0
    pose_dropout: float = 0.1
    prediction: str = "eps"
    clip_x0: bool = True
    default_sampler: str = "ddpm"
    default_steps: int = 256
    default_guidance: float = 3.0

    def __post_init__(self) -> None:
        check_choice("pose_mode", self.pose_mode, ("absolute", "relative"))
        check_vp_config(self, "pose_dropout")
        check_unet_resolution(self.resolution, self.ch_mult)
        check_sampling_counts(self)
        int_tuples(self, "ch_mult", "attn_resolutions")


def xunet_config(config: ThreeDiMConfig) -> XUNetConfig:
    """The :class:`~vantage.nn.xunet.XUNetConfig` of a 3DiM config (the fields both share)."""
    names = {f.name for f in dataclasses.fields(XUNetConfig)}
    return XUNetConfig(**{k: v for k, v in dataclasses.asdict(config).items() if k in names})


class ThreeDiM(VPViewMethod):
    """3DiM (see the module docstring). ``net`` is the X-UNet, ``schedule`` the cosine logSNR schedule.
    Training, guidance and sampling are :class:`~vantage.methods.vp_view.VPViewMethod`'s; the dropout
    is of the pose (``pose_dropout``)."""

    name = "3dim"
    config_class = ThreeDiMConfig
    drop_keyword = "drop_pose"
    dropout_field = "pose_dropout"
    dropped_stat = "pose_dropped"

    def __init__(self, config: ThreeDiMConfig) -> None:
        super().__init__(config)
        from vantage.nn.xunet import XUNet

        self.net = XUNet(xunet_config(config))
        self.schedule = CosineLogSNR(config.logsnr_min, config.logsnr_max)

    def pose_dropout_mask(self, batch: int, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu") -> Tensor:
        """``(batch,)`` bool: True where the pose is dropped (probability ``pose_dropout``); a fresh
        mask per training step (:meth:`~vantage.methods.vp_view.VPViewMethod.dropout_mask`)."""
        return self.dropout_mask(batch, generator, device)


# ---------------------------------------------------------------------------------------- presets
_SHAPES = {"default_sampler": "ddpm", "dropout": 0.0, "pose_mode": "absolute", "prediction": "v",
           "input_elevation_deg": 30.0, "input_radius": 2.5, "input_fov_deg": 40.0}
register_preset("3dim-shapes32", "3dim", {
    **_SHAPES, "resolution": 32, "ch": 32, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 1,
    "attn_resolutions": (4, 8), "num_heads": 4, "emb_ch": 128, "ray_octaves_origin": 6, "origin_scale": 2.5,
    "concat_cond": True, "pose_mode": "relative", "default_steps": 64, "default_guidance": 0.0, "preview_steps": 16,
    # DDPM ancestral sampling at noise scale 0.7 (euler_ancestral at s_noise 1 is DDPM; docs/3dim.md, measured)
    "default_sampler": "euler_ancestral", "default_sampler_options": {"s_noise": 0.7},
}, "tiny 3DiM on 32x32 synthetic objects (2.4M parameters, 9.6 MB fp32; v-prediction, condition also "
   "concatenated, relative poses): the CPU-trained default model")
register_preset("3dim-shapes64", "3dim", {
    **_SHAPES, "resolution": 64, "ch": 32, "ch_mult": (1, 2, 2, 4), "num_res_blocks": 2,
    "attn_resolutions": (8, 16), "num_heads": 4, "emb_ch": 128, "default_steps": 128,
}, "small 3DiM on 64x64 synthetic objects (6.1M parameters; CPU-friendly)")
register_preset("3dim-shapes64-relative", "3dim", {
    **_SHAPES, "resolution": 64, "ch": 32, "ch_mult": (1, 2, 2, 4), "num_res_blocks": 2,
    "attn_resolutions": (8, 16), "num_heads": 4, "emb_ch": 128, "default_steps": 128, "pose_mode": "relative",
}, "3dim-shapes64 with relative poses (both cameras in the conditioning camera's frame)")
register_preset("3dim-srn128", "3dim", {
    "resolution": 128, "ch": 256, "ch_mult": (1, 2, 2, 4), "num_res_blocks": 3, "attn_resolutions": (8, 16, 32),
    "num_heads": 4, "emb_ch": 1024, "dropout": 0.1, "pose_mode": "absolute", "default_sampler": "ddpm",
    "default_steps": 256, "default_guidance": 3.0,
    "input_elevation_deg": 30.0, "input_radius": 1.3, "input_fov_deg": 51.98,
}, "the paper's SRN cars/chairs configuration: 128x128, base 256, mult (1,2,2,4), 3 res blocks, "
   "attention 8/16/32, absolute poses, DDPM 256 steps, CFG 3")
