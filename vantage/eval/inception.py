"""The FID Inception-v3: 2048-d pool3 features for FID and KID.

The network is Inception-v3 (C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens, Z. Wojna, "Rethinking
the Inception Architecture for Computer Vision", CVPR 2016) as frozen in TensorFlow's
``inception-2015-12-05`` graph, the one Heusel et al. 2017 used for FID, in the PyTorch port of
pytorch-fid (weights file ``pt_inception-2015-12-05-6726825d.pth``). It differs from torchvision's
Inception-v3 in its weights (1008 output classes) and in three pooling details, reproduced here:

* the 3x3 average pools inside the A, C and first E blocks (``Mixed_5b-d``, ``Mixed_6b-e``,
  ``Mixed_7b``) exclude the zero padding from the average (``count_include_pad=False``, as
  TensorFlow's pooling does);
* the pool branch of the last block (``Mixed_7c``) uses a 3x3 **max** pool instead of an average
  pool.

Module and parameter names follow torchvision's ``Inception3`` (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight`` ``(1008, 2048)``), so the pytorch-fid
state dict loads by key. Preprocessing as in pytorch-fid: bilinear resize to 299x299
(``align_corners=False``, no antialiasing), network input in [-1, 1]. The features are the
global average of ``Mixed_7c`` (the "pool3" layer), taken in fp32.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vantage.eval._nets import check_images, extract_features, full_precision, load_into
from vantage.eval.weights import load_state_dict

__all__ = ["FIDInceptionV3", "FID_FEATURE_DIM", "FID_INPUT_SIZE"]

FID_FEATURE_DIM = 2048
FID_INPUT_SIZE = 299


class _Conv(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU: torchvision's ``BasicConv2d`` key layout (``conv``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:  # TensorFlow-style 3x3 average pool: padding not counted
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + ``pool_features`` channels."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1 = _Conv(cin, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], dim=1)


class _BlockB(nn.Module):
    """35->17 grid reduction (``Mixed_6a``): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 480 + ``cin`` channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class _BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (``c7`` inner channels) -> 768 channels."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], dim=1)


class _BlockD(nn.Module):
    """17->8 grid reduction (``Mixed_7a``): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 512 + ``cin`` channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class _BlockE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs -> 2048 channels; ``max_pool`` selects the FID ``Mixed_7c`` variant."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(s), self.branch3x3_2b(s),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], dim=1)


class FIDInceptionV3(nn.Module):
    """Frozen FID Inception-v3 returning the 2048-d pool3 features ``(B, 2048)``.

    ``pretrained=True`` loads ``pt_inception-2015-12-05-6726825d.pth`` (``path``, else
    ``$VANTAGE_WEIGHTS``, else ``~/.cache/vantage/weights``; raises
    :class:`~vantage.eval.weights.WeightsUnavailable` when it is missing). ``pretrained=False``
    keeps random weights: only for tests.
    """

    def __init__(self, *, pretrained: bool = True, path: str | Path | None = None, verify: bool = True) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, c7=128)
        self.Mixed_6c = _BlockC(768, c7=160)
        self.Mixed_6d = _BlockC(768, c7=160)
        self.Mixed_6e = _BlockC(768, c7=192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # the 1008-way TF classifier: kept so the file loads by key, unused
        if pretrained:
            load_into(self, load_state_dict("fid_inception", path, verify=verify),
                      "FID Inception weights 'pt_inception-2015-12-05-6726825d.pth'")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """A feature extractor stays in eval mode (BatchNorm running statistics); ``train()`` is a no-op."""
        return super().train(False)

    def forward(self, x: Tensor, *, normalize: bool = False, check_range: bool = True) -> Tensor:
        """pool3 features of a batch.

        Args:
            x: ``(B, 3, H, W)`` RGB images in [-1, 1] (vantage's range), or in [0, 1] with
                ``normalize=True`` (pytorch-fid's convention), or ``uint8`` in [0, 255]. Any size:
                bilinearly resized to 299x299 (as pytorch-fid; not TensorFlow's resize).
            normalize: the float input is in [0, 1] (mapped to [-1, 1]).
            check_range: raise ``ValueError`` for values outside the stated range (by more than 1e-3).

        Returns:
            ``(B, 2048)`` float32 features (non-negative: averages of ReLU outputs).
        """
        if x.dtype == torch.uint8:
            x, normalize = x.float() / 255.0, True
        if check_range:
            check_images(x, "Inception input", 0.0 if normalize else -1.0, 1.0)
        elif x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Inception input must be RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
        x = x.to(self.fc.weight.device, torch.float32)
        with full_precision(x.device):
            if x.shape[-2:] != (FID_INPUT_SIZE, FID_INPUT_SIZE):  # resizing to the same size is the identity
                x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
            if normalize:
                x = 2 * x - 1  # bilinear weights sum to 1: resize-then-scale equals scale-then-resize
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                          self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
                x = block(x)
            return x.mean(dim=(2, 3))

    @torch.no_grad()
    def extract(self, images: Tensor | Iterable[Tensor], *, batch_size: int = 50, normalize: bool = False) -> Tensor:
        """Features of many images ``(N, 2048)`` float32 on the CPU.

        ``images``: one ``(N, 3, H, W)`` tensor (run in chunks of ``batch_size``) or an iterable of
        such batches (e.g. a DataLoader), in the range described in :meth:`forward`.
        """
        return extract_features(self, images, FID_FEATURE_DIM, batch_size=batch_size, normalize=normalize)
