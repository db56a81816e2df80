"""``regression``: a deterministic baseline that maps one view and a relative pose straight to the target view.

The yardstick of the benchmark harness (``bench/harness.py``): what a network of the same size and
training budget as the diffusion methods reaches with no noise at all. It is trained to predict the
target directly (MSE, or L1 with ``loss_type="l1"``), so it converges to the conditional *mean* of
the target: blurry where the unseen side is uncertain, but a hard baseline on PSNR.

* **Conditioning**: relpose's (:mod:`vantage.methods.relpose`), imported, not copied: the Zero-1-to-3
  relative pose ``[Δpolar, sin Δazimuth, cos Δazimuth, Δradius]`` (:func:`~vantage.methods.relpose.relative_pose`),
  its global image embedding (:class:`~vantage.methods.relpose.ImageEncoder`) and pose MLP. Their
  concatenation goes through an MLP into the embedding that FiLMs every ResBlock.
* **Network** (:class:`RegressionNet`): the ADM-style :class:`~vantage.nn.unet.UNetBackbone` with
  relpose's block settings (resampling ResBlocks, ``(h + skip)/√2``, zero-initialised outputs) on the
  conditioning image alone (3 input channels: there is no noisy target), predicting the target image.
  There is no noise level, so no noise embedding.
* **Training**: through the common trainer (``pair_sampler``, ``loss(batch, generator)``, ``preview``).
  The loss draws no randomness (``generator`` is unused).

**Sampling trick.** To plug into ``vantage sample``, ``vantage evaluate`` and the orbit strategies
unchanged, :meth:`Regression.single_view_denoiser` is a "denoiser" ``D(x, σ, cond) -> x̂0`` that
*ignores* ``x`` and ``σ`` and returns the network's prediction as x̂0. Every sampler's last step goes to
σ = 0, where it returns x̂0 (Euler: ``x + (0 − σ)(x − x̂0)/σ = x̂0``; ancestral samplers add no noise at
σ' = 0), so any sampler returns the prediction. Since ``D`` is constant in ``x`` and σ, the sampling ODE
``dx/dσ = (x − x̂0)/σ`` has constant slope along its exact solution, which every sampler integrates
exactly: multi-step samplers return it too, up to float rounding (with one conditioning view; a
stochastic strategy that changes the view per call ends on the last call's view). The presets sample
with one Euler step (``default_steps=1``): one network forward per view. The number of function
evaluations of a sampler is meaningless for this method: the harness reports one forward per view.
There is no unconditional branch, so ``supports_guidance = False``.

**Default strategy** ``single`` (``default_strategy``, used by ``vantage sample`` and ``vantage evaluate``
when none is given): every view is predicted from the first input view. Stochastic conditioning (the
default of the diffusion models) would condition later views on the model's own earlier predictions,
which for a mean predictor only compounds the blur; a regression baseline is strongest on the real input.

Presets: ``regression-shapes32`` (the UNet size and layout of ``relpose-shapes32``, about 2.3M
parameters) and ``regression-shapes64``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vantage.cameras import Cameras
from vantage.data.pairs import PairBatch
from vantage.methods import register_preset
from vantage.methods.base import Method, SingleViewPairs, ViewCond, check_choice
from vantage.methods.relpose import POSE_DIM, ImageEncoder, PoseUNetConfig, check_pose_unet, relative_pose
from vantage.nn.embeddings import MLPEmbedder
from vantage.nn.unet import UNetBackbone

__all__ = ["RegressionConfig", "Regression", "RegressionNet", "RegressionDenoiser", "LOSS_TYPES"]

LOSS_TYPES = ("mse", "l1")


@dataclass
class RegressionConfig(PoseUNetConfig):
    """Configuration of :class:`Regression` (flat, so every field can be set with ``--set field=value``).

    Attributes:
        resolution: square image side in pixels (inputs and targets).
        ch, ch_mult, num_res_blocks, attn_resolutions, num_heads, dropout, norm_groups: the UNet
            (:class:`~vantage.nn.unet.UNetBackbone`): base channels, multiplier per level, ResBlocks per
            level, feature-map sides with self-attention, heads, ResBlock dropout, GroupNorm groups.
        emb_ch: width of the conditioning embedding fed to every ResBlock (None: ``4·ch``).
        encoder_ch: base channels of relpose's image encoder; a multiple of ``norm_groups``.
        image_emb_dim: size of the global image embedding.
        pose_emb_dim: size of the pose embedding (an MLP of the 4-vector).
        loss_type: ``"mse"`` (per-pixel squared error; predicts the conditional mean) or ``"l1"``
            (absolute error; the conditional median, a little sharper).
        clip_output: clamp the prediction to [−1, 1] when sampling (never in training).
        default_sampler, default_steps: one Euler step = one forward per view (any sampler and step count
            return the same prediction; module docstring).
        default_guidance: must stay 0: the method has no unconditional branch.
        preview_sampler, preview_steps, preview_count, input_elevation_deg, input_radius, input_fov_deg:
            see :class:`~vantage.methods.base.MethodConfig` (the preview is the plain prediction).
    """

    loss_type: str = "mse"
    clip_output: bool = True
    default_sampler: str = "euler"
    default_steps: int = 1
    default_guidance: float = 0.0
    preview_steps: int = 1

    def __post_init__(self) -> None:
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        if self.default_guidance != 0:
            raise ValueError(f"default_guidance must be 0: regression has no unconditional branch, got "
                             f"{self.default_guidance}")
        check_pose_unet(self)


class RegressionNet(nn.Module):
    """``forward(x_cond, cam_cond, cam_target) -> (B, 3, H, W)``: the predicted target view.

    Args of ``forward``:
        x_cond: ``(B, 3, H, W)`` conditioning view in [-1, 1].
        cam_cond, cam_target: :class:`Cameras` ``(B,)``; only their relative pose (relpose's
            :func:`~vantage.methods.relpose.relative_pose`) is used.
    """

    def __init__(self, config: RegressionConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        emb = c.emb_ch or 4 * c.ch
        self.image_encoder = ImageEncoder(c.encoder_ch, c.image_emb_dim, c.resolution, c.norm_groups)
        self.pose_embed = MLPEmbedder(POSE_DIM, c.pose_emb_dim, c.pose_emb_dim)
        self.cond_embed = MLPEmbedder(c.image_emb_dim + c.pose_emb_dim, emb, emb)
        self.backbone = UNetBackbone(
            in_channels=3, out_channels=3, resolution=c.resolution, ch=c.ch, ch_mult=c.ch_mult,
            num_res_blocks=c.num_res_blocks, attn_resolutions=c.attn_resolutions, mid_attention=True,
            num_heads=c.num_heads, dropout=c.dropout, groups=c.norm_groups, emb_dim=emb, emb_mode="film",
            block_emb_act=True, resample="resblock", skip_rescale=True, zero_init=True)

    def forward(self, x_cond: Tensor, cam_cond: Cameras, cam_target: Cameras) -> Tensor:
        R = self.config.resolution
        if x_cond.ndim != 4 or tuple(x_cond.shape[1:]) != (3, R, R):
            raise ValueError(f"x_cond must be (B, 3, {R}, {R}), got {tuple(x_cond.shape)}")
        B = x_cond.shape[0]
        for name, cams in (("cam_cond", cam_cond), ("cam_target", cam_target)):
            if tuple(cams.shape) != (B,):
                raise ValueError(f"{name} must have shape ({B},), got {tuple(cams.shape)}")
        pose = relative_pose(cam_cond.to(x_cond.device), cam_target.to(x_cond.device))  # (B, 4)
        img_emb = self.image_encoder(x_cond)
        pose_emb = self.pose_embed(pose.to(img_emb.dtype))
        emb = self.cond_embed(torch.cat([img_emb, pose_emb], dim=1))
        return self.backbone(x_cond, emb)


class RegressionDenoiser(nn.Module):
    """``D(x, σ, cond: ViewCond) -> x̂0`` that ignores ``x`` and ``σ``: the network's prediction from
    ``cond`` (clamped to [−1, 1] with ``clip``), in ``x``'s dtype. See the module docstring."""

    sigma_min = 0.002
    sigma_max = 1.0

    def __init__(self, net: RegressionNet, clip: bool = True) -> None:
        super().__init__()
        self.net, self.clip = net, clip

    def forward(self, x: Tensor, sigma: Tensor, cond: ViewCond) -> Tensor:
        if cond.drop is not None and bool(cond.drop.any()):
            raise ValueError("regression has no unconditional branch: it cannot drop its conditioning "
                             "(no classifier-free guidance)")
        if tuple(cond.images.shape) != tuple(x.shape):
            raise ValueError(f"cond.images {tuple(cond.images.shape)} and x {tuple(x.shape)} must have the same "
                             f"shape (B, 3, H, W)")
        pred = self.net(cond.images.to(x.device), cond.source, cond.target)
        if self.clip:
            pred = pred.clamp(-1, 1)
        return pred.to(x.dtype)


class Regression(SingleViewPairs, Method):
    """Deterministic regression baseline (see the module docstring). ``net`` is the :class:`RegressionNet`;
    training pairs (one random conditioning view) are :class:`~vantage.methods.base.SingleViewPairs`'."""

    name = "regression"
    config_class = RegressionConfig
    supports_guidance = False  # no unconditional branch
    deterministic = True  # samplers and steps do not change the output (the harness reports 1 forward per view)
    default_strategy = "single"  # predict every view from the first input (module docstring)

    def __init__(self, config: RegressionConfig) -> None:
        super().__init__(config)
        self.net = RegressionNet(config)

    # ------------------------------------------------------------------------------ training
    def loss(self, batch: PairBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-pixel MSE (or L1, ``loss_type``) of the predicted target, averaged per sample then over the batch.

        Draws no randomness (``generator`` is accepted for the trainer's contract and unused).

        Returns:
            ``{"loss": scalar}``, plus ``"mse"`` when the loss is L1.
        """
        x_cond, cam_cond, x0, cam_tgt = self._unpack(batch)
        pred = self.net(x_cond, cam_cond, cam_tgt).float()
        diff = pred - x0.float()
        mse = diff.square().flatten(1).mean(1).mean()
        if self.config.loss_type == "mse":
            return {"loss": mse}
        return {"loss": diff.abs().flatten(1).mean(1).mean(), "mse": mse.detach()}

    # ------------------------------------------------------------------------------ sampling
    def single_view_denoiser(self, guidance: float | None = None) -> RegressionDenoiser:
        """``D(x, σ, cond: ViewCond) -> x̂0``: the prediction from ``cond``, ignoring ``x`` and ``σ``.

        ``guidance`` must be None or 0 (there is no unconditional branch).
        """
        if guidance:
            raise ValueError(f"regression has no classifier-free guidance (no unconditional branch); got guidance "
                             f"{guidance:g}: use 0")
        return RegressionDenoiser(self.net, clip=bool(self.config.clip_output))

    def sampling_sigmas(self, steps: int, sampler: str | None = None) -> Tensor:
        """``(steps + 1,)`` float32 σ's from 1 down to 0 (linear) for every ``sampler``; the output does not
        depend on them."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return torch.linspace(RegressionDenoiser.sigma_max, 0.0, steps + 1, dtype=torch.float32)

    @torch.no_grad()
    def predict(self, x_cond: Tensor, cam_cond: Cameras, cam_target: Cameras) -> Tensor:
        """``(B, 3, H, W)`` predicted targets (clamped to [−1, 1] with ``clip_output``), in eval mode."""
        with self.evaluating():
            out = self.net(x_cond, cam_cond, cam_target).float()
        return out.clamp(-1, 1) if self.config.clip_output else out

    @torch.no_grad()
    def preview(self, batch: PairBatch, generator: torch.Generator | None = None) -> Tensor:
        """``(n, 3, H, W)`` predicted targets of the first ``n = min(preview_count, B)`` pairs (clamped)."""
        x_cond, cam_cond, x0, cam_tgt = self._unpack(batch)
        n = min(self.config.preview_count, x0.shape[0])
        return self.predict(x_cond[:n], cam_cond[:n], cam_tgt[:n]).clamp(-1, 1)


# ---------------------------------------------------------------------------------------- presets
_SHAPES = {"default_sampler": "euler", "default_steps": 1, "dropout": 0.0, "loss_type": "mse",
           "input_elevation_deg": 30.0, "input_radius": 2.5, "input_fov_deg": 40.0}
register_preset("regression-shapes32", "regression", {
    **_SHAPES, "resolution": 32, "ch": 32, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 1, "attn_resolutions": (4, 8),
    "num_heads": 4, "emb_ch": 128, "encoder_ch": 32, "image_emb_dim": 128, "pose_emb_dim": 64,
}, "deterministic regression baseline on 32x32 synthetic objects (the UNet size of relpose-shapes32, ~2.3M "
   "parameters; relpose's image + relative-pose embedding, MSE; one forward per view)")
register_preset("regression-shapes64", "regression", {
    **_SHAPES, "resolution": 64, "ch": 32, "ch_mult": (1, 2, 2, 4), "num_res_blocks": 2,
    "attn_resolutions": (8, 16), "num_heads": 4, "emb_ch": 128, "encoder_ch": 32, "image_emb_dim": 256,
    "pose_emb_dim": 64,
}, "deterministic regression baseline on 64x64 synthetic objects (the UNet size of relpose-shapes64)")
