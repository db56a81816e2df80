"""Network building blocks: embeddings, ResBlocks / attention, the ADM/SR3 UNet family and the
3DiM X-UNet. See ``docs/networks.md``."""

from vantage.nn.blocks import (
    Attention,
    Downsample,
    ResBlock,
    SpatialEmbedder,
    Upsample,
    attention_naive,
    group_norm,
    set_attention_impl,
    zero_module,
)
from vantage.nn.embeddings import (
    MLPEmbedder,
    ScalarEmbedder,
    fourier_channels,
    fourier_features,
    logsnr_to_cosine_time,
    ray_feature_channels,
    ray_pose_features,
    sinusoidal_embedding,
)
from vantage.nn.unet import UNet, UNetBackbone, UNetConfig, count_parameters, viewfusion_unet_config
from vantage.nn.xunet import XUNet, XUNetConfig, xunet_paper_config, xunet_param_count, xunet_small_config

__all__ = [
    "Attention", "Downsample", "ResBlock", "SpatialEmbedder", "Upsample", "attention_naive", "group_norm",
    "set_attention_impl", "zero_module",
    "MLPEmbedder", "ScalarEmbedder", "fourier_channels", "fourier_features", "logsnr_to_cosine_time",
    "ray_feature_channels", "ray_pose_features", "sinusoidal_embedding",
    "UNet", "UNetBackbone", "UNetConfig", "count_parameters", "viewfusion_unet_config",
    "XUNet", "XUNetConfig", "xunet_paper_config", "xunet_param_count", "xunet_small_config",
]
