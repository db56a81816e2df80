"""DINOv2 ViT-L/14: 1024-d CLS features for FD-DINOv2.

FD-DINOv2 (G. Stein, J. C. Cresswell, R. Hosseinzadeh, Y. Sui, B. L. Ross, V. Villecroze, Z. Liu,
A. L. Caterini, J. E. T. Taylor, G. Loaiza-Ganem, "Exposing flaws of generative model evaluation
metrics and their unfair treatment of diffusion models", NeurIPS 2023) is the Fréchet distance of
FID computed on the features of DINOv2 ViT-L/14 (M. Oquab et al., "DINOv2: Learning Robust Visual
Features without Supervision", TMLR 2024) instead of Inception-v3. EDM2 (Karras et al. 2024) and
VIVID (Elata et al. 2024) report it next to FID.

The network is written here in plain PyTorch (no torch.hub, no xFormers) with the module and
parameter names of the reference implementation (``facebookresearch/dinov2``,
``dinov2/models/vision_transformer.py`` built as ``torch.hub.load("facebookresearch/dinov2",
"dinov2_vitl14")`` builds it: ``block_chunks=0``, no register tokens), so the released state dict
``dinov2_vitl14_pretrain.pth`` loads by key:

* patch embedding ``patch_embed.proj``: a 14x14 convolution with stride 14, 3 -> 1024 channels;
* a learned ``cls_token`` (1, 1, 1024) and ``pos_embed`` (1, 1 + 37², 1024) for the 518 px
  (37x37 patch) training resolution; ``mask_token`` (1, 1024) (iBOT masking, unused at inference:
  kept so that the file loads strictly);
* 24 pre-norm blocks ``blocks.{i}``: ``norm1`` -> ``attn`` (``qkv`` 1024 -> 3072 with bias, 16
  heads of 64, softmax(q kᵀ / 8) v, ``proj``) -> ``ls1`` (LayerScale: a learned per-channel
  ``gamma``) + residual; ``norm2`` -> ``mlp`` (``fc1`` 1024 -> 4096, exact GELU, ``fc2``) -> ``ls2``
  + residual. LayerNorms have eps 1e-6;
* a final ``norm``; the feature is the CLS token after it (``x_norm_clstoken``, what the hub
  model's ``forward`` returns: ``head`` is the identity).

Positional embeddings for other grids (:func:`interpolate_pos_embed`) are resized as the
reference does: bicubic (``align_corners=False``, no antialiasing) on the 37x37 grid, with the
*scale factor* ``(g + 0.1) / 37`` rather than the output size ``g`` (the "+0.1" kludge of
facebookresearch/dino#8, kept for backward compatibility; PyTorch uses the scale factor to map
output to input coordinates, so the two do not give the same values). At 224 px the grid is
16x16.

Preprocessing as EDM2's ``DINOv2Detector`` (``NVlabs/edm2``, ``calculate_metrics.py``; VIVID's
``calculate_metrics.py`` has the same class), itself modelled on the FD-DINOv2 reference code
(``layer6ai-labs/dgm-eval``): the 8-bit RGB image in [0, 255] is resized to 224x224 with bicubic
interpolation, divided by 255 and normalised with the ImageNet mean (0.485, 0.456, 0.406) and
standard deviation (0.229, 0.224, 0.225). The resize is EDM2's default ``resize="torch"``
(``F.interpolate(mode="bicubic", antialias=True)`` on float values, no rounding) or
``resize="pil"`` (PIL's bicubic resize of the uint8 image, dgm-eval's exactly; slower, on the
CPU). Features are taken in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vantage.eval._nets import check_images, extract_features, full_precision, load_into
from vantage.eval.weights import load_state_dict

__all__ = ["DINOV2_FEATURE_DIM", "DINOV2_INPUT_SIZE", "FD_DINOV2_EXTRACTOR", "IMAGENET_MEAN", "IMAGENET_STD",
           "DINOv2Features", "DINOv2ViT", "interpolate_pos_embed"]

DINOV2_FEATURE_DIM = 1024
DINOV2_INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FD_DINOV2_EXTRACTOR = "dinov2_vitl14_pretrain/cls/bicubic224"  # FeatureStats.extractor of these features
POS_EMBED_OFFSET = 0.1  # the reference's interpolate_offset
RESIZE_MODES = ("torch", "pil")

# ViT-L/14 as torch.hub's dinov2_vitl14 builds it (vit_large, img_size=518, patch_size=14)
VITL14 = {"embed_dim": 1024, "depth": 24, "num_heads": 16, "patch_size": 14, "img_size": 518, "mlp_ratio": 4.0}


def interpolate_pos_embed(pos_embed: Tensor, height: int, width: int, patch_size: int,
                          offset: float = POS_EMBED_OFFSET) -> Tensor:
    """Positional embeddings ``(1, 1 + M², D)`` of an M x M grid for an image of ``height`` x ``width`` pixels.

    As the reference ``interpolate_pos_encoding``: the input unchanged when the image has M² patches
    and is square; otherwise the patch part is resized to ``(height // patch_size, width // patch_size)``
    by bicubic interpolation (``align_corners=False``, no antialiasing) in float32, called with the
    scale factors ``(g + offset) / M`` (not the output size: PyTorch maps output pixel ``j`` to input
    coordinate ``(j + 0.5) / scale - 0.5``, so the offset changes the values, not only the rounding
    of the size). The class-token embedding is kept. Returns ``(1, 1 + gh·gw, D)`` in ``pos_embed``'s dtype.
    """
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or m * m != n:
        raise ValueError(f"pos_embed must be (1, 1 + M², D) for an M x M patch grid, got {tuple(pos_embed.shape)}")
    gh, gw = height // patch_size, width // patch_size
    if gh * gw == n and height == width:
        return pos_embed
    d = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].float().reshape(1, m, m, d).permute(0, 3, 1, 2)
    kwargs: dict = ({"scale_factor": ((gh + offset) / m, (gw + offset) / m)} if offset else {"size": (gh, gw)})
    grid = F.interpolate(grid, mode="bicubic", align_corners=False, antialias=False, **kwargs)
    if tuple(grid.shape[-2:]) != (gh, gw):  # the offset guards against floor(M · g / M) rounding to g - 1
        raise RuntimeError(f"positional embedding resized to {tuple(grid.shape[-2:])}, expected {(gh, gw)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, d)
    return torch.cat([pos_embed[:, :1].float(), grid], dim=1).to(pos_embed.dtype)


class _PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> tokens ``(B, gh·gw, D)``, row-major (key ``patch_embed.proj``)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` (with bias) laid out as (3, heads, head_dim), scale head_dim^-½, ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim), default scale head_dim^-½
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    """``fc1`` -> exact (erf) GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _LayerScale(nn.Module):
    """Per-channel learned scale ``gamma`` (CaiT's LayerScale; DINOv2 trained it from 1e-5)."""

    def __init__(self, dim: int, init: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class _Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = _LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DINOv2ViT(nn.Module):
    """The DINOv2 vision transformer (no registers, MLP FFN), with the reference's parameter names.

    Defaults are ViT-L/14 as released (:data:`VITL14`); smaller settings are for tests. ``img_size``
    fixes the ``pos_embed`` grid (``img_size // patch_size`` squared). :meth:`forward` takes
    *normalised* images whose sides are multiples of ``patch_size`` and returns the CLS token after
    the final norm ``(B, embed_dim)``. Weights are random (truncated normal, as the reference's
    ``init_weights``; LayerScale 1.0): load a state dict to use it.
    """

    def __init__(self, *, embed_dim: int = 1024, depth: int = 24, num_heads: int = 16, patch_size: int = 14,
                 img_size: int = 518, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.embed_dim, self.patch_size = embed_dim, patch_size
        grid = img_size // patch_size
        self.patch_embed = _PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.blocks = nn.ModuleList([_Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # in the released state dict; not used here
        with torch.no_grad():
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """CLS features ``(B, embed_dim)`` of normalised images ``(B, 3, H, W)``; H, W multiples of the patch size."""
        b, _, h, w = x.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(b, -1, -1).to(t.dtype), t], dim=1)
        t = t + interpolate_pos_embed(self.pos_embed, h, w, self.patch_size).to(t.dtype)
        for block in self.blocks:
            t = block(t)
        return self.norm(t)[:, 0]


class DINOv2Features(DINOv2ViT):
    """Frozen DINOv2 ViT-L/14 returning FD-DINOv2's 1024-d features ``(B, 1024)`` of RGB images.

    ``pretrained=True`` loads ``dinov2_vitl14_pretrain.pth`` (``path``, else ``$VANTAGE_WEIGHTS``,
    else ``~/.cache/vantage/weights``; raises :class:`~vantage.eval.weights.WeightsUnavailable`
    when it is missing, before building the network). ``pretrained=False`` keeps random weights:
    only for tests, as are the architecture arguments (``arch``: see :class:`DINOv2ViT`).
    ``resize``: ``"torch"`` (EDM2's default) or ``"pil"`` (dgm-eval's); module docstring.
    """

    def __init__(self, *, pretrained: bool = True, path: str | Path | None = None, verify: bool = True,
                 resize: str = "torch", **arch: float) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got '{resize}'")
        unknown = set(arch) - set(VITL14)
        if unknown:
            raise TypeError(f"unknown architecture argument(s) {sorted(unknown)}; known: {', '.join(VITL14)}")
        kw = {**VITL14, **arch}
        kw = {k: (float(v) if k == "mlp_ratio" else int(v)) for k, v in kw.items()}
        sd = load_state_dict("dinov2_vitl14", path, verify=verify) if pretrained else None
        if sd is None:
            super().__init__(**kw)
        else:  # no random initialisation of 300M parameters that are overwritten at once
            with torch.device("meta"):
                super().__init__(**kw)
            self.to_empty(device="cpu")
            load_into(self, sd, "DINOv2 weights 'dinov2_vitl14_pretrain.pth'")
            del sd
        self.resize = resize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DINOv2Features:
        """A feature extractor stays in eval mode; ``train()`` is a no-op."""
        return super().train(False)

    def _resize(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` float in [0, 255] -> ``(B, 3, 224, 224)`` float in about [0, 255]."""
        s = DINOV2_INPUT_SIZE
        if self.resize == "torch":
            if tuple(x.shape[-2:]) == (s, s):  # bicubic with antialias at scale 1 is the identity
                return x
            return F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False, antialias=True)
        from PIL import Image

        u8 = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([np.asarray(Image.fromarray(a, "RGB").resize((s, s), Image.Resampling.BICUBIC)) for a in u8])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, torch.float32)

    def forward(self, x: Tensor, *, normalize: bool = False, check_range: bool = True) -> Tensor:
        """FD-DINOv2 features of a batch.

        Args:
            x: ``(B, 3, H, W)`` RGB images in [-1, 1] (vantage's range), or in [0, 1] with
                ``normalize=True``, or ``uint8`` in [0, 255] (EDM2's input). Any size: resized to
                224x224 (module docstring).
            normalize: the float input is in [0, 1].
            check_range: raise ``ValueError`` for values outside the stated range (by more than 1e-3).

        Returns:
            ``(B, 1024)`` float32 features (the CLS token after the final LayerNorm).
        """
        if x.dtype == torch.uint8:
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"DINOv2 input must be RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
            x = x.to(self.cls_token.device, torch.float32)  # [0, 255]
        else:
            if check_range:
                check_images(x, "DINOv2 input", 0.0 if normalize else -1.0, 1.0)
            elif x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"DINOv2 input must be RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
            x = x.to(self.cls_token.device, torch.float32)
            x = x * 255.0 if normalize else (x + 1.0) * 127.5
        with full_precision(x.device):
            x = self._resize(x) / 255.0
            return super().forward((x - self.mean) / self.std)

    @torch.no_grad()
    def extract(self, images: Tensor | Iterable[Tensor], *, batch_size: int = 50, normalize: bool = False) -> Tensor:
        """Features of many images ``(N, 1024)`` float32 on the CPU.

        ``images``: one ``(N, 3, H, W)`` tensor (run in chunks of ``batch_size``) or an iterable of
        such batches (e.g. a DataLoader), in the range described in :meth:`forward`.
        """
        return extract_features(self, images, self.embed_dim, batch_size=batch_size, normalize=normalize)
