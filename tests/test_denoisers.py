"""Denoiser adapters: diffusers / ViewFusion / VIVID fixtures, EDM identities, shapes and errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import load_reference

from vantage.diffusion.denoisers import (
    EDM2Denoiser,
    EDMDenoiser,
    EpsDenoiser,
    LogVarHead,
    VDenoiser,
    VPDenoiser,
    X0Denoiser,
    broadcast_sigma,
    edm_coefficients,
)
from vantage.diffusion.losses import vp_training_inputs
from vantage.diffusion.schedules import CosineLogSNR, DiscreteSchedule, discrete_sigmas

_load = load_reference


def _dummy_eps(x_in: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
    """The diffusers fixture's model: 0.1 * x * cos(t / 100) with integer t."""
    return 0.1 * x_in * torch.cos(t / 100).reshape(-1, 1, 1, 1)


def _vp(pred: str, schedule: DiscreteSchedule, clip: bool) -> VPDenoiser:
    cls = EpsDenoiser if pred == "epsilon" else VDenoiser
    return cls(_dummy_eps, schedule, quantize=True, clip_x0=clip)


CASES = [(s, p, c) for s in ("linear", "cos") for p in ("epsilon", "v_prediction") for c in (0, 1)]


@pytest.mark.parametrize(("sched", "pred", "clip"), CASES)
def test_diffusers_first_pred_x0(sched: str, pred: str, clip: int) -> None:
    """x̂0 at the first DDIM step (t = 950) equals diffusers' pred_original_sample."""
    d = _load("diffusers_schedulers")
    s = DiscreteSchedule.make("linear" if sched == "linear" else "cosine", 1000)
    den = _vp(pred, s, bool(clip))
    sigma = s.sigmas[950].float()
    x_sigma = d["x_init"] * math.sqrt(1 + float(sigma) ** 2)  # x_t -> x_σ
    x0 = den(x_sigma, sigma)
    ref = d[f"ddim.{sched}.{pred}.clip{clip}.first_pred_x0"]
    torch.testing.assert_close(x0, ref, rtol=1e-5, atol=1e-5)


def test_diffusers_first_pred_x0_trailing() -> None:
    d = _load("diffusers_schedulers")
    s = DiscreteSchedule.make("linear", 1000)
    sigma = discrete_sigmas(s, 20, "trailing")[0]
    x0 = _vp("epsilon", s, True)(d["x_init"] * math.sqrt(1 + float(sigma) ** 2), sigma)
    torch.testing.assert_close(x0, d["ddim.linear.epsilon.clip1.trailing.first_pred_x0"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("sched", "pred"), [(s, p) for s in ("linear", "cos") for p in ("epsilon", "v_prediction")])
def test_ddim_eta0_is_euler_on_discrete_sigmas(sched: str, pred: str) -> None:
    """The convention: diffusers' DDIM(η=0) (no clipping) is Euler in σ-space on σ(t_k), then 0."""
    d = _load("diffusers_schedulers")
    s = DiscreteSchedule.make("linear" if sched == "linear" else "cosine", 1000)
    den = _vp(pred, s, False)
    sigmas = discrete_sigmas(s, 20, "leading")
    x = d["x_init"] * (1 + sigmas[0] ** 2).sqrt()
    for i in range(20):
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - den(x, sigmas[i])) / sigmas[i]
    ref = d[f"ddim.{sched}.{pred}.clip0.final"]
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5 * max(1.0, ref.abs().max().item()))


def test_viewfusion_gamma_conditioning_and_clipped_x0() -> None:
    """EpsDenoiser(noise_cond="gamma", clip_x0=True) on ViewFusion's p_mean_variance path: the
    network sees y_t and γ = ᾱ_t, and the clipped x̂0 gives the reference posterior mean."""
    d = _load("viewfusion_unet")
    s = DiscreteSchedule.make("linear", 2000, 1e-6, 1e-2)
    t = d["pmv.t"].long()
    counts = d["in.view_count"].long()
    raw = d["pmv.unet_raw"]
    # compose the stored raw per-view outputs as the reference does (softmax over views)
    eps, start = [], 0
    for n in counts.tolist():
        e, logits = raw[start:start + n, :3], raw[start:start + n, 3:]
        eps.append((torch.softmax(logits, dim=0) * e).sum(0))
        start += n
    composed = torch.stack(eps)
    seen: dict[str, torch.Tensor] = {}

    def call(net: object, x_in: torch.Tensor, gamma: torch.Tensor, cond: object) -> torch.Tensor:
        seen["x_in"], seen["gamma"] = x_in, gamma
        return composed

    den = EpsDenoiser(None, s, noise_cond="gamma", clip_x0=True, call=call)
    sigma = s.sigmas[t].float()
    y_t = d["in.y_noisy"]
    x0 = den(y_t * (1 + sigma**2).sqrt().reshape(-1, 1, 1, 1), sigma)
    torch.testing.assert_close(seen["x_in"], y_t, rtol=1e-5, atol=1e-6)
    unet_gamma = d["pmv.unet_gamma"].reshape(-1)
    torch.testing.assert_close(seen["gamma"], unet_gamma[torch.cumsum(counts, 0) - 1], rtol=1e-5, atol=1e-7)
    assert x0.min() >= -1 and x0.max() <= 1
    a, b = s.alphas_cumprod, s.betas
    a_prev = a[t - 1]
    c1 = (b[t] * a_prev.sqrt() / (1 - a[t])).float().reshape(-1, 1, 1, 1)
    c2 = ((1 - a_prev) * (1 - b[t]).sqrt() / (1 - a[t])).float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(c1 * x0 + c2 * y_t, d["pmv.model_mean"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["vivid_precond", "vivid_precond_extra"])
def test_vivid_edm2_preconditioning_and_logvar(name: str) -> None:
    """D = c_skip·dst + c_out·F with F the stored raw UNet output, and the log-variance head
    loaded from the reference state, match VIVID's NVPrecond outputs."""
    d = _load(name)
    seen: dict[str, torch.Tensor] = {}

    def net(x_in: torch.Tensor, c_noise: torch.Tensor, cond: object) -> torch.Tensor:
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return d["out.F_x"]

    head = LogVarHead(128)
    head.load_state_dict({"freqs": d["state.logvar_fourier.freqs"], "phases": d["state.logvar_fourier.phases"],
                          "weight": d["state.logvar_linear.weight"]})
    den = EDM2Denoiser(net, sigma_data=0.5, logvar_head=head).eval()
    sigma, dst = d["in.sigma"], d["in.dst"]
    D, logvar = den(dst, sigma, None, return_logvar=True)
    torch.testing.assert_close(D, d["out.D_x"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logvar, d["out.logvar"], rtol=0, atol=1e-5)
    torch.testing.assert_close(seen["x_in"], dst / (sigma**2 + 0.25).sqrt().reshape(-1, 1, 1, 1))
    torch.testing.assert_close(seen["c_noise"], sigma.log() / 4)
    assert torch.equal(den(dst, sigma), D)


@given(st.floats(min_value=1e-3, max_value=1e3), st.floats(min_value=0.1, max_value=2.0))
@settings(max_examples=50, deadline=None)
def test_edm_coefficient_identities(sigma: float, sd: float) -> None:
    s = torch.tensor(sigma, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(s, sd)
    # the training target F* = (y − c_skip·x)/c_out has unit variance (Karras et al. 2022, App. B.6)
    assert float(((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2) == pytest.approx(1.0)
    assert float(c_in**2 * (sigma**2 + sd**2)) == pytest.approx(1.0)
    assert float(c_noise) == pytest.approx(math.log(sigma) / 4)


def test_edm_zero_network_is_optimal_for_gaussian_data() -> None:
    """With F = 0, D(x; σ) = c_skip·x = σ_d²/(σ² + σ_d²)·x: the posterior mean for x0 ~ N(0, σ_d²)."""
    den = EDMDenoiser(lambda x, c, cond: torch.zeros_like(x), sigma_data=0.7)
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.5, 2.0, 50.0])
    expected = (0.49 / (sigma**2 + 0.49)).reshape(-1, 1, 1, 1) * x
    torch.testing.assert_close(den(x, sigma), expected)
    assert den.sigma_min == 0.002 and den.sigma_max == 80.0 and den.sigmas is None


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("kind", ["discrete-t", "discrete-gamma", "cosine-logsnr"])
def test_oracle_network_recovers_x0(prediction: str, kind: str) -> None:
    """A network returning the exact training target makes every adapter return x0 exactly, and
    receives the noise input the training helper produced: train and sample sides agree."""
    if kind == "cosine-logsnr":
        schedule, nc = CosineLogSNR(), "logsnr"
    else:
        schedule, nc = DiscreteSchedule.make("cosine", 1000), kind.split("-")[1]
    x0 = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    tr = vp_training_inputs(x0, schedule, noise_cond=nc, prediction=prediction,  # type: ignore[arg-type]
                            generator=torch.Generator().manual_seed(4))

    def net(x_in: torch.Tensor, noise_input: torch.Tensor, cond: object) -> torch.Tensor:
        torch.testing.assert_close(x_in, tr.x_in, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(noise_input, tr.noise_input, rtol=1e-4, atol=1e-3)
        return tr.target

    den = VPDenoiser(net, schedule, prediction=prediction, noise_cond=nc)  # type: ignore[arg-type]
    x_sigma = tr.x_in * (1 + tr.sigma**2).sqrt().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(den(x_sigma, tr.sigma), x0, rtol=1e-4, atol=1e-4 * (1 + tr.sigma.max().item()))


def test_x0_adapter_clip_range_and_noise_inputs() -> None:
    s = DiscreteSchedule.make("linear", 1000)
    den = X0Denoiser(lambda x, t, c: 3 * torch.ones_like(x), s, clip_x0=(-2.0, 2.0))
    assert den(torch.zeros(2, 3), 1.0).max() == 2.0
    assert den.sigmas is not None and den.sigmas.shape == (1000,) and den.sigma_max == pytest.approx(s.sigma_max)
    got = {}
    for nc in ["gamma", "logsnr", "sigma", "log_sigma", lambda sg: sg * 10]:
        d = EpsDenoiser(lambda x, n, c: got.__setitem__("n", n) or torch.zeros_like(x), s, noise_cond=nc)
        d(torch.zeros(1, 2), 2.0)
        got[str(nc)] = float(got["n"])
    assert got["gamma"] == pytest.approx(0.2) and got["logsnr"] == pytest.approx(-2 * math.log(2))
    assert got["sigma"] == 2.0 and got["log_sigma"] == pytest.approx(math.log(2))
    assert [v for k, v in got.items() if k.startswith("<function")] == [pytest.approx(20.0)]
    cont = EpsDenoiser(lambda x, n, c: torch.zeros_like(x), noise_cond="sigma", sigma_min=0.01, sigma_max=50.0)
    assert cont.sigmas is None and cont.sigma_max == 50.0


def test_sigma_forms_zero_sigma_and_errors() -> None:
    x = torch.randn(3, 2, 4)
    assert broadcast_sigma(0.5, x).shape == (3,)
    assert broadcast_sigma(torch.tensor(0.5), x).tolist() == [0.5] * 3
    assert broadcast_sigma(torch.ones(3, 1), x).shape == (3,)
    den = EDMDenoiser(lambda x, c, cond: torch.full_like(x, float("nan")) if torch.isinf(c).any() else x)
    out = den(x, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(out[0], x[0]) and torch.isfinite(out).all()
    eps = EpsDenoiser(lambda xi, n, c: torch.ones_like(xi), CosineLogSNR(), noise_cond="logsnr")
    assert torch.equal(eps(x, 0.0), x)
    with pytest.raises(ValueError, match=r"\(B,\) tensor with B = x.shape\[0\] = 3"):
        den(x, torch.ones(2))
    with pytest.raises(ValueError, match=r"sigma must be >= 0"):
        den(x, torch.tensor([0.1, -0.1, 1.0]))
    with pytest.raises(ValueError, match="network output has shape"):
        EDMDenoiser(lambda x, c, cond: x[:, :1])(x, 1.0)
    with pytest.raises(ValueError, match="needs a schedule"):
        EpsDenoiser(lambda *a: a[0])
    with pytest.raises(ValueError, match="give sigma_min and sigma_max"):
        EpsDenoiser(lambda *a: a[0], noise_cond="gamma")
    with pytest.raises(ValueError, match="noise_cond must be"):
        EpsDenoiser(lambda *a: a[0], CosineLogSNR(), noise_cond="time")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        EDMDenoiser(lambda *a: a[0], sigma_data=0.0)


def test_logvar_head_train_mode_normalises_weight_and_modules_move() -> None:
    head = LogVarHead(16, generator=torch.Generator().manual_seed(0))
    c = torch.linspace(-2, 2, 5)
    head.eval()
    before = head(c)
    assert head.weight.detach().pow(2).mean().sqrt() != pytest.approx(1.0, abs=1e-2)  # stored raw in eval
    head.train()
    after = head(c)
    rms = head.weight.detach().pow(2).mean().sqrt()
    assert rms == pytest.approx(1.0, abs=1e-3)
    torch.testing.assert_close(after, before, rtol=1e-3, atol=1e-4)
    den = EDM2Denoiser(lambda x, cn, cond: x, logvar_channels=16)
    assert set(dict(den.named_buffers())) == {"logvar_head.freqs", "logvar_head.phases"}
    D, lv = den(torch.randn(2, 3, 4, 4), torch.tensor([0.5, 1.0]), return_logvar=True)
    assert D.shape == (2, 3, 4, 4) and lv.shape == (2, 1, 1, 1)
    lv.sum().backward()
    assert den.logvar_head.weight.grad is not None
