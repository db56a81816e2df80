"""FD-DINOv2: the DINOv2 ViT-L/14 feature network, its weight file, the metric in ``vantage evaluate``.

The released weights (``dinov2_vitl14_pretrain.pth``, 1.2 GB) are never present in tests. The layout
is checked against a table of the released key names and shapes, written from the reference
definition (``facebookresearch/dinov2``: ``dinov2/models/vision_transformer.py``, ``dinov2/layers/``,
``dinov2/hub/backbones.py``: ``vit_large``, ``img_size=518``, ``patch_size=14``, ``block_chunks=0``,
no register tokens), by loading synthetic files with those keys; the forward pass runs a small
random-weight ViT of the same code. The positional-embedding resize is checked against a bicubic
written out here, and the preprocessing against EDM2's ``DINOv2Detector`` steps written out here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vantage.cli.main import main
from vantage.eval import weights as W
from vantage.eval.dinov2 import (
    DINOV2_FEATURE_DIM,
    FD_DINOV2_EXTRACTOR,
    DINOv2Features,
    DINOv2ViT,
    interpolate_pos_embed,
)
from vantage.eval.evaluate import Scorer, evaluate_folders
from vantage.eval.fid import fd_dinov2, feature_stats, fid
from vantage.eval.protocol import MetricSettings, ProtocolError, protocol_from_dict

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"embed_dim": 16, "depth": 2, "num_heads": 4, "img_size": 56}  # patch 14: a 4x4 pos_embed grid
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------- the released layout
def official_keys(dim: int = 1024, depth: int = 24, patch: int = 14, grid: int = 37,
                  hidden: int | None = None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reference DinoVisionTransformer's state dict (block_chunks=0, no registers, MLP FFN)."""
    hidden = hidden or 4 * dim
    keys: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid * grid, dim),
                                        "mask_token": (1, dim), "patch_embed.proj.weight": (dim, 3, patch, patch),
                                        "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}"
        keys.update({f"{b}.norm1.weight": (dim,), f"{b}.norm1.bias": (dim,),
                     f"{b}.attn.qkv.weight": (3 * dim, dim), f"{b}.attn.qkv.bias": (3 * dim,),
                     f"{b}.attn.proj.weight": (dim, dim), f"{b}.attn.proj.bias": (dim,),
                     f"{b}.ls1.gamma": (dim,), f"{b}.norm2.weight": (dim,), f"{b}.norm2.bias": (dim,),
                     f"{b}.mlp.fc1.weight": (hidden, dim), f"{b}.mlp.fc1.bias": (hidden,),
                     f"{b}.mlp.fc2.weight": (dim, hidden), f"{b}.mlp.fc2.bias": (dim,), f"{b}.ls2.gamma": (dim,)})
    keys["norm.weight"], keys["norm.bias"] = (dim,), (dim,)
    return keys


def synthetic(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """One distinct value per key ((i + 1) / 1000), expanded to the key's shape without allocating it."""
    return {k: torch.full((), (i + 1) / 1000).expand(shape) for i, (k, shape) in enumerate(keys.items())}


def tiny_keys() -> dict[str, tuple[int, ...]]:
    return official_keys(dim=16, depth=2, grid=4)


def test_vitl14_layout_is_the_released_one():
    with torch.device("meta"):  # shapes only: no 1.2 GB allocation
        model = DINOv2Features(pretrained=False)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == official_keys() and list(own) == list(official_keys())
    n = sum(math.prod(s) for s in own.values())
    assert n == 304_368_640 and len(own) == 343  # ViT-L/14 "300M"; 5 + 24 x 14 + 2 tensors
    # the registered file holds these tensors in fp32 plus the zip container's headers (a few hundred bytes each)
    spec = W.WEIGHT_FILES["dinov2_vitl14"]
    assert 0 < spec.size - 4 * n < 1000 * len(own)
    assert model.embed_dim == DINOV2_FEATURE_DIM and model.patch_size == 14


def test_loads_official_key_names(tmp_path, monkeypatch):
    keys = tiny_keys()
    file = tmp_path / W.WEIGHT_FILES["dinov2_vitl14"].relpath
    torch.save(synthetic(keys), file)
    model = DINOv2Features(path=tmp_path, verify=False, **TINY)
    own = model.state_dict()
    assert list(own) == list(keys)
    for i, k in enumerate(keys):  # every tensor landed under its own key
        assert torch.all(own[k] == (i + 1) / 1000), k
    assert not any(p.requires_grad for p in model.parameters()) and not model.train().training
    # found through $VANTAGE_WEIGHTS and checked against the registered SHA-256 (here: this file's)
    spec = dataclasses.replace(W.WEIGHT_FILES["dinov2_vitl14"], sha256=W.sha256_file(file))
    monkeypatch.setitem(W.WEIGHT_FILES, "dinov2_vitl14", spec)
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path))
    assert torch.equal(DINOv2Features(**TINY).state_dict()["blocks.1.ls2.gamma"], own["blocks.1.ls2.gamma"])


def test_wrong_keys_and_shapes_name_the_key(tmp_path):
    file = tmp_path / "dinov2.pth"
    sd = synthetic(tiny_keys())
    del sd["blocks.1.ls2.gamma"]
    sd["register_tokens"] = torch.zeros(1, 4, 16)  # the *_reg4 variant's extra key
    torch.save(sd, file)
    with pytest.raises(ValueError, match=r"dinov2_vitl14_pretrain\.pth.*missing keys: blocks\.1\.ls2\.gamma; "
                                         r"unexpected keys: register_tokens"):
        DINOv2Features(path=file, verify=False, **TINY)
    sd = synthetic(tiny_keys())
    sd["pos_embed"] = torch.zeros(1, 1 + 37 * 37, 16)
    torch.save(sd, file)
    with pytest.raises(ValueError, match=r"shape mismatches: pos_embed: file \(1, 1370, 16\), expected \(1, 17, 16\)"):
        DINOv2Features(path=file, verify=False, **TINY)
    with pytest.raises(TypeError, match="unknown architecture argument"):
        DINOv2Features(pretrained=False, registers=4)
    with pytest.raises(ValueError, match="resize must be one of torch, pil"):
        DINOv2Features(pretrained=False, resize="bilinear", **TINY)


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path))
    with pytest.raises(W.WeightsUnavailable) as e:
        DINOv2Features()  # raised before the 300M-parameter network is built
    msg = str(e.value)
    assert "dinov2_vitl14_pretrain.pth" in msg and str(tmp_path) in msg and "VANTAGE_WEIGHTS" in msg
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth" in msg
    (tmp_path / "dinov2_vitl14_pretrain.pth").write_bytes(b"truncated")
    with pytest.raises(W.WeightsChecksumError, match=r"9 bytes, expected 1217586395 bytes"):
        DINOv2Features()


# ------------------------------------------------------------------------------- positional embeddings
def keys_bicubic(m: int, g: int, scale: float, a: float = -0.75) -> torch.Tensor:
    """``(g, m)`` weights of PyTorch's bicubic (Keys' kernel, a = -0.75, align_corners=False, edges clamped)
    when the output-to-input scale is ``1 / scale``: output j reads input coordinate ``(j + 0.5) / scale - 0.5``."""
    def k(s: float) -> float:
        s = abs(s)
        if s <= 1:
            return ((a + 2) * s - (a + 3)) * s * s + 1
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a if s < 2 else 0.0

    w = torch.zeros(g, m, dtype=torch.float64)
    for j in range(g):
        x = (j + 0.5) / scale - 0.5
        i0 = math.floor(x)
        for i in range(i0 - 1, i0 + 3):
            w[j, min(max(i, 0), m - 1)] += k(x - i)
    return w


def test_pos_embed_identity_at_the_native_grid_and_shapes_elsewhere():
    g = torch.Generator().manual_seed(0)
    pe = torch.randn(1, 1 + 37 * 37, 8, generator=g)
    assert interpolate_pos_embed(pe, 518, 518, 14) is pe
    assert interpolate_pos_embed(pe, 520, 520, 14) is pe  # 37 patches, the remainder is cropped by the conv
    for (h, w), n in (((224, 224), 16 * 16), ((224, 280), 16 * 20), ((518, 224), 37 * 16), ((14, 14), 1)):
        out = interpolate_pos_embed(pe, h, w, 14)
        assert out.shape == (1, 1 + n, 8) and torch.equal(out[:, 0], pe[:, 0])
    with pytest.raises(ValueError, match=r"\(1, 1 \+ M², D\)"):
        interpolate_pos_embed(torch.zeros(1, 11, 8), 224, 224, 14)


@pytest.mark.parametrize("h,w", [(224, 224), (224, 280), (518, 378)])
def test_pos_embed_resize_is_the_reference_scale_factor_bicubic(h, w):
    m, d = 37, 3
    g = torch.Generator().manual_seed(1)
    pe = torch.randn(1, 1 + m * m, d, generator=g)
    gh, gw = h // 14, w // 14
    grid = pe[0, 1:].double().reshape(m, m, d)
    wy, wx = keys_bicubic(m, gh, (gh + 0.1) / m), keys_bicubic(m, gw, (gw + 0.1) / m)
    expected = torch.einsum("ym,mnc,xn->yxc", wy, grid, wx).reshape(gh * gw, d)
    out = interpolate_pos_embed(pe, h, w, 14)[0, 1:].double()
    assert torch.allclose(out, expected, atol=2e-5)
    # the "+0.1" is not only a rounding guard: resizing to the size (scale g / M) gives other values
    plain = torch.einsum("ym,mnc,xn->yxc", keys_bicubic(m, gh, gh / m), grid, keys_bicubic(m, gw, gw / m))
    assert (out - plain.reshape(gh * gw, d)).abs().max() > 1e-2
    assert torch.allclose(interpolate_pos_embed(pe, h, w, 14, offset=0)[0, 1:].double(),
                          plain.reshape(gh * gw, d), atol=2e-5)


# ------------------------------------------------------------------------------- forward, preprocessing
@pytest.fixture(scope="module")
def tiny() -> DINOv2Features:
    torch.manual_seed(0)
    return DINOv2Features(pretrained=False, **TINY)


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` smooth random colour images in [-1, 1] on the 8-bit grid (as read from PNG files)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return ((x + 1) * 127.5).round() / 127.5 - 1


def test_preprocessing_ranges_and_checks(tiny):
    x = images(3, 40)
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    f = tiny(x)
    assert f.shape == (3, 16) and f.dtype == torch.float32 and torch.isfinite(f).all()
    assert torch.allclose(tiny(u8), f, atol=1e-5)
    assert torch.allclose(tiny((x + 1) / 2, normalize=True), f, atol=1e-5)
    assert torch.allclose(tiny.extract(x, batch_size=2), f, atol=1e-6)
    assert tiny.extract([]).shape == (0, 16)
    with pytest.raises(ValueError, match=r"DINOv2 input has values in \[0, 25\d\], expected \[-1, 1\]"):
        tiny(u8.float())
    with pytest.raises(ValueError, match=r"RGB images \(B, 3, H, W\)"):
        tiny(u8[:, :1])
    with pytest.raises(ValueError, match=r"RGB images \(B, 3, H, W\)"):
        tiny(x[:, :2], check_range=False)


def test_preprocessing_is_edm2s(tiny):
    """EDM2's DINOv2Detector: uint8 -> float -> bicubic antialiased resize to 224 -> /255 -> ImageNet mean/std."""
    u8 = ((images(2, 64, seed=1) + 1) * 127.5).round().to(torch.uint8)
    r = F.interpolate(u8.float(), size=(224, 224), mode="bicubic", antialias=True) / 255
    assert torch.allclose(tiny(u8), DINOv2ViT.forward(tiny, (r - MEAN) / STD), atol=1e-6)
    # at 224 px nothing is resized
    u224 = ((images(2, 224, seed=2) + 1) * 127.5).round().to(torch.uint8)
    assert torch.allclose(tiny(u224), DINOv2ViT.forward(tiny, (u224.float() / 255 - MEAN) / STD), atol=1e-6)
    # dgm-eval's PIL resize of the uint8 image
    pil = np.stack([np.asarray(Image.fromarray(a).resize((224, 224), Image.Resampling.BICUBIC))
                    for a in u8.permute(0, 2, 3, 1).numpy()])
    r = torch.from_numpy(pil).permute(0, 3, 1, 2).float() / 255
    tiny.resize = "pil"
    try:
        assert torch.allclose(tiny(u8), DINOv2ViT.forward(tiny, (r - MEAN) / STD), atol=1e-6)
    finally:
        tiny.resize = "torch"


# ------------------------------------------------------------------------------- the distance
def test_fd_dinov2_zero_for_identical_sets_and_grows_with_a_shift(tiny):
    x = images(40, 32)
    f = tiny.extract(x)
    assert fd_dinov2(f, f) == pytest.approx(0, abs=1e-6)
    assert fd_dinov2(f, f) == fid(f, f)
    near, far = (fd_dinov2(f, tiny.extract((x + s).clamp(-1, 1))) for s in (0.15, 0.5))
    assert 1e-3 < near < far
    st = feature_stats(f, extractor=FD_DINOV2_EXTRACTOR)
    assert fd_dinov2(st, feature_stats(f, extractor=FD_DINOV2_EXTRACTOR)) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="different feature extractors"):
        fd_dinov2(st, feature_stats(f))  # Inception statistics (the default extractor) are refused


# ------------------------------------------------------------------------------- the metric
def test_fd_dinov2_is_a_protocol_metric():
    p = protocol_from_dict({"name": "d", "version": 1, "dataset": {"spec": "synthetic:test"}, "input_views": [0],
                            "resolution": 16, "metrics": {"names": ["psnr", "fid", "fd_dinov2"]}})
    assert p.metrics.names == ("psnr", "fid", "fd_dinov2")
    with pytest.raises(ProtocolError, match=r"'metrics.names' must be a non-empty list of .*jfid, fd_dinov2"):
        protocol_from_dict({"name": "d", "version": 1, "dataset": {"spec": "synthetic:test"}, "input_views": [0],
                            "resolution": 16, "metrics": {"names": ["fd-dinov2"]}})


def save(img: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((img + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(path)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """gt/<obj>/000001.png, pred/ = gt, brighter/ = gt + 0.4; no weight files anywhere."""
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "no-weights"))
    x = images(24, 24, seed=3)
    for k in range(24):
        save(x[k], tmp_path / "gt" / f"obj{k:02d}" / "000001.png")
        save(x[k], tmp_path / "pred" / f"obj{k:02d}" / "000001.png")
        save((x[k] + 0.4).clamp(-1, 1), tmp_path / "brighter" / f"obj{k:02d}" / "000001.png")
    return tmp_path


def test_fd_dinov2_skipped_without_weights(folders):
    settings = MetricSettings(names=("psnr", "fd_dinov2"))
    r = evaluate_folders(folders / "pred", folders / "gt", settings=settings, progress=False)
    assert set(r["skipped"]) == {"fd_dinov2"} and "dinov2_vitl14_pretrain.pth" in r["skipped"]["fd_dinov2"]
    assert r["set_metrics"] == {} and r["mean"]["psnr"] == 100.0
    assert Scorer(MetricSettings(names=("psnr",))).dinov2 is None  # not asked for: not built


def test_fd_dinov2_in_evaluate_and_the_cli(folders, tiny, monkeypatch, capsys):
    monkeypatch.setattr("vantage.eval.dinov2.DINOv2Features", lambda: tiny)
    settings = MetricSettings(names=("psnr", "fd_dinov2"))
    same = evaluate_folders(folders / "pred", folders / "gt", settings=settings, progress=False)
    shifted = evaluate_folders(folders / "brighter", folders / "gt", settings=settings, progress=False)
    assert same["skipped"] == {} and same["set_metrics"]["set_size"] == 24
    assert abs(same["set_metrics"]["fd_dinov2"]) < 1e-6 < 1e-3 < shifted["set_metrics"]["fd_dinov2"]
    proto = folders / "dino.json"
    proto.write_text(json.dumps({"name": "dino", "version": 1, "dataset": {"spec": "synthetic:test"},
                                 "input_views": [0], "resolution": 24, "metrics": {"names": ["psnr", "fd_dinov2"]}}))
    out = folders / "scores"
    assert main(["evaluate", "--pred", str(folders / "brighter"), "--gt", str(folders / "gt"), "--out", str(out),
                 "--protocol", str(proto)]) == 0
    assert "FD-DINOv2:" in capsys.readouterr().out
    doc = json.loads((out / "metrics.json").read_text())
    sm = doc["result"]["set_metrics"]
    assert sm["fd_dinov2"] == pytest.approx(shifted["set_metrics"]["fd_dinov2"])
    assert "FD-DINOv2" in doc["metric_settings"]["conventions"]
    assert f"FD-DINOv2 {sm['fd_dinov2']:.2f}" in (out / "metrics.md").read_text()
