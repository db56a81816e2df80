"""Guidance wrappers: CFG (x0 and ε forms, batched and separate calls, condition structures),
guidance by a second network, guidance intervals, a sampling check, and errors."""

from __future__ import annotations

import math

import pytest
import torch

from vantage.diffusion.guidance import CFGDenoiser, cfg_denoiser, guide_by_network
from vantage.diffusion.samplers import CountingDenoiser, sample_euler, sample_heun


def toy(x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
    """A conditional 'denoiser' whose output depends on x, σ and every part of cond.
    cond: tensor (B, C) or dict {"c": (B, C), "scale": (B,)}; C = x.shape[1]."""
    s = sigma.reshape(-1, *[1] * (x.ndim - 1)).to(x.dtype)
    if isinstance(cond, dict):
        c = cond["c"] * cond["scale"][:, None]
    elif isinstance(cond, (list, tuple)):
        c = cond[0] + cond[1]
    else:
        c = cond
    return x / (1 + s**2) + c.reshape(*c.shape, *[1] * (x.ndim - 2)) * torch.tanh(s)


def _data(B: int = 3, C: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, 4, 4, generator=g, dtype=torch.float64)
    sigma = torch.rand(B, generator=g, dtype=torch.float64) * 3 + 0.1
    cond = torch.randn(B, C, generator=g, dtype=torch.float64)
    return x, sigma, cond


def test_cfg_x0_form_formula_and_batching():
    x, sigma, cond = _data()
    null = torch.zeros(1, 2, dtype=torch.float64)
    d_c, d_u = toy(x, sigma, cond), toy(x, sigma, null.expand(3, 2))
    counter = CountingDenoiser(toy)
    out = cfg_denoiser(counter, 2.5, null)(x, sigma, cond)
    torch.testing.assert_close(out, d_u + 2.5 * (d_c - d_u), rtol=0, atol=1e-12)
    assert (counter.calls, counter.samples) == (1, 6)  # one call on 2B rows
    counter.reset()
    sep = cfg_denoiser(counter, 2.5, null, batched=False)(x, sigma, cond)
    assert (counter.calls, counter.samples) == (2, 6)
    torch.testing.assert_close(sep, out, rtol=0, atol=1e-12)


@pytest.mark.parametrize("w", [0.0, 0.5, 3.0, 7.5])
def test_cfg_eps_form_is_x0_form_with_w_plus_one(w):
    x, sigma, cond = _data(seed=1)
    null = torch.zeros(3, 2, dtype=torch.float64)
    s = sigma.reshape(-1, 1, 1, 1)
    eps_c, eps_u = (x - toy(x, sigma, cond)) / s, (x - toy(x, sigma, null)) / s
    literal = x - s * ((1 + w) * eps_c - w * eps_u)  # Ho & Salimans 2022: ε̃ = (1+w)ε_c − wε_u
    eps_form = cfg_denoiser(toy, w, null, form="eps")(x, sigma, cond)
    torch.testing.assert_close(eps_form, literal, rtol=0, atol=1e-10)
    torch.testing.assert_close(cfg_denoiser(toy, 1 + w, null, form="x0")(x, sigma, cond), eps_form, rtol=0, atol=1e-12)
    assert cfg_denoiser(toy, w, null, form="eps").scale == 1 + w


def test_cfg_dict_list_and_callable_conditions():
    x, sigma, cond = _data(seed=2)
    dcond = {"c": cond, "scale": torch.full((3,), 2.0, dtype=torch.float64)}
    dnull = {"c": torch.zeros(1, 2, dtype=torch.float64), "scale": torch.ones(1, dtype=torch.float64)}
    ref = cfg_denoiser(toy, 3.0, dnull, batched=False)(x, sigma, dcond)
    torch.testing.assert_close(cfg_denoiser(toy, 3.0, dnull)(x, sigma, dcond), ref, rtol=0, atol=1e-12)
    lcond, lnull = [cond, cond], [torch.zeros(3, 2, dtype=torch.float64), cond * 0.5]
    ref = cfg_denoiser(toy, 2.0, lnull, batched=False)(x, sigma, lcond)
    torch.testing.assert_close(cfg_denoiser(toy, 2.0, lnull)(x, sigma, lcond), ref, rtol=0, atol=1e-12)
    from_callable = cfg_denoiser(toy, 2.0, lambda c: torch.zeros_like(c))(x, sigma, cond)
    explicit = cfg_denoiser(toy, 2.0, torch.zeros(3, 2, dtype=torch.float64))(x, sigma, cond)
    torch.testing.assert_close(from_callable, explicit, rtol=0, atol=0)


def test_no_guidance_scale_is_one_call_and_needs_no_null():
    x, sigma, cond = _data()
    for den in (cfg_denoiser(CountingDenoiser(toy), 1.0, None), cfg_denoiser(CountingDenoiser(toy), 0.0, None, "eps")):
        assert torch.equal(den(x, sigma, cond), toy(x, sigma, cond))
        assert den.denoiser.calls == 1


def test_guidance_interval():
    x, _, cond = _data()
    null = torch.zeros(3, 2, dtype=torch.float64)
    counter = CountingDenoiser(toy)
    den = cfg_denoiser(counter, 4.0, null, interval=(0.5, 2.0))
    outside = torch.tensor([3.0, 3.0, 3.0], dtype=torch.float64)
    assert torch.equal(den(x, outside, cond), toy(x, outside, cond)) and counter.calls == 1
    mixed = torch.tensor([0.2, 1.0, 2.0], dtype=torch.float64)  # off, on, on (bounds inclusive)
    out = den(x, mixed, cond)
    guided = cfg_denoiser(toy, 4.0, null)(x, mixed, cond)
    torch.testing.assert_close(out[0], toy(x, mixed, cond)[0], rtol=0, atol=0)
    torch.testing.assert_close(out[1:], guided[1:], rtol=0, atol=0)
    assert not torch.allclose(out[0], guided[0])


def test_guide_by_network():
    x, sigma, cond = _data(seed=3)

    def weak(x, sigma, cond):
        return 0.8 * toy(x, sigma, cond)

    main, guide = CountingDenoiser(toy), CountingDenoiser(weak)
    out = guide_by_network(main, guide, 2.0)(x, sigma, cond)
    d, d_g = toy(x, sigma, cond), weak(x, sigma, cond)
    torch.testing.assert_close(out, d_g + 2.0 * (d - d_g), rtol=0, atol=1e-12)
    assert main.calls == guide.calls == 1
    assert torch.equal(guide_by_network(toy, guide, 1.0)(x, sigma, cond), d) and guide.calls == 1
    den = guide_by_network(toy, guide, 2.0, interval=(0.0, 0.05))
    assert torch.equal(den(x, sigma, cond), d) and guide.calls == 1  # σ ≥ 0.1: outside, guide skipped


def test_cfg_sampling_moves_the_mean():
    """Two classes with Gaussian data N(μ_c, s²), unconditional N(μ_u, s²) (same variance): guided
    sampling with weight w samples N(μ_u + w(μ_c − μ_u), s²) exactly in the ODE limit."""
    s, mu_c, mu_u = 0.4, 1.5, -0.5

    def D(x, sigma, cond):
        mu = cond.reshape(-1, 1).to(x.dtype)
        sig2 = sigma.reshape(-1, 1).to(x.dtype) ** 2
        return mu + s**2 / (s**2 + sig2) * (x - mu)

    n, w = 20000, 2.0
    sig = torch.cat([torch.linspace(math.log(40.0), math.log(0.002), 40).exp(), torch.zeros(1)])
    g = torch.Generator().manual_seed(0)
    target = mu_u + w * (mu_c - mu_u)
    x = target + math.sqrt(s**2 + sig[0].item() ** 2) * torch.randn(n, 1, generator=g)
    den = cfg_denoiser(D, w, torch.full((1,), mu_u))
    out = sample_heun(den, x, sig, torch.full((n,), mu_c))
    assert abs(out.mean().item() - target) < 5 * s / math.sqrt(n)
    assert abs(out.var().item() / s**2 - 1) < 5 * math.sqrt(2 / n) + 0.01
    plain = sample_euler(den, x[:10], sig, torch.full((10,), mu_c))
    assert plain.shape == (10, 1)


def test_wrapper_is_a_module_and_passes_sigma_range():
    class Net(torch.nn.Module):
        sigma_min, sigma_max = 0.002, 80.0

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x, sigma, cond=None):
            return self.lin(x)

    den = cfg_denoiser(Net(), 2.0, torch.zeros(1, 2))
    assert isinstance(den, CFGDenoiser) and isinstance(den, torch.nn.Module)
    assert (den.sigma_min, den.sigma_max) == (0.002, 80.0)
    den = den.double()
    assert den.denoiser.lin.weight.dtype == torch.float64
    assert cfg_denoiser(toy, 2.0, torch.zeros(1, 2)).sigma_min is None


def test_errors():
    x, sigma, cond = _data()
    with pytest.raises(ValueError, match="needs a null condition"):
        cfg_denoiser(toy, 3.0, None)
    with pytest.raises(ValueError, match="needs a null condition"):
        cfg_denoiser(toy, 1.0, None, form="eps")  # ε-form w = 1 is x0-form 2
    with pytest.raises(ValueError, match="form must be"):
        cfg_denoiser(toy, 2.0, cond, form="v")
    with pytest.raises(ValueError, match="finite number"):
        cfg_denoiser(toy, float("nan"), cond)
    with pytest.raises(ValueError, match="sigma_lo <= sigma_hi"):
        cfg_denoiser(toy, 2.0, cond, interval=(2.0, 1.0))
    with pytest.raises(ValueError, match="pair"):
        guide_by_network(toy, toy, 2.0, interval=(1.0,))
    with pytest.raises(TypeError, match="guide_denoiser must be callable"):
        guide_by_network(toy, None, 2.0)
    with pytest.raises(ValueError, match=r"null_cond shape \(3, 5\) does not match cond shape \(3, 2\)"):
        cfg_denoiser(toy, 2.0, torch.zeros(3, 5, dtype=torch.float64))(x, sigma, cond)
    with pytest.raises(ValueError, match=r"null_cond shape \(2, 2\)"):
        cfg_denoiser(toy, 2.0, torch.zeros(2, 2, dtype=torch.float64))(x, sigma, cond)
    with pytest.raises(ValueError, match="batch size 3"):
        cfg_denoiser(toy, 2.0, torch.zeros(1, 2))(x, sigma, cond[:2])
    with pytest.raises(ValueError, match="keys"):
        cfg_denoiser(toy, 2.0, {"c": cond})(x, sigma, {"c": cond, "scale": sigma})
    with pytest.raises(TypeError, match="batched=False"):
        cfg_denoiser(toy, 2.0, {"c": cond, "mode": "b"})(x, sigma, {"c": cond, "mode": "a"})
    with pytest.raises(ValueError, match=r"\(B,\) tensor with B = x.shape\[0\] = 3"):
        cfg_denoiser(toy, 2.0, cond)(x, sigma[:2], cond)
    with pytest.raises(ValueError, match=r"must return shape \(6, 2, 4, 4\)"):
        cfg_denoiser(lambda x, s, c: x[: x.shape[0] // 2], 2.0, cond)(x, sigma, cond)
    with pytest.raises(ValueError, match="guide_denoiser must return"):
        guide_by_network(toy, lambda x, s, c: x[:, :1], 2.0)(x, sigma, cond)
