"""LPIPS, the FID Inception, FID/KID and the weight-file lookup, without the real weights.

The published weight files are absent in CI: the networks run with random weights, and the
state-dict layouts are checked against tables of the published key names and shapes (written
from the torchvision / LPIPS / pytorch-fid architecture definitions) by loading synthetic files
with those keys. Synthetic tensors are zero-stride expansions of one value, so the files are tiny.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from vantage.eval import weights as W
from vantage.eval.fid import (
    FeatureStats,
    feature_stats,
    fid,
    frechet_distance,
    kid,
    load_stats,
    mmd2_unbiased,
    polynomial_kernel,
    save_stats,
)
from vantage.eval.inception import FIDInceptionV3
from vantage.eval.lpips import LPIPS

pytestmark = pytest.mark.usefixtures("single_thread")

# ------------------------------------------------------------------------------- published layouts
# torchvision vgg16 (IMAGENET1K_V1): conv (index, out, in), all 3x3; classifier Linear (index, out, in)
VGG16_CONVS = [(0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256), (14, 256, 256),
               (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
VGG16_FC = [(0, 4096, 25088), (3, 4096, 4096), (6, 1000, 4096)]
# torchvision alexnet (IMAGENET1K_V1): conv (index, out, in, kernel)
ALEX_CONVS = [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)]
ALEX_FC = [(1, 4096, 9216), (4, 4096, 4096), (6, 1000, 4096)]
LPIPS_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


def torchvision_keys(convs, fcs) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for conv in convs:
        i, o, c, k = conv if len(conv) == 4 else (*conv, 3)
        out[f"features.{i}.weight"], out[f"features.{i}.bias"] = (o, c, k, k), (o,)
    for i, o, c in fcs:
        out[f"classifier.{i}.weight"], out[f"classifier.{i}.bias"] = (o, c), (o,)
    return out


def lpips_lin_keys(net: str) -> dict[str, tuple[int, ...]]:
    return {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS[net])}


def inception_keys(num_batches_tracked: bool = True) -> dict[str, tuple[int, ...]]:
    """pt_inception-2015-12-05: torchvision Inception3(num_classes=1008, aux_logits=False) key names."""
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
             ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):  # InceptionA
        convs += [(f"{name}.{b}", i, o, kh, kw) for b, i, o, kh, kw in [
            ("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
            ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
            ("branch_pool", cin, pool, 1, 1)]]
    convs += [(f"Mixed_6a.{b}", i, o, k, k) for b, i, o, k in [  # InceptionB
        ("branch3x3", 288, 384, 3), ("branch3x3dbl_1", 288, 64, 1), ("branch3x3dbl_2", 64, 96, 3),
        ("branch3x3dbl_3", 96, 96, 3)]]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):  # InceptionC
        convs += [(f"{name}.{b}", i, o, kh, kw) for b, i, o, kh, kw in [
            ("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", 768, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7),
            ("branch_pool", 768, 192, 1, 1)]]
    convs += [(f"Mixed_7a.{b}", i, o, kh, kw) for b, i, o, kh, kw in [  # InceptionD
        ("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3), ("branch7x7x3_1", 768, 192, 1, 1),
        ("branch7x7x3_2", 192, 192, 1, 7), ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)]]
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):  # InceptionE
        convs += [(f"{name}.{b}", i, o, kh, kw) for b, i, o, kh, kw in [
            ("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1), ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1), ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1), ("branch_pool", cin, 192, 1, 1)]]
    out: dict[str, tuple[int, ...]] = {}
    for p, cin, cout, kh, kw in convs:
        out[f"{p}.conv.weight"] = (cout, cin, kh, kw)
        for b in ("weight", "bias", "running_mean", "running_var"):
            out[f"{p}.bn.{b}"] = (cout,)
        if num_batches_tracked:
            out[f"{p}.bn.num_batches_tracked"] = ()
    out["fc.weight"], out["fc.bias"] = (1008, 2048), (1008,)
    return out


def synthetic(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """One distinct value per key (i / 1000), expanded to the key's shape without allocating it."""
    sd = {}
    for i, (k, shape) in enumerate(keys.items()):
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        else:
            sd[k] = torch.full((), (i + 1) / 1000).expand(shape)
    return sd


def n_params(keys: dict[str, tuple[int, ...]], prefix: str = "") -> int:
    return sum(math.prod(s) for k, s in keys.items()
               if k.startswith(prefix) and not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def test_layout_tables_match_published_parameter_counts():
    # torchvision's documented totals: vgg16 138,357,544; alexnet 61,100,840; inception_v3 27,161,264
    # (the latter with the 1000-class fc and the aux head: 3,326,696 parameters; FID's fc has 1008 classes)
    assert n_params(torchvision_keys(VGG16_CONVS, VGG16_FC)) == 138_357_544
    assert n_params(torchvision_keys(ALEX_CONVS, ALEX_FC)) == 61_100_840
    assert n_params(inception_keys()) == 27_161_264 - 3_326_696 + 8 * 2048 + 8
    assert len(inception_keys()) == 94 * 6 + 2


@pytest.mark.parametrize("net,convs,fcs,backbone", [("vgg", VGG16_CONVS, VGG16_FC, "vgg16"),
                                                     ("alex", ALEX_CONVS, ALEX_FC, "alexnet")])
def test_lpips_loads_published_layouts_by_key(tmp_path, net, convs, fcs, backbone):
    tv, lin = torchvision_keys(convs, fcs), lpips_lin_keys(net)
    torch.save(synthetic(tv), tmp_path / W.WEIGHT_FILES[backbone].relpath)
    (tmp_path / "lpips_v0.1").mkdir()
    torch.save(synthetic(lin), tmp_path / W.WEIGHT_FILES[f"lpips_{net}"].relpath)
    model = LPIPS(net, backbone_path=tmp_path, lin_path=tmp_path, verify=False)
    own = model.backbone.state_dict()
    assert {f"features.{k}": tuple(v.shape) for k, v in model.backbone.features.state_dict().items()} == \
        {k: s for k, s in tv.items() if k.startswith("features.")}
    for i, k in enumerate(tv):  # every tensor landed under its own key
        if k.startswith("features."):
            assert torch.all(own[k] == (i + 1) / 1000), k
    for i, c in enumerate(LPIPS_CHANNELS[net]):
        assert model.lins[i].weight.shape == (1, c, 1, 1) and torch.all(model.lins[i].weight == (i + 1) / 1000)
    # a file with a wrong shape is refused with the file named
    bad = synthetic(lin)
    bad["lin2.model.1.weight"] = torch.zeros(1, 7, 1, 1)
    with pytest.raises(ValueError, match=r"lpips_(vgg|alex) does not match .*shape mismatches: 2\.weight"):
        model.load_lins(bad, f"lpips_{net}")


@pytest.mark.parametrize("tracked", [True, False])
def test_fid_inception_loads_published_layout_by_key(tmp_path, tracked):
    keys = inception_keys(num_batches_tracked=tracked)
    model = FIDInceptionV3(pretrained=False)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == inception_keys(True)
    file = tmp_path / W.WEIGHT_FILES["fid_inception"].relpath
    torch.save(synthetic(keys), file)
    model = FIDInceptionV3(path=file, verify=False)
    own = model.state_dict()
    for i, k in enumerate(keys):
        if not k.endswith("num_batches_tracked"):
            assert torch.all(own[k] == (i + 1) / 1000), k
    sd = synthetic(keys)
    del sd["Mixed_6b.branch7x7_2.conv.weight"]
    sd["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    torch.save(sd, file)
    with pytest.raises(ValueError, match=r"pt_inception.*missing keys: Mixed_6b\.branch7x7_2\.conv\.weight.*"
                                          r"unexpected keys: AuxLogits\.fc\.weight"):
        FIDInceptionV3(path=file, verify=False)


# ------------------------------------------------------------------------------------------- LPIPS
@pytest.fixture(scope="module", params=["vgg", "alex"])
def lpips_random(request):
    torch.manual_seed(0)
    model = LPIPS(request.param, pretrained=False)
    for lin in model.lins:  # positive channel weights, not all equal
        lin.weight.data = torch.rand_like(lin.weight) + 0.1
    return model


def test_lpips_identity_symmetry_positivity(lpips_random):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 64, 64, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        d_xy, d_yx, d_xx = lpips_random(x, y), lpips_random(y, x), lpips_random(x, x)
        per_layer = lpips_random(x, y, per_layer=True)
        d_unit = lpips_random((x + 1) / 2, (y + 1) / 2, normalize=True)
    assert d_xy.shape == (2,) and d_xy.dtype == torch.float32
    assert torch.all(d_xx == 0)
    assert torch.allclose(d_xy, d_yx, rtol=1e-5, atol=1e-7)
    assert torch.all(d_xy > 0)
    assert per_layer.shape == (2, 5) and torch.all(per_layer >= 0)
    assert torch.allclose(per_layer.sum(1), d_xy, rtol=1e-5)
    assert torch.allclose(d_unit, d_xy, rtol=1e-4, atol=1e-6)


def test_lpips_input_checks(lpips_random):
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"LPIPS input y has values in \[0, 255\], expected \[-1, 1\]"):
        lpips_random(x, torch.full_like(x, 255.0).index_fill_(1, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match="same shape"):
        lpips_random(x, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"RGB images \(B, 3, H, W\)"):
        lpips_random(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPS("squeeze", pretrained=False)


def test_lpips_scaling_layer_constants():
    model = LPIPS("alex", pretrained=False)
    assert torch.allclose(model.shift.flatten(), torch.tensor([-0.030, -0.088, -0.188]))
    assert torch.allclose(model.scale.flatten(), torch.tensor([0.458, 0.448, 0.450]))
    assert "shift" not in model.state_dict()  # constants, not weights


# ------------------------------------------------------------------------------------------ Inception
def test_fid_inception_features_shape_and_preprocessing():
    torch.manual_seed(0)
    model = FIDInceptionV3(pretrained=False)
    for m in model.modules():  # He init so that features are not ~0 after 40+ random layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f = model(x * 2 - 1)
    assert f.shape == (2, 2048) and f.dtype == torch.float32
    assert torch.isfinite(f).all() and (f >= 0).all() and f.abs().max() > 1e-3
    # [0, 1] input with normalize=True, in batches of 1: same features (eval-mode BN, linear resize)
    g = model.extract(x, batch_size=1, normalize=True)
    assert g.shape == (2, 2048)
    assert torch.allclose(g, f, rtol=1e-4, atol=1e-5 * float(f.abs().max()))
    with pytest.raises(ValueError, match=r"Inception input has values in .*expected \[0, 1\]"):
        model(x * 2 - 1, normalize=True)


def test_fid_inception_tensorflow_pooling_details():
    model = FIDInceptionV3(pretrained=False)
    assert model.Mixed_7c.max_pool and not model.Mixed_7b.max_pool
    from vantage.eval.inception import _avg3

    ones = torch.ones(1, 1, 5, 5)  # padding not counted: the average of ones stays 1 at the borders
    assert torch.all(_avg3(ones) == 1)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training


# ------------------------------------------------------------------------------------------ FID
try:
    import scipy.linalg  # noqa: F401  (optional: FID falls back to the eigendecomposition route)

    SQRT_METHODS = ("scipy", "eigh")
except ImportError:
    SQRT_METHODS = ("eigh",)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 2, size=d), rng.uniform(0.1, 2, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    for method in SQRT_METHODS:
        assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_full_covariances_both_routes_agree():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 12)), rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu1, mu2 = a.mean(0), b.mean(0)
    v = [frechet_distance(mu1, s1, mu2, s2, method=m) for m in SQRT_METHODS]
    assert v[0] == pytest.approx(v[-1], rel=1e-8)
    # rotating both Gaussians together leaves the distance unchanged
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T) == pytest.approx(v[0], rel=1e-7)
    # 1-D: (m1 - m2)² + (σ1 - σ2)²
    assert frechet_distance(1.0, 4.0, -1.0, 9.0, method="eigh") == pytest.approx(4 + 1)
    with pytest.raises(ValueError, match="equal D"):
        frechet_distance(mu1, s1, mu2[:3], s2)


def test_frechet_distance_without_scipy(monkeypatch):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(30, 6)), rng.normal(size=(30, 6)) * 2
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False), method="eigh")
    monkeypatch.setitem(sys.modules, "scipy", None)  # "import scipy.linalg" now raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)
    assert fid(a, b) == pytest.approx(expected, rel=1e-12)


def test_fid_of_a_set_with_itself_is_zero_and_stats_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    feats = np.abs(rng.normal(size=(300, 64))).astype(np.float32)
    assert abs(fid(feats, feats)) < 1e-6
    st = feature_stats(torch.from_numpy(feats))
    assert st.mu.shape == (64,) and st.sigma.shape == (64, 64) and st.n == 300
    assert np.allclose(st.sigma, np.cov(feats.astype(np.float64), rowvar=False))
    path = save_stats(tmp_path / "ref.npz", st)
    back = load_stats(path)
    assert np.array_equal(back.mu, st.mu) and np.array_equal(back.sigma, st.sigma) and back.n == 300
    assert np.array_equal(back.features, st.features) and back.extractor == st.extractor
    other = feats[:150] + 0.5
    assert fid(back, other) == pytest.approx(fid(feats, other), rel=1e-9)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_stats(path, st)
    # a pytorch-fid statistics file (mu, sigma only) loads; KID then asks for the features
    np.savez(tmp_path / "pf.npz", mu=st.mu, sigma=st.sigma)
    pf = load_stats(tmp_path / "pf.npz")
    assert pf.n is None and pf.features is None and fid(pf, back) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="KID needs the features of set a"):
        kid(pf, back)
    np.savez(tmp_path / "bad.npz", mu=st.mu)
    with pytest.raises(ValueError, match=r"bad\.npz lacks \['sigma'\]"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="different feature extractors"):
        fid(dataclasses.replace(back, extractor="other-net"), back)


# ------------------------------------------------------------------------------------------ KID
def test_mmd2_unbiased_matches_double_loop():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(7, 4)) + 0.3
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(5), 2)) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(7), 2)) / (7 * 6)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(7)) / (5 * 7)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert polynomial_kernel(x, y)[2, 3] == pytest.approx(k(x[2], y[3]), rel=1e-12)


def test_kid_subsets_and_clipping():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(30, 8)), rng.normal(size=(20, 8)) + 0.5
    # subset size clipped to 20; with b fully used, each subset is a random 20 of a
    mean, std = kid(a, b, num_subsets=5)
    rs = np.random.RandomState(2020)
    vals = []
    for _ in range(5):
        ia, ib = rs.choice(30, 20, replace=False), rs.choice(20, 20, replace=False)
        vals.append(mmd2_unbiased(a[ia], b[ib]))
    assert mean == pytest.approx(np.mean(vals), rel=1e-12) and std == pytest.approx(np.std(vals), rel=1e-9)
    # the estimator does not depend on the order: one subset holding both sets entirely = plain MMD²
    m1, s1 = kid(a[:20], b, num_subsets=1)
    assert m1 == pytest.approx(mmd2_unbiased(a[:20], b), rel=1e-12) and s1 == 0
    same = kid(a, a, subset_size=10, num_subsets=50)[0]
    assert abs(same) < mean  # unbiased: near 0 for identical distributions
    st = feature_stats(a)
    assert kid(st, b, num_subsets=5) == pytest.approx((mean, std), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        kid(a[:1], b)


# ------------------------------------------------------------------------------------------ weights
def test_weights_missing_file_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path))
    assert W.default_weights_dir() == tmp_path
    with pytest.raises(W.WeightsUnavailable) as e:
        W.find_weights("fid_inception")
    msg = str(e.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and str(tmp_path) in msg
    assert W.WEIGHT_FILES["fid_inception"].url in msg and "VANTAGE_WEIGHTS" in msg
    assert e.value.name == "fid_inception" and e.value.path == tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(W.WeightsUnavailable, match=r"lpips_v0\.1/alex\.pth|alexnet-owt-7be5be79\.pth"):
        LPIPS("alex")
    monkeypatch.delenv(W.ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert W.default_weights_dir() == tmp_path / "home" / ".cache" / "vantage" / "weights"
    with pytest.raises(KeyError, match="unknown weight file"):
        W.find_weights("resnet")


def test_weights_checksum_verification(tmp_path, monkeypatch):
    file = tmp_path / "vgg16-397923af.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, file)
    with pytest.raises(W.WeightsChecksumError, match=r"397923af\.pth has sha256 [0-9a-f]{64} .*expected 397923af"):
        W.find_weights("vgg16", tmp_path)
    assert issubclass(W.WeightsChecksumError, W.WeightsUnavailable)
    assert W.find_weights("vgg16", file, verify=False) == file  # explicit file path, unchecked
    digest = W.sha256_file(file)
    for known in (digest, digest[:8]):  # full digest, or a known prefix
        spec = dataclasses.replace(W.WEIGHT_FILES["vgg16"], sha256=known)
        monkeypatch.setitem(W.WEIGHT_FILES, "vgg16", spec)
        assert W.find_weights("vgg16", tmp_path) == file
        assert W.load_state_dict("vgg16", tmp_path)["features.0.weight"].shape == (1,)
    bad = tmp_path / "garbage" / "vgg16-397923af.pth"
    bad.parent.mkdir()
    bad.write_bytes(b"not a torch file")
    monkeypatch.setitem(W.WEIGHT_FILES, "vgg16", dataclasses.replace(spec, sha256=W.sha256_file(bad)))
    with pytest.raises(W.WeightsUnavailable, match="could not be read as a PyTorch state dict"):
        W.load_state_dict("vgg16", bad.parent)


def test_weight_table_is_consistent():
    for name, spec in W.WEIGHT_FILES.items():
        assert spec.name == name and len(spec.sha256) == 64 and spec.url.endswith(spec.relpath.split("/")[-1])
        stem = spec.relpath.rsplit(".", 1)[0]
        if "-" in stem.split("/")[-1]:  # torch.hub naming: <name>-<sha256 prefix>.pth
            assert spec.sha256.startswith(stem.rsplit("-", 1)[1])


def test_feature_stats_errors():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        feature_stats(np.zeros(5))
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_stats(np.zeros((1, 3)))
    assert isinstance(feature_stats(np.eye(3)), FeatureStats)
