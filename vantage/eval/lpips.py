"""LPIPS, the learned perceptual image patch similarity of Zhang et al. 2018.

R. Zhang, P. Isola, A. A. Efros, E. Shechtman, O. Wang, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", CVPR 2018 (arXiv:1801.03924), version v0.1 of the released
linear layers. For images ``x, y``:

1. both are shifted and scaled per channel to the statistics the ImageNet backbone expects
   (the "scaling layer": ``(x - shift) / scale`` with shift = (-0.030, -0.088, -0.188),
   scale = (0.458, 0.448, 0.450), i.e. [-1, 1] images mapped close to torchvision's ImageNet
   normalisation);
2. five feature maps are taken from a frozen backbone (VGG16: relu1_2, relu2_2, relu3_3,
   relu4_3, relu5_3; AlexNet: relu1 ... relu5);
3. each feature vector is divided by its L2 norm over channels (+1e-10);
4. the squared difference is weighted per channel by the non-negative learned 1x1 "lin" layer,
   averaged over space, and the five layer terms are summed.

Inputs are **RGB in [-1, 1]** ``(B, 3, H, W)``, vantage's image range; pass ``normalize=True`` for
[0, 1] images. The output is one distance per image ``(B,)`` (0 for identical images, larger is
more different; typical values are 0-0.7).

The backbones reproduce torchvision's ``features`` layer indices so that the published ImageNet
weights (``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``) load by key; the lin layers come
from the LPIPS release files (``vgg.pth``, ``alex.pth``). See :mod:`vantage.eval.weights` for
where those files go; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vantage.eval._nets import check_images, full_precision, load_into
from vantage.eval.weights import load_state_dict

__all__ = ["LPIPS", "LPIPS_SCALE", "LPIPS_SHIFT", "AlexNetFeatures", "VGG16Features"]

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class _Backbone(nn.Module):
    """A torchvision-style ``features`` stack; ``forward`` returns the activations at ``taps``."""

    taps: tuple[int, ...]
    channels: tuple[int, ...]

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, 3, H, W)`` ImageNet-normalised images -> one ``(B, C_l, H_l, W_l)`` map per tap."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
                if len(out) == len(self.taps):
                    break
        return out

    def load_torchvision(self, state_dict: dict[str, Tensor], source: str) -> None:
        """Load a torchvision classification state dict (``features.*`` used, ``classifier.*`` ignored)."""
        feats = {k[len("features."):]: v for k, v in state_dict.items() if k.startswith("features.")}
        other = [k for k in state_dict if not k.startswith(("features.", "classifier."))]
        if other:
            raise ValueError(f"{source}: unexpected keys {other[:6]} for a torchvision {type(self).__name__} "
                             "checkpoint (expected only features.* and classifier.*)")
        load_into(self.features, feats, f"{source} (features.*)")


class VGG16Features(_Backbone):
    """torchvision's ``vgg16().features`` (13 conv 3x3 + ReLU, 5 max-pools); taps after relu{1_2,...,5_3}.

    Simonyan & Zisserman 2015. Layer ``i`` of ``features`` has torchvision's index ``i``, so
    ``features.0.weight`` ``(64, 3, 3, 3)`` ... ``features.28.weight`` ``(512, 512, 3, 3)`` load by key.
    """

    taps = (3, 8, 15, 22, 29)
    channels = (64, 128, 256, 512, 512)

    def __init__(self) -> None:
        cfg: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
        layers: list[nn.Module] = []
        c = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU()]
                c = int(v)
        super().__init__(layers)


class AlexNetFeatures(_Backbone):
    """torchvision's ``alexnet().features`` (the "one weird trick" variant); taps after relu1 ... relu5.

    Krizhevsky 2014. Conv layers at torchvision's indices 0, 3, 6, 8, 10 (64, 192, 384, 256, 256 channels).
    """

    taps = (1, 4, 7, 9, 11)
    channels = (64, 192, 384, 256, 256)

    def __init__(self) -> None:
        super().__init__([
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        ])


_NETS: dict[str, tuple[type[_Backbone], str, str]] = {
    # net: (backbone class, backbone weight file, lin weight file) -- keys of vantage.eval.weights.WEIGHT_FILES
    "vgg": (VGG16Features, "vgg16", "lpips_vgg"),
    "alex": (AlexNetFeatures, "alexnet", "lpips_alex"),
}


def _unit_normalize(f: Tensor, eps: float = 1e-10) -> Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS distance (Zhang et al. 2018, v0.1) with a VGG16 (``net="vgg"``) or AlexNet (``net="alex"``) trunk.

    ``pretrained=True`` loads the torchvision ImageNet backbone and the LPIPS lin layers from the
    local weight files (explicit paths, else ``$VANTAGE_WEIGHTS``, else ``~/.cache/vantage/weights``;
    raises :class:`~vantage.eval.weights.WeightsUnavailable` naming the file when one is missing).
    ``pretrained=False`` keeps a randomly initialised backbone and lin weights of 1 (the unweighted
    "baseline" variant of the paper): only for tests.

    The module is frozen (``requires_grad=False``) and in eval mode. AlexNet is the reference
    package's default and the paper's best forward metric; VGG is the one most NVS papers report:
    always state which one a number was computed with.
    """

    def __init__(self, net: str = "alex", *, pretrained: bool = True, backbone_path: str | Path | None = None,
                 lin_path: str | Path | None = None, verify: bool = True) -> None:
        super().__init__()
        if net not in _NETS:
            raise ValueError(f"LPIPS net must be one of {sorted(_NETS)}, got '{net}'")
        cls, backbone_file, lin_file = _NETS[net]
        self.net_name = net
        self.backbone = cls()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in cls.channels)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            sd = load_state_dict(backbone_file, backbone_path, verify=verify)
            self.backbone.load_torchvision(sd, f"backbone weights '{backbone_file}'")
            self.load_lins(load_state_dict(lin_file, lin_path, verify=verify), f"LPIPS lin weights '{lin_file}'")
        else:
            for lin in self.lins:
                nn.init.ones_(lin.weight)
        self.requires_grad_(False)
        self.eval()

    def load_lins(self, state_dict: dict[str, Tensor], source: str = "lin state dict") -> None:
        """Load the LPIPS release layout ``lin{i}.model.1.weight`` ``(1, C_i, 1, 1)`` into ``self.lins``."""
        mapped = {}
        for k, v in state_dict.items():
            parts = k.split(".")
            if len(parts) == 4 and parts[0].startswith("lin") and parts[1] == "model" and parts[3] == "weight":
                mapped[f"{parts[0][3:]}.weight"] = v
            else:
                mapped[k] = v  # reported as unexpected below
        load_into(self.lins, mapped, source)

    def train(self, mode: bool = True) -> LPIPS:
        """A metric stays in eval mode (no dropout/batch statistics); ``train()`` is a no-op."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor, *, normalize: bool = False, per_layer: bool = False,
                check_range: bool = True) -> Tensor:
        """LPIPS distance per image.

        Args:
            x, y: ``(B, 3, H, W)`` RGB images in [-1, 1] (in [0, 1] with ``normalize=True``); H, W >= 32
                for AlexNet, >= 16 for VGG (every layer needs at least one pixel).
            normalize: inputs are in [0, 1] and are mapped to [-1, 1] first.
            per_layer: return the ``(B, 5)`` layer terms instead of their sum.
            check_range: raise ``ValueError`` for values outside the stated range (by more than 1e-3).

        Returns:
            ``(B,)`` float32 distances (``(B, 5)`` with ``per_layer``), >= 0. Gradients flow to the
            inputs (usable as a loss); wrap evaluation in ``torch.no_grad()``.
        """
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs must have the same shape, got x {tuple(x.shape)} and y {tuple(y.shape)}")
        if check_range:
            low = 0.0 if normalize else -1.0
            check_images(x, "LPIPS input x", low, 1.0)
            check_images(y, "LPIPS input y", low, 1.0)
        dtype = self.shift.dtype
        x, y = x.to(self.shift.device, dtype), y.to(self.shift.device, dtype)
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        with full_precision(x.device):
            both = (torch.cat([x, y]) - self.shift) / self.scale  # one pass through the trunk for both
            feats = self.backbone(both)
            terms = []
            for f, lin in zip(feats, self.lins):
                f0, f1 = _unit_normalize(f).chunk(2)
                terms.append(lin((f0 - f1).pow(2)).mean(dim=(1, 2, 3)))
        out = torch.stack(terms, dim=1)
        return out if per_layer else out.sum(dim=1)
