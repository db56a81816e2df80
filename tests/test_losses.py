"""Losses: per-sample shapes, weights, min-SNR values, the ViewFusion training draw, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vantage.diffusion.denoisers import EDM2Denoiser, EDMDenoiser
from vantage.diffusion.losses import (
    add_noise,
    edm2_loss,
    edm2_training_loss,
    edm_loss,
    edm_training_loss,
    edm_weight,
    eps_mse_loss,
    min_snr_weight,
    per_sample_mse,
    vp_training_inputs,
)
from vantage.diffusion.schedules import CosineLogSNR, DiscreteSchedule

REF = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_eps_mse_is_per_sample_mean_of_squares() -> None:
    a = torch.zeros(3, 2, 2)
    b = torch.zeros(3, 2, 2)
    b[1] = 2.0
    b[2, 0, 0] = 4.0
    loss = eps_mse_loss(a, b)
    assert loss.shape == (3,) and loss.tolist() == [0.0, 4.0, 4.0]
    assert eps_mse_loss(a, b, weight=torch.tensor([1.0, 0.5, 0.25])).tolist() == [0.0, 2.0, 1.0]
    # matches F.mse_loss when reduced (the seeds' reduction), unlike an unsquared global norm
    assert float(loss.mean()) == pytest.approx(float(torch.nn.functional.mse_loss(a, b)))
    assert float(loss.mean()) != pytest.approx(float((a - b).norm()))
    with pytest.raises(ValueError, match="shapes differ"):
        eps_mse_loss(a, b[:2])
    with pytest.raises(ValueError, match="weight must be a number or"):
        eps_mse_loss(a, b, weight=torch.ones(2))


def test_edm_loss_weight_and_value() -> None:
    sigma = torch.tensor([0.1, 0.5, 3.0])
    lam = edm_weight(sigma, 0.5)
    torch.testing.assert_close(lam, (sigma**2 + 0.25) / (sigma * 0.5) ** 2)
    # λ = 1 / c_out²: with D = x0 + c_out·δ the weighted loss is mean(δ²)
    c_out = sigma * 0.5 / (sigma**2 + 0.25).sqrt()
    x0 = torch.randn(3, 4, 4, generator=_g(0))
    delta = torch.randn(3, 4, 4, generator=_g(1))
    loss = edm_loss(x0 + c_out.reshape(-1, 1, 1) * delta, x0, sigma)
    torch.testing.assert_close(loss, per_sample_mse(delta, torch.zeros_like(delta)))


def test_edm2_loss_formula_and_optimal_logvar() -> None:
    sigma = torch.tensor([0.2, 1.0])
    x0 = torch.zeros(2, 8)
    D = torch.full((2, 8), 0.3)
    u = torch.tensor([0.1, -0.4])
    lam = edm_weight(sigma)
    expected = lam / u.exp() * 0.09 + u
    torch.testing.assert_close(edm2_loss(D, x0, sigma, u), expected)
    torch.testing.assert_close(edm2_loss(D, x0, sigma, u.reshape(2, 1)), expected)
    # the loss is minimised in u at u* = ln(λ·mse): the head learns the log of the weighted error
    u_star = (lam * 0.09).log()
    best = edm2_loss(D, x0, sigma, u_star)
    for du in (-0.1, 0.1):
        assert (edm2_loss(D, x0, sigma, u_star + du) > best).all()
    torch.testing.assert_close(best, 1 + u_star)
    with pytest.raises(ValueError, match="one value per sample"):
        edm2_loss(D, x0, sigma, torch.zeros(3))


def test_min_snr_weights() -> None:
    sigma = torch.tensor([0.1, 1.0, 10.0])  # SNR = 100, 1, 0.01
    torch.testing.assert_close(min_snr_weight(sigma, 5.0), torch.tensor([0.05, 1.0, 1.0]))
    torch.testing.assert_close(min_snr_weight(sigma, 5.0, "x0"), torch.tensor([5.0, 1.0, 0.01]))
    torch.testing.assert_close(min_snr_weight(sigma, 5.0, "v"), torch.tensor([5 / 101, 0.5, 0.01 / 1.01]))
    assert min_snr_weight(torch.tensor([0.0]), 5.0).item() == 0.0
    with pytest.raises(ValueError, match="prediction must be"):
        min_snr_weight(sigma, 5.0, "score")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma must be > 0"):
        min_snr_weight(sigma, 0.0)


def test_add_noise_reproducible_and_shapes() -> None:
    x0 = torch.zeros(4, 3, 2, 2)
    xs, n = add_noise(x0, torch.tensor([0.0, 1.0, 2.0, 3.0]), generator=_g(5))
    xs2, n2 = add_noise(x0, torch.tensor([0.0, 1.0, 2.0, 3.0]), generator=_g(5))
    assert torch.equal(xs, xs2) and torch.equal(n, n2)
    torch.testing.assert_close(xs, n * torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(-1, 1, 1, 1))
    xs3, _ = add_noise(x0, 2.0, noise=torch.ones_like(x0))
    assert torch.equal(xs3, torch.full_like(x0, 2.0))
    with pytest.raises(ValueError, match="noise has shape"):
        add_noise(x0, 1.0, noise=torch.ones(4, 3))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        add_noise(x0, -1.0)


def test_vp_training_inputs_reproduce_viewfusion_draw() -> None:
    if not REF.is_dir():
        pytest.skip(f"reference fixtures not found at {REF}")
    from safetensors.torch import load_file

    d = load_file(str(REF / "viewfusion_unet.safetensors"))
    s = DiscreteSchedule.make("linear", 2000, 1e-6, 1e-2)
    tr = vp_training_inputs(d["in.y_0"], s, noise_cond="gamma", generator=_g(42), noise=d["in.noise"])
    torch.testing.assert_close(tr.noise_input, d["in.gamma"].reshape(-1), rtol=0, atol=1e-7)
    torch.testing.assert_close(tr.x_in, d["in.y_noisy"], rtol=0, atol=1e-6)
    assert torch.equal(tr.target, d["in.noise"])
    # the seed's loss on the composed prediction, per sample then averaged
    loss = eps_mse_loss(d["out.noise_hat"], tr.target).mean()
    assert float(loss) == pytest.approx(float(d["out.loss"]), rel=1e-5)


def test_vp_training_inputs_kinds() -> None:
    x0 = torch.rand(5, 3, 4, 4, generator=_g(0)) * 2 - 1
    s = DiscreteSchedule.make("linear", 1000)
    tr = vp_training_inputs(x0, s, generator=_g(1))
    assert tr.t.dtype == torch.int64 and torch.equal(tr.noise_input, tr.t.float())
    torch.testing.assert_close(tr.alpha_bar, s.alphas_cumprod[tr.t].float())
    torch.testing.assert_close(tr.sigma, s.sigmas[tr.t].float())
    tr_v = vp_training_inputs(x0, s, prediction="v", generator=_g(1))
    a = tr.alpha_bar.sqrt().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(tr_v.target, a * tr.noise - (1 - a * a).sqrt() * x0)
    c = vp_training_inputs(x0, CosineLogSNR(), noise_cond="logsnr", generator=_g(2))
    assert c.t.dtype == torch.float32 and (c.noise_input.abs() <= 20 + 1e-4).all()
    torch.testing.assert_close(c.noise_input, -2 * c.sigma.log(), rtol=1e-5, atol=1e-4)
    assert vp_training_inputs(x0, s, noise_cond="sigma", generator=_g(1)).noise_input.equal(tr.sigma)
    with pytest.raises(ValueError, match="noise_cond must be"):
        vp_training_inputs(x0, s, noise_cond="time")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DiscreteSchedule or CosineLogSNR"):
        vp_training_inputs(x0, "linear")  # type: ignore[arg-type]


def test_edm_training_losses_per_sample_and_seeded() -> None:
    x0 = torch.rand(6, 3, 4, 4, generator=_g(0)) * 2 - 1
    den = EDMDenoiser(lambda x, c, cond: torch.zeros_like(x))
    l1 = edm_training_loss(den, x0, generator=_g(7))
    assert l1.shape == (6,) and torch.equal(l1, edm_training_loss(den, x0, generator=_g(7)))
    den2 = EDM2Denoiser(lambda x, c, cond: torch.zeros_like(x), logvar_channels=8)
    l2 = edm2_training_loss(den2, x0, P_mean=-0.8, P_std=1.6, generator=_g(7))
    assert l2.shape == (6,) and torch.isfinite(l2).all()
    l2.mean().backward()
    assert den2.logvar_head.weight.grad is not None and math.isfinite(float(den2.logvar_head.weight.grad.sum()))
