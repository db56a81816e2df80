"""GeNVS's configuration (:class:`GeNVSConfig`), its denoiser UNet's configuration and the ``genvs`` presets.

The method itself is :mod:`vantage.methods.genvs` (Chan et al. 2023, "Generative Novel View Synthesis with 3D-Aware
Diffusion Models"); what each field does is in :class:`GeNVSConfig` and ``docs/genvs.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vantage.methods import register_preset
from vantage.methods.base import (
    MethodConfig,
    check_choice,
    check_probability,
    check_sampling_counts,
    check_unet_resolution,
    int_tuples,
)
from vantage.nn.frustum import SPACINGS
from vantage.nn.unet import UNetConfig

__all__ = ["GeNVSConfig", "unet_config"]


@dataclass
class GeNVSConfig(MethodConfig):
    """Configuration of :class:`GeNVS` (flat, every field settable with ``--set field=value``).

    Attributes:
        resolution: square image side (inputs and targets), pixels.
        encoder_ch, encoder_ch_mult, encoder_res_blocks, encoder_attn_resolutions: the 2D encoder UNet.
        volume_channels: feature channels ``C`` per frustum cell (paper: 16).
        volume_depth: depth planes ``D`` per frustum (paper: 64).
        volume_resolution: side ``h = w`` of the frustum's pixel grid (None: ``resolution``).
        near, far: camera-z range of the frustums and of rendering, world units. Defaults fit the synthetic
            data (cameras at radius 2.5 looking at objects inside a ball of radius 0.8 at the origin).
        scene_radius: None (default): the constant ``near``/``far`` for every camera. A radius ``r`` (world
            units): each camera's own range around a scene ball at the world origin, ``near = z0 − r`` (clamped
            to at least ``0.01 r``) and ``far = z0 + r`` with ``z0`` the camera-z depth of the origin, for the
            frustum volume of every input view and the rays of every target (near/far from the object bounds).
        depth_spacing: ``"linear"`` in depth or ``"disparity"`` (1/z) between near and far.
        mlp_hidden, mlp_layers: the field's decoder MLP.
        feature_channels: channels ``F`` of the rendered feature image (first 3: RGB; paper: 16).
        samples_stratified, samples_importance: samples per ray (paper: 64 + 64).
        render_resolution: render at this side and upsample bilinearly (None: ``resolution``).
        render_chunk: at most this many rays per field evaluation (bounds memory).
        checkpoint_render: recompute rendering chunks in the backward pass (training memory bounded too).
        background: RGB in [-1, 1] behind the field (white: 1, 1, 1); the other feature channels get 0.
        check_cameras: refuse cameras that do not see the world origin between near and far.
        ch, ch_mult, num_res_blocks, attn_resolutions, num_heads, norm_groups, dropout: the denoiser UNet.
        P_mean, P_std: training ``ln σ ~ N(P_mean, P_std²)`` (EDM: −1.2, 1.2).
        sigma_min, sigma_max: σ range for sampling (Karras σ's, ρ = 7).
        cond_dropout: probability of zeroing a sample's feature image in training (paper: 0.1).
        rgb_loss_weight: weight of the auxiliary RGB render loss.
        augment_flip: probability that a training sample is mirrored left-right as a whole (every input view
            and the target: images flipped, cameras mirrored with the world by x -> −x, :func:`mirror_cameras`);
            0 (default): no augmentation and no random draw.
        min_views, max_views: input views per training sample (uniform count).
        sample_max_views: views the ``genvs-pooled`` strategy conditions on (input, earlier, latest).
        cache_size: view sets (with their target) whose rendered conditioning a denoiser keeps.
        default_sampler, default_steps, default_guidance, preview_*: sampling defaults.
    """

    resolution: int = 64
    encoder_ch: int = 32
    encoder_ch_mult: tuple[int, ...] = (1, 2, 2)
    encoder_res_blocks: int = 1
    encoder_attn_resolutions: tuple[int, ...] = ()
    volume_channels: int = 16
    volume_depth: int = 32
    volume_resolution: int | None = None
    near: float = 1.5
    far: float = 3.5
    scene_radius: float | None = None
    depth_spacing: str = "linear"
    mlp_hidden: int = 64
    mlp_layers: int = 2
    feature_channels: int = 16
    samples_stratified: int = 32
    samples_importance: int = 32
    render_resolution: int | None = None
    render_chunk: int = 8192
    checkpoint_render: bool = False
    background: tuple[float, ...] = (1.0, 1.0, 1.0)
    check_cameras: bool = True
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 4
    norm_groups: int = 8
    dropout: float = 0.0
    P_mean: float = -1.2
    P_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    cond_dropout: float = 0.1
    rgb_loss_weight: float = 1.0
    augment_flip: float = 0.0
    min_views: int = 1
    max_views: int = 2
    sample_max_views: int = 4
    cache_size: int = 8
    default_sampler: str = "heun"
    default_steps: int = 25
    default_guidance: float = 0.0
    preview_sampler: str = "dpmpp_2m"
    preview_steps: int = 16

    def __post_init__(self) -> None:
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far (camera-z distances), got near={self.near}, far={self.far}")
        if self.scene_radius is not None and not float(self.scene_radius) > 0:
            raise ValueError(f"scene_radius must be > 0 (world units) or None, got {self.scene_radius}")
        check_choice("depth_spacing", self.depth_spacing, SPACINGS)
        for name in ("encoder_ch_mult", "ch_mult"):
            check_unet_resolution(self.resolution, getattr(self, name), name)
        for name in ("volume_resolution", "render_resolution"):
            v = getattr(self, name)
            if v is not None and not 1 <= v <= self.resolution:
                raise ValueError(f"{name} must be in [1, resolution={self.resolution}] or None, got {v}")
        if self.feature_channels < 3:
            raise ValueError(f"feature_channels must be >= 3 (the first three are RGB), got {self.feature_channels}")
        if self.samples_stratified < 1 or self.samples_importance < 0 or self.render_chunk < 1:
            raise ValueError("need samples_stratified >= 1, samples_importance >= 0 and render_chunk >= 1")
        check_probability("cond_dropout", self.cond_dropout)
        if not 0.0 <= self.augment_flip <= 1.0:
            raise ValueError(f"augment_flip is a probability in [0, 1], got {self.augment_flip}")
        if not 1 <= self.min_views <= self.max_views:
            raise ValueError(f"need 1 <= min_views <= max_views, got {self.min_views}, {self.max_views}")
        if self.sample_max_views < 1 or self.cache_size < 1:
            raise ValueError("sample_max_views and cache_size must be >= 1")
        if len(self.background) != 3 or not all(-1.0 <= float(b) <= 1.0 for b in self.background):
            raise ValueError(f"background must be 3 values in [-1, 1] (white: 1, 1, 1), got {self.background}")
        if not 0 < self.sigma_min < self.sigma_max or not self.P_std > 0:
            raise ValueError("need 0 < sigma_min < sigma_max and P_std > 0")
        check_sampling_counts(self)
        int_tuples(self, "encoder_ch_mult", "encoder_attn_resolutions", "ch_mult", "attn_resolutions")
        self.background = tuple(float(b) for b in self.background)


def unet_config(config: GeNVSConfig) -> UNetConfig:
    """The denoiser UNet: 3 noisy channels + ``feature_channels`` concatenated, σ embedded from ``ln σ / 4``."""
    c = config
    return UNetConfig(resolution=c.resolution, in_channels=3, out_channels=3, concat_channels=c.feature_channels,
                      ch=c.ch, ch_mult=c.ch_mult, num_res_blocks=c.num_res_blocks, attn_resolutions=c.attn_resolutions,
                      mid_attention=True, num_heads=c.num_heads, norm_groups=c.norm_groups, dropout=c.dropout,
                      emb_mode="film", block_emb_act=True, resample="conv", zero_init=True)


# ---------------------------------------------------------------------------------------- presets
_SHAPES = {"near": 1.5, "far": 3.5, "depth_spacing": "linear", "background": (1.0, 1.0, 1.0),
           "input_elevation_deg": 30.0, "input_radius": 2.5, "input_fov_deg": 40.0, "norm_groups": 8}
register_preset("genvs-shapes32", "genvs", {
    **_SHAPES, "resolution": 32, "encoder_ch": 24, "encoder_ch_mult": (1, 2, 2), "encoder_res_blocks": 1,
    "volume_channels": 16, "volume_depth": 32, "volume_resolution": 16, "mlp_hidden": 64, "feature_channels": 16,
    "samples_stratified": 24, "samples_importance": 24, "render_resolution": 16, "ch": 32, "ch_mult": (1, 2, 2, 2),
    "num_res_blocks": 1, "attn_resolutions": (8,), "num_heads": 4, "max_views": 2, "default_sampler": "dpmpp_2m",
    "default_steps": 32, "preview_steps": 16,
}, "tiny GeNVS on 32x32 synthetic objects (about 2.4M parameters; 16x32 frustums on a 16x16 grid, "
   "rendered at 16x16 with 24+24 samples): CPU-sized")
register_preset("genvs-shapes64", "genvs", {
    **_SHAPES, "resolution": 64, "encoder_ch": 32, "encoder_ch_mult": (1, 2, 2), "encoder_res_blocks": 1,
    "volume_channels": 16, "volume_depth": 48, "volume_resolution": 32, "mlp_hidden": 64, "feature_channels": 16,
    "samples_stratified": 32, "samples_importance": 32, "render_resolution": 32, "ch": 32, "ch_mult": (1, 2, 2, 4),
    "num_res_blocks": 2, "attn_resolutions": (8, 16), "num_heads": 4, "max_views": 3, "default_sampler": "heun",
    "default_steps": 25,
}, "small GeNVS on 64x64 synthetic objects (16x48 frustums on a 32x32 grid, rendered at 32x32, 32+32 samples)")
register_preset("genvs-srn128", "genvs", {
    "resolution": 128, "near": 0.8, "far": 1.8, "depth_spacing": "linear", "background": (1.0, 1.0, 1.0),
    "encoder_ch": 64, "encoder_ch_mult": (1, 2, 4, 4), "encoder_res_blocks": 2, "encoder_attn_resolutions": (16,),
    "volume_channels": 16, "volume_depth": 64, "volume_resolution": 64, "mlp_hidden": 64, "mlp_layers": 2,
    "feature_channels": 16, "samples_stratified": 64, "samples_importance": 64, "render_resolution": 64,
    "render_chunk": 16384, "ch": 128, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 2, "attn_resolutions": (16,),
    "num_heads": 4, "norm_groups": 32, "dropout": 0.1, "max_views": 3, "sample_max_views": 4,
    "default_sampler": "heun", "default_steps": 25, "input_elevation_deg": 30.0, "input_radius": 1.3,
    "input_fov_deg": 51.98,
}, "paper-like SRN cars/chairs configuration: 128x128, 16x64 frustums on a 64x64 grid (near 0.8, far 1.8), "
   "64+64 samples rendered at 64x64, EDM (sigma_data 0.5), 1-3 input views; our UNet encoder instead of "
   "the paper's DeepLabV3+ (docs/genvs.md)")
