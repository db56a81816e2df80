"""The 3DiM X-UNet (Watson et al. 2022, "Novel View Synthesis with Diffusion Models").

Two frames, the clean conditioning view and the noisy target, go through one set of UNet weights
as a batch of ``2B`` images (frame index minor: rows ``2b`` = conditioning, ``2b+1`` = target)::

    x_cond, x_noisy (B,3,H,W) ──stack──► (2B,3,H,W) ──► UNetBackbone(frames=2) ──► target frame ──► ε (B,3,H,W)
    logSNR per frame: (logsnr_max, logsnr) ──► t=(2/π)atan(e^{-λ/2}) ──► sinusoid(1000·t) ──► MLP ──► e (2B,E)
    cameras per frame ──► ray_pose_features (2B,144,H,W) ──► conv 3x3 stride 2^l ──► p_l (2B,E,H/2^l,W/2^l)
    level-l embedding: SiLU(e + p_l) ──► every ResBlock: h = GN(h)·(1+scale)+shift, [scale,shift] = W·emb per pixel

* ResBlocks: BigGAN style (GN, SiLU, conv, FiLM after GN, SiLU, dropout, zero-initialised conv),
  ``(h + skip)/√2``; resampling by ResBlocks (2×2 average pool / nearest).
* GroupNorm statistics per frame (``nn.GroupNorm`` over ``2B`` images: never pooled across frames).
* At the attention resolutions each ResBlock is followed by self-attention within each frame and
  cross-attention in which each frame attends to the other (separate weights, zero-initialised
  output projections, ``(h + attn)/√2``). The middle is one such block (ResBlock + attention).
* The conditioning frame is "clean": its noise level is ``logsnr_max`` (20, the end of 3DiM's
  clipped cosine logSNR range), embedded by the same MLP; no learned "clean" embedding.
* Pose dropout for classifier-free guidance: ``drop_pose`` zeroes the 144-channel ray features of
  both frames of the dropped samples (the per-level convs then contribute only their biases).
* ``pose_mode="relative"``: both cameras are expressed in the conditioning camera's frame (it
  becomes exactly the identity), so the output is invariant to a global rigid transform.
* Output: the target frame only. The conditioning frame's computation stops after the last
  attention layer (it cannot influence the target afterwards), which saves the top decoder levels.

Differences to the published 3DiM code / its public port (documented choices): GroupNorm per frame
(the port pools both frames), each frame has its own noise-level embedding, attention blocks have
a zero-initialised output projection (ADM), the Fourier features include π (NeRF), and the pose
maps use each camera's own intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vantage.cameras import Cameras
from vantage.nn.blocks import SpatialEmbedder
from vantage.nn.embeddings import ScalarEmbedder, logsnr_to_cosine_time, ray_feature_channels, ray_pose_features
from vantage.nn.unet import UNetBackbone, UNetSize, count_parameters

__all__ = ["XUNetConfig", "XUNetPose", "XUNet", "xunet_paper_config", "xunet_small_config", "xunet_param_count"]

POSE_MODES = ("absolute", "relative")


@dataclass
class XUNetPose:
    """The X-UNet's pose and clean-frame fields, shared with :class:`~vantage.methods.threedim.ThreeDiMConfig`
    (documented in :class:`XUNetConfig`)."""

    pose_mode: str = "absolute"
    ray_octaves_origin: int = 15
    ray_octaves_dir: int = 8
    origin_scale: float = 1.0
    logsnr_max: float = 20.0
    concat_cond: bool = False


@dataclass
class XUNetConfig(UNetSize, XUNetPose):
    """Configuration of :class:`XUNet` (defaults: a 64×64 model of 23.0M parameters).

    Attributes:
        resolution: side of the square frames in pixels (divisible by ``2^(len(ch_mult)-1)``).
        ch: base channel count.
        ch_mult: channel multiplier per level (each level halves the side).
        num_res_blocks: ResBlocks per level on the way down (``+1`` on the way up).
        attn_resolutions: feature-map sides with self- + cross-attention after each ResBlock;
            sides that match no level are ignored (the paper lists 8/16/32 for 128×128 frames,
            whose levels are 128/64/32/16).
        num_heads: attention heads.
        dropout: dropout rate inside ResBlocks (the paper uses 0.1).
        pose_mode: "absolute" (world-space rays of both cameras: SRN) or "relative" (both cameras
            in the conditioning camera's frame).
        ray_octaves_origin: Fourier octaves of the ray origins (15).
        ray_octaves_dir: Fourier octaves of the unit ray directions (8).
        origin_scale: ray origins are divided by this before encoding (a scene scale in world units).
        logsnr_max: noise level (logSNR) given to the clean conditioning frame.
        emb_ch: width of the noise-level and pose embeddings (``None``: ``4·ch``; paper: 1024).
        norm_groups: GroupNorm groups (must divide every level's channel count).
        channels: image channels of both frames (3).
        concat_cond: also concatenate the clean conditioning view to the input channels of *both*
            frames (``[x_cond, x_cond]`` and ``[x_noisy, x_cond]``; the input convolution takes
            ``2·channels``). Our extension, not in the paper (whose frames meet only in the cross-frame
            attention): it gives the target frame the conditioning view's appearance pixel-aligned at
            the input, as Zero-1-to-3 and ViewFusion condition, which a small, briefly trained model
            learns much faster than attention-only transfer (docs/3dim.md).
        prune_cond_frame: skip the conditioning frame's computation after the last attention layer
            (exact; turn off only to check that it is exact).
    """

    channels: int = 3
    prune_cond_frame: bool = True


def xunet_paper_config() -> XUNetConfig:
    """3DiM's SRN configuration: 128×128, base 256, mult (1, 2, 2, 4), 3 res blocks, attention at
    8/16/32, 4 heads, emb 1024, dropout 0.1, absolute poses. 458.5M parameters here (the paper
    reports ~471M; see docs/networks.md for where the 2.7% may come from)."""
    return XUNetConfig(resolution=128, ch=256, ch_mult=(1, 2, 2, 4), num_res_blocks=3, attn_resolutions=(8, 16, 32),
                       num_heads=4, dropout=0.1, pose_mode="absolute", emb_ch=1024)


def xunet_small_config(resolution: int = 64) -> XUNetConfig:
    """A CPU-sized X-UNet: base 32, mult (1, 2, 2, 4), one res block per level, attention at 8 and 16,
    4 heads, emb 128: 4.41M parameters (17.6 MB as fp32) at 64 px, 3.98M at 32 px."""
    return XUNetConfig(resolution=resolution, ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(8, 16),
                       num_heads=4, emb_ch=128)


def xunet_param_count(config: XUNetConfig) -> int:
    """Parameters of ``XUNet(config)``, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        return count_parameters(XUNet(config))


class XUNet(nn.Module):
    """3DiM's X-UNet: ``forward(x_cond, x_noisy, logsnr, cam_cond, cam_target, drop_pose=None) -> ε``.

    Args of ``forward``:
        x_cond: ``(B, 3, H, W)`` clean conditioning view in [-1, 1].
        x_noisy: ``(B, 3, H, W)`` VP-scaled noisy target (``x_σ / sqrt(1 + σ²)``).
        logsnr: ``(B,)`` logSNR of ``x_noisy`` (``-2 ln σ``); a 0-dim tensor is broadcast.
        cam_cond, cam_target: :class:`Cameras` of shape ``(B,)`` with image size ``W × H``.
        drop_pose: optional ``(B,)`` bool; ``True`` zeroes the pose features of both frames of
            that sample (classifier-free guidance's unconditional branch).

    Returns the ε prediction for the target frame, ``(B, 3, H, W)``.
    """

    def __init__(self, config: XUNetConfig) -> None:
        super().__init__()
        c = config
        if c.pose_mode not in POSE_MODES:
            raise ValueError(f"pose_mode must be one of {POSE_MODES}, got {c.pose_mode!r}")
        self.config = c
        self.emb_ch = c.emb_ch or 4 * c.ch
        self.pose_channels = ray_feature_channels(c.ray_octaves_origin, c.ray_octaves_dir)
        # DDPM/3DiM sinusoid of 1000·t (sin first, frequencies 10000^(-k/(half-1))), then an MLP
        self.noise_embed = ScalarEmbedder(1, c.ch, self.emb_ch, self.emb_ch, scale=1000.0, order="sin_cos",
                                          freq_shift=1.0)
        self.pose_embed = SpatialEmbedder(self.pose_channels, self.emb_ch, len(c.ch_mult))
        sizes = [c.resolution // 2 ** l for l in range(len(c.ch_mult))]
        self.backbone = UNetBackbone(
            in_channels=c.channels * (2 if c.concat_cond else 1), out_channels=c.channels, resolution=c.resolution,
            ch=c.ch, ch_mult=c.ch_mult,
            num_res_blocks=c.num_res_blocks, attn_resolutions=c.attn_resolutions,
            mid_attention=sizes[-1] in c.attn_resolutions, mid_res_blocks=1, num_heads=c.num_heads,
            dropout=c.dropout, groups=c.norm_groups, emb_dim=self.emb_ch, emb_mode="film", block_emb_act=True,
            resample="resblock", skip_rescale=True, zero_init=True, qkv_bias=True, frames=2, cross_attention=True)

    # ------------------------------------------------------------------ inputs
    def _check_inputs(self, x_cond: Tensor, x_noisy: Tensor, logsnr: Tensor, cam_cond: Cameras,
                      cam_target: Cameras, drop_pose: Tensor | None) -> Tensor:
        c = self.config
        R = c.resolution
        for name, x in (("x_cond", x_cond), ("x_noisy", x_noisy)):
            if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (c.channels, R, R):
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"{name} must have shape (B, {c.channels}, {R}, {R}), got {got}")
        B = x_cond.shape[0]
        if x_noisy.shape[0] != B:
            raise ValueError(f"x_noisy must have shape ({B}, {c.channels}, {R}, {R}) like x_cond, "
                             f"got {tuple(x_noisy.shape)}")
        if not isinstance(logsnr, Tensor):
            logsnr = torch.as_tensor(logsnr, dtype=torch.float32, device=x_noisy.device)
        if logsnr.ndim == 0:
            logsnr = logsnr.expand(B)
        if tuple(logsnr.shape) != (B,):
            raise ValueError(f"logsnr must have shape ({B},), got {tuple(logsnr.shape)}")
        for name, cam in (("cam_cond", cam_cond), ("cam_target", cam_target)):
            if not isinstance(cam, Cameras):
                raise TypeError(f"{name} must be Cameras, got {type(cam).__name__}")
            if tuple(cam.shape) != (B,):
                raise ValueError(f"{name} must have batch shape ({B},), got {tuple(cam.shape)}")
            if (cam.width, cam.height) != (R, R):
                raise ValueError(f"{name} has image size {cam.width}x{cam.height} but the frames are {R}x{R} "
                                 f"(resize the cameras with Cameras.resize)")
        if drop_pose is not None and (drop_pose.dtype != torch.bool or tuple(drop_pose.shape) != (B,)):
            raise ValueError(f"drop_pose must be a bool tensor of shape ({B},), got "
                             f"{drop_pose.dtype} {tuple(drop_pose.shape)}")
        return logsnr

    def frame_cameras(self, cam_cond: Cameras, cam_target: Cameras) -> Cameras:
        """``Cameras (B, 2)``: (conditioning, target) per sample, in float64, in the pose mode's frame."""
        cond, target = cam_cond.to(torch.float64), cam_target.to(torch.float64)
        if self.config.pose_mode == "relative":
            rel = target.relative_to(cond)
            eye = torch.eye(4, dtype=torch.float64, device=rel.device).expand_as(rel)
            cond = Cameras(eye, cond.K, cond.width, cond.height)
            target = Cameras(rel, target.K, target.width, target.height)
        return Cameras.stack([cond, target], dim=1)

    def pose_features(self, cam_cond: Cameras, cam_target: Cameras, drop_pose: Tensor | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
        """``(2B, 144, H, W)`` ray features of both frames (zeros for dropped samples)."""
        c = self.config
        feats = ray_pose_features(self.frame_cameras(cam_cond, cam_target), octaves_origin=c.ray_octaves_origin,
                                  octaves_dir=c.ray_octaves_dir, origin_scale=c.origin_scale, dtype=dtype)
        if drop_pose is not None:
            keep = ~drop_pose.to(feats.device)
            feats = torch.where(keep[:, None, None, None, None], feats, torch.zeros_like(feats))
        return feats.flatten(0, 1)

    # ------------------------------------------------------------------ forward
    def forward(self, x_cond: Tensor, x_noisy: Tensor, logsnr: Tensor, cam_cond: Cameras, cam_target: Cameras,
                drop_pose: Tensor | None = None) -> Tensor:
        logsnr = self._check_inputs(x_cond, x_noisy, logsnr, cam_cond, cam_target, drop_pose)
        B = x_cond.shape[0]
        x = torch.stack([x_cond, x_noisy.to(x_cond.dtype)], dim=1)  # (B, 2, 3, H, W)
        if self.config.concat_cond:  # (B, 2, 6, H, W): [x_cond, x_cond] and [x_noisy, x_cond]
            x = torch.cat([x, x_cond.unsqueeze(1).expand_as(x)], dim=2)
        x = x.flatten(0, 1)  # (2B, C, H, W)
        lam = torch.stack([torch.full_like(logsnr, self.config.logsnr_max, dtype=torch.float32),
                           logsnr.float()], dim=1).flatten()  # (2B,)
        clip = max(20.0, self.config.logsnr_max)  # 3DiM clips logSNR to [-20, 20]
        emb = self.noise_embed(logsnr_to_cosine_time(lam, -clip, clip))  # (2B, E)
        feats = self.pose_features(cam_cond.to(x.device), cam_target.to(x.device), drop_pose, dtype=x.dtype)
        maps = self.pose_embed(feats)  # [(2B, E, H/2^l, W/2^l)]
        keep = 1
        out = self.backbone(x, emb, maps, keep_frame=keep if self.config.prune_cond_frame else None)
        if not self.config.prune_cond_frame:
            out = out.unflatten(0, (B, 2))[:, keep]
        return out
