"""Released ViewFusion weights -> our :class:`~vantage.nn.unet.UNet` (key map, config inference, checks).

The public ViewFusion code (bronemos/view-fusion, ``model/unet.py``, an SR3-style UNet) names its
parameters ``downs.K.*`` (``K = 0`` the input conv, then ResBlocks with optional attention and
downsampling convs), ``mid.{0,1}.*``, ``ups.K.*``, ``final_conv.block.{0,3}.*`` and
``noise_level_mlp.{0,2}.*``. Its checkpoint file (``best_model_all.pt``) is a dict
``{"model": ViewFusion.state_dict(), "optimizer": ..., "it": ...}`` whose model keys carry the
prefix ``denoise_fn.`` and also hold the wrapper's noise-schedule buffers (``gammas``, ...).

* :func:`reference_unet_key`: one reference key -> ours (no ``net.`` prefix); :func:`vantage_unet_key`
  the inverse (error messages name both).
* :func:`unwrap_reference_state`: the UNet's tensors out of such a file (prefixes stripped,
  schedule buffers set aside).
* :func:`infer_unet_fields`: the structural config fields the tensors determine (base channels,
  multipliers, res blocks, attention levels, embedding sizes, input channels). Resolution,
  GroupNorm groups and attention heads are *not* recoverable from the shapes and come from the
  preset.
* :func:`map_reference_state`: mapped state dict for a UNet, with an error that names every missing,
  unexpected and wrongly shaped key.

The mapping is checked against the reference UNet's outputs in ``tests/test_viewfusion.py`` and
``tests/test_unet.py`` (fixture ``viewfusion_unet``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from vantage.state_dicts import state_dict_mismatch, unwrap_state_dict

__all__ = ["SCHEDULE_BUFFERS", "reference_unet_key", "vantage_unet_key", "unwrap_reference_state", "infer_unet_fields",
           "map_reference_state", "ReferenceKeyError"]

#: Buffers of the reference wrapper (noise schedule), not weights: ignored by the conversion.
SCHEDULE_BUFFERS = ("gammas", "sqrt_recip_gammas", "sqrt_recipm1_gammas", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "betas", "alphas_cumprod")
_PREFIXES = ("module.", "model.", "denoise_fn.", "state.")
_RENAMES = [("res_block.block1.block.0", "res.norm1"), ("res_block.block1.block.3", "res.conv1"),
            ("res_block.block2.block.0", "res.norm2"), ("res_block.block2.block.3", "res.conv2"),
            ("res_block.noise_func.noise_func.0", "res.emb_proj"), ("res_block.res_conv", "res.skip"),
            ("attn.norm", "attn.0.norm"), ("attn.qkv", "attn.0.qkv"), ("attn.out", "attn.0.out"),
            ("final_conv.block.0", "backbone.norm_out"), ("final_conv.block.3", "backbone.conv_out"),
            ("noise_level_mlp.", "embed.mlp.")]


class ReferenceKeyError(ValueError):
    """Reference weights that do not fit the UNet (names the keys)."""


def reference_unet_key(key: str) -> str:
    """Reference UNet state-dict key -> the key of :class:`vantage.nn.unet.UNet`.

    ``downs.0`` is our ``backbone.conv_in``; ``downs.K`` (K >= 1) is ``backbone.down_blocks.{K-1}``;
    ``mid.K``/``ups.K`` are ``backbone.mid_blocks.K``/``backbone.up_blocks.K``; inside a block
    ``res_block.block1.block.{0,3}`` is ``res.norm1``/``res.conv1`` (likewise block2), the noise
    projection ``res.emb_proj``, the 1x1 shortcut ``res.skip`` and ``attn.*`` the first attention
    layer ``attn.0.*``. Keys that match no pattern are returned unchanged.
    """
    k = key
    for a, b in _RENAMES:
        k = k.replace(a, b)
    if k.startswith("downs.0."):
        return "backbone.conv_in." + k[len("downs.0."):]
    if m := re.match(r"downs\.(\d+)\.(.*)", k):
        return f"backbone.down_blocks.{int(m[1]) - 1}.{m[2]}"
    if m := re.match(r"(mid|ups)\.(\d+)\.(.*)", k):
        return f"backbone.{m[1].replace('ups', 'up')}_blocks.{m[2]}.{m[3]}"
    return k


def vantage_unet_key(key: str) -> str:
    """Inverse of :func:`reference_unet_key`: our UNet key -> the reference's name (for messages)."""
    k = key
    if k.startswith("backbone.conv_in."):
        k = "downs.0." + k[len("backbone.conv_in."):]
    elif m := re.match(r"backbone\.down_blocks\.(\d+)\.(.*)", k):
        k = f"downs.{int(m[1]) + 1}.{m[2]}"
    elif m := re.match(r"backbone\.(mid|up)_blocks\.(\d+)\.(.*)", k):
        k = f"{m[1].replace('up', 'ups')}.{m[2]}.{m[3]}"
    for a, b in _RENAMES:
        k = k.replace(b, a)
    return k


def unwrap_reference_state(obj: object, where: str = "state dict") -> tuple[dict[str, Tensor], list[str]]:
    """``(unet_state, ignored_keys)`` from a loaded reference file.

    Accepts a plain UNet state dict, the wrapper's state dict (``denoise_fn.`` keys), or a training
    checkpoint ``{"model": ..., ...}`` / ``{"state_dict": ...}``; ``module.`` (DDP) and ``state.``
    (our fixtures) prefixes are stripped. Schedule buffers are returned in ``ignored_keys``.
    """
    state, ignored = unwrap_state_dict(obj, wrappers=("model", "state_dict", "model_state_dict"), prefixes=_PREFIXES,
                                       where=where, error=ReferenceKeyError, skip=SCHEDULE_BUFFERS)
    if not state:
        raise ReferenceKeyError(f"{where}: holds no tensors besides {ignored[:8]}")
    return state, ignored


def _need(state: Mapping[str, Tensor], key: str, where: str) -> Tensor:
    if key not in state:
        raise ReferenceKeyError(f"{where}: key '{key}' is missing; is this a ViewFusion UNet state dict? "
                                f"(first keys: {sorted(state)[:6]})")
    return state[key]


def infer_unet_fields(state: Mapping[str, Tensor], resolution: int, where: str = "state dict") -> dict:
    """Structural :class:`~vantage.methods.viewfusion.ViewFusionConfig` fields determined by the
    reference tensors: ``ch``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions`` (sides of the
    levels with attention at ``resolution``), ``mid_attention``, ``emb_freq_dim``, ``emb_hidden_dim``,
    ``emb_dim`` and ``angle_mode`` (6 input channels: absolute, 9: relative)."""
    conv_in = _need(state, "downs.0.weight", where)
    ch, cin = int(conv_in.shape[0]), int(conv_in.shape[1])
    if cin not in (6, 9):
        raise ReferenceKeyError(f"{where}: downs.0.weight has {cin} input channels; ViewFusion has 6 "
                                f"(view + noisy target) or 9 (relative: reference + view + noisy target)")
    blocks = sorted({int(m[1]) for k in state if (m := re.match(r"downs\.(\d+)\.", k))})
    mults, attn_levels, per_level, level, counts = [], set(), 0, 0, []
    for i in blocks[1:]:
        if f"downs.{i}.conv.weight" in state:  # a downsampling conv ends the level
            counts.append(per_level)
            per_level, level = 0, level + 1
            continue
        out_ch = int(_need(state, f"downs.{i}.res_block.block1.block.3.weight", where).shape[0])
        if per_level == 0:
            if out_ch % ch:
                raise ReferenceKeyError(f"{where}: level {level} has {out_ch} channels, not a multiple of {ch}")
            mults.append(out_ch // ch)
        if f"downs.{i}.attn.qkv.weight" in state:
            attn_levels.add(level)
        per_level += 1
    counts.append(per_level)
    if len(set(counts)) != 1 or counts[0] < 1 or len(mults) != len(counts):
        raise ReferenceKeyError(f"{where}: irregular down path (res blocks per level {counts})")
    mlp0 = _need(state, "noise_level_mlp.0.weight", where)
    mlp2 = _need(state, "noise_level_mlp.2.weight", where)
    if mlp0.shape[1] % 2:
        raise ReferenceKeyError(f"{where}: noise_level_mlp.0 takes {mlp0.shape[1]} inputs; expected an even "
                                f"number (γ and angle encodings)")
    return {"ch": ch, "ch_mult": tuple(mults), "num_res_blocks": counts[0],
            "attn_resolutions": tuple(sorted(resolution // 2 ** lv for lv in attn_levels)),
            "mid_attention": "mid.0.attn.qkv.weight" in state, "emb_freq_dim": int(mlp0.shape[1]) // 2,
            "emb_hidden_dim": int(mlp0.shape[0]), "emb_dim": int(mlp2.shape[0]),
            "angle_mode": "absolute" if cin == 6 else "relative"}


def map_reference_state(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], prefix: str = "",
                        where: str = "state dict") -> dict[str, Tensor]:
    """Rename reference UNet keys (``prefix`` + :func:`reference_unet_key`) and check them against
    ``expected`` (a module's ``state_dict()``): raise :class:`ReferenceKeyError` listing, by name,
    the expected keys nothing maps to, the reference keys that map to nothing (with their original
    names) and shape mismatches."""
    mapped: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for k, v in state.items():
        new = prefix + reference_unet_key(k)
        mapped[new], origin[new] = v, k
    problems = state_dict_mismatch(
        expected, mapped, name=lambda k: f"{origin[k]} (-> {k})",
        expected_name=lambda k: f"{k} (reference name {vantage_unet_key(k[len(prefix):])})", limit=12)
    if problems:
        raise ReferenceKeyError(f"{where}: the weights do not fit the ViewFusion UNet ({problems})")
    return {k: mapped[k] for k in expected}
