"""Samplers in σ-space: k-diffusion and diffusers fixtures, convergence order, statistics of the
final samples on an exact Gaussian denoiser, per-sample seeding, NFE, callbacks and bad input."""

from __future__ import annotations

import decimal
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vantage.diffusion.noise import per_sample_generators, randn, randn_like
from vantage.diffusion.samplers import (
    SAMPLERS,
    CountingDenoiser,
    ancestral_sigmas,
    check_sigmas,
    get_sampler,
    lms_coefficients,
    sample_ddim,
    sample_ddpm,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lms,
)

REF = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
KD_SAMPLERS = ["euler", "heun", "dpm_2", "dpmpp_2m", "lms"]


def _load(name: str) -> dict[str, torch.Tensor]:
    if not REF.is_dir():
        pytest.skip(f"reference fixtures not found at {REF}")
    from safetensors.torch import load_file

    return load_file(str(REF / f"{name}.safetensors"))


# --------------------------------------------------------------------------- analytic denoisers
def mixture_denoiser(means: torch.Tensor, std: float = 0.3):
    """Exact E[x0 | x0 + σn = x] for an equal-weight mixture of isotropic Gaussians N(μ_k, std²I).

    r_k = softmax_k(−|x − μ_k|²/(2(s²+σ²)) − d/2·log(s²+σ²)), D = Σ_k r_k (μ_k + s²/(s²+σ²)(x − μ_k)).
    x: (B, d), sigma: (B,), means: (K, d).
    """

    def D(x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        var = std**2 + sigma.to(x.dtype).reshape(-1, 1, 1) ** 2
        mu = means.to(x.dtype)[None]
        diff = x[:, None, :] - mu
        logits = -(diff**2).sum(-1, keepdim=True) / (2 * var) - (x.shape[-1] / 2) * torch.log(var)
        return (torch.softmax(logits, dim=1) * (mu + (std**2 / var) * diff)).sum(1)

    return D


def gaussian_denoiser(mu: torch.Tensor | float, s: float):
    """Exact denoiser of N(μ, s²I): D = μ + s²/(s²+σ²)(x − μ)."""

    def D(x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        sig2 = sigma.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1)) ** 2
        return mu + s**2 / (s**2 + sig2) * (x - mu)

    return D


def karras(n: int, smin: float = 0.002, smax: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


# --------------------------------------------------------------------------- k-diffusion fixture
def _kd_setup(prec: str):
    F = _load("kdiffusion_samplers")
    meta = json.loads((REF / "kdiffusion_samplers.json").read_text())
    if prec == "f64":  # the reference ran these in float64 (means drawn in float64, x_T = 80·unit)
        means = torch.tensor(meta["data"]["means"], dtype=torch.float64)
        x_T = 80 * F["x_T_unit"].double()
    else:
        means, x_T = F["means"], 80 * F["x_T_unit"]
    assert torch.equal(x_T.float(), F[f"{prec}.x_T"])
    dtype = torch.float64 if prec == "f64" else torch.float32
    return F, mixture_denoiser(means, meta["data"]["component_std"]), x_T, F["sigmas_karras_n12"].to(dtype), meta


def _assert_f64_matches(ours: torch.Tensor, ref32: torch.Tensor) -> None:
    """The f64 runs are stored as float32, so a float64 result can only be checked to the storage
    precision: |ours − ref| ≤ 1 float32 ulp of ref (relative ≈ 6e-8…1.2e-7)."""
    ulp = (torch.nextafter(ref32.abs(), torch.tensor(math.inf)) - ref32.abs()).double()
    err = (ours - ref32.double()).abs()
    assert (err <= ulp).all(), f"max err {err.max().item():.3g}, max err/ulp {(err / ulp).max().item():.3g}"


@pytest.mark.parametrize("prec", ["f64", "f32"])
def test_mixture_denoiser_matches_fixture_check(prec):
    F, D, x_T, _, _ = _kd_setup(prec)
    for k, s in enumerate(F[f"{prec}.denoiser_check.sigmas"].tolist()):
        out = D((x_T / 80) * 2, torch.full((16,), s, dtype=x_T.dtype))
        if prec == "f64":
            _assert_f64_matches(out, F[f"{prec}.denoiser_check.D"][k])
        else:
            torch.testing.assert_close(out, F[f"{prec}.denoiser_check.D"][k], rtol=0, atol=1e-5)


@pytest.mark.parametrize("prec", ["f64", "f32"])
@pytest.mark.parametrize("name", KD_SAMPLERS)
def test_kdiffusion_fixture(name, prec):
    F, D, x_T, sigmas, meta = _kd_setup(prec)
    counter = CountingDenoiser(D)
    traj_x, traj_d = [], []

    def cb(info):
        traj_x.append(info["x"])
        traj_d.append(info["denoised"])

    out = get_sampler(name)(counter, x_T.clone(), sigmas, callback=cb, **meta["sampler_kwargs"][name])
    assert counter.calls == meta["denoiser_calls"][name] and counter.samples == 16 * counter.calls
    got = {"final": out, "traj_x": torch.stack(traj_x), "traj_denoised": torch.stack(traj_d)}
    for key, ours in got.items():
        ref = F[f"{prec}.{name}.{key}"]
        if prec == "f64":
            _assert_f64_matches(ours, ref)
        else:  # float32 end to end; values up to ~240 on the trajectory, ~2 at the end
            torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-4)


def test_lms_coefficients_closed_form_vs_quad():
    from scipy import integrate

    sig = karras(12).tolist()
    for i in range(3, 11):
        for order in (1, 2, 3, 4):
            ours = lms_coefficients(sig, i, order)

            def basis(tau, j, order=order, i=i):
                return math.prod((tau - sig[i - k]) / (sig[i - j] - sig[i - k]) for k in range(order) if k != j)

            ref = [integrate.quad(basis, sig[i], sig[i + 1], args=(j,), epsabs=0, epsrel=1e-13)[0]
                   for j in range(order)]  # fmt: skip
            assert ours == pytest.approx(ref, rel=1e-11, abs=1e-13)
            assert sum(ours) == pytest.approx(sig[i + 1] - sig[i], rel=1e-12)  # Lagrange basis sums to 1


# --------------------------------------------------------------------------- diffusers fixtures
def _dummy_net(x_in: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
    """The diffusers fixture's model: 0.1·x_t·cos(t/100) (t exact: σ's come from the same table)."""
    return 0.1 * x_in * torch.cos(t / 100).to(x_in.dtype).reshape(-1, *[1] * (x_in.ndim - 1))


def _vp_denoiser(F, sched: str, pred: str):
    from vantage.diffusion.denoisers import EpsDenoiser, VDenoiser
    from vantage.diffusion.schedules import DiscreteSchedule

    schedule = DiscreteSchedule(F[f"{sched}.alphas_cumprod"])  # diffusers' float32 ᾱ table
    return (EpsDenoiser if pred == "epsilon" else VDenoiser)(_dummy_net, schedule), schedule


DDIM_RUNS = [
    (sched, pred, clip, "leading")
    for sched in ("linear", "cos")
    for pred in ("epsilon", "v_prediction")
    for clip in (0, 1)
] + [("linear", "epsilon", 1, "trailing")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sched,pred,clip,spacing", DDIM_RUNS)
def test_ddim_matches_diffusers(sched, pred, clip, spacing, dtype):
    from vantage.diffusion.schedules import discrete_sigmas

    F = _load("diffusers_schedulers")
    key = f"ddim.{sched}.{pred}.clip{clip}" + (".trailing" if spacing == "trailing" else "")
    D, schedule = _vp_denoiser(F, sched, pred)
    assert torch.equal(schedule.timesteps(20, spacing), F[f"{key}.timesteps"].long())
    sigmas = discrete_sigmas(schedule, 20, spacing, set_alpha_to_one=True, dtype=torch.float64)
    x = F["x_init"].to(dtype) * math.sqrt(1 + sigmas[0].item() ** 2)  # x_t → x_σ
    first = []
    out = sample_ddim(D, x, sigmas, eta=0.0, clip_denoised=1.0 if clip else None,
                      callback=lambda info: first.append(info["denoised"]))  # fmt: skip
    tol = dict(rtol=1e-5, atol=1e-5)  # README: float64 vs float32 loops differ by <= 7e-7 relative
    torch.testing.assert_close(out, F[f"{key}.final"].to(dtype), **tol)  # at σ = 0, x_σ = x_t
    torch.testing.assert_close(first[0], F[f"{key}.first_pred_x0"].to(dtype), **tol)
    if clip and pred == "epsilon":  # diffusers' direction uses the unclipped ε; ε from the clipped x0 differs
        other = sample_ddim(D, x, sigmas, clip_denoised=1.0, eps_from_clipped=True)
        assert (other - F[f"{key}.final"].to(dtype)).abs().max() > 1e-2


@pytest.mark.parametrize("sched,pred,clip", [r[:3] for r in DDIM_RUNS[:-1]])
def test_ddpm_posterior_matches_diffusers(sched, pred, clip):
    F = _load("diffusers_schedulers")
    key = f"ddpm.{sched}.{pred}.clip{clip}"
    D, schedule = _vp_denoiser(F, sched, pred)
    for k, t in enumerate(F[f"{key}.step_t"].long().tolist()):
        s = schedule.sigmas[t].item()
        s_prev = schedule.sigmas[t - 50].item() if t >= 50 else 0.0  # 20 of 1000 steps: t → t − 50
        x = F["x_init"].double() * math.sqrt(1 + s**2)
        seen: dict[int, torch.Tensor] = {}
        out = sample_ddpm(D, x, [s, s_prev, 0.0] if s_prev > 0 else [s, 0.0], clip_denoised=1.0 if clip else None,
                          generator=torch.Generator().manual_seed(7),
                          callback=lambda info, seen=seen: seen.setdefault(info["i"], info["x"]))  # fmt: skip
        x1 = seen.get(1, out) / math.sqrt(1 + s_prev**2)  # after one step, back in x_t units
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        mean, std = F[f"{key}.posterior_mean"][k].double(), F[f"{key}.posterior_std"][k].item()
        torch.testing.assert_close(x1, mean + std * z, rtol=1e-5, atol=1e-5)
        assert ancestral_sigmas(s, s_prev, 1.0)[1] / math.sqrt(1 + s_prev**2) == pytest.approx(std, rel=1e-6, abs=1e-7)
    if clip:  # the fixture really depends on clipping, so the test above can tell
        assert not torch.allclose(F[f"{key}.posterior_mean"], F[key.replace("clip1", "clip0") + ".posterior_mean"])


# --------------------------------------------------------------------------- identities
@settings(max_examples=200, deadline=None)
@given(
    s=st.floats(1e-3, 1e3), frac=st.floats(1e-3, 0.999), eta=st.floats(0.0, 1.0),
)
def test_ancestral_sigmas_is_ddim_eq16(s, frac, eta):
    s_next = s * frac
    down, up = ancestral_sigmas(s, s_next, eta)
    assert 0 <= up <= s_next and 0 <= down <= s_next
    assert down**2 + up**2 == pytest.approx(s_next**2, rel=1e-9)
    with decimal.localcontext(decimal.Context(prec=60)):  # Eq. 16 cancels badly in floats: use 60 digits
        S, Sn, E = (decimal.Decimal(v) for v in (s, s_next, eta))
        a, a_prev = 1 / (1 + S * S), 1 / (1 + Sn * Sn)  # ᾱ_t, ᾱ_{t-1}
        sigma_t = E * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).sqrt()  # Song et al. 2021, Eq. 16
        expected = float(sigma_t / a_prev.sqrt())
    assert up == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert ancestral_sigmas(s, s_next, 0.0) == (s_next, 0.0) and ancestral_sigmas(s, 0.0, eta) == (0.0, 0.0)


def test_ddim_eta0_is_euler_and_eta1_is_ddpm():
    D = mixture_denoiser(torch.randn(4, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    sig = karras(15)
    x = randn((6, 8), per_sample_generators(range(6)), dtype=torch.float64) * sig[0]
    assert torch.equal(sample_ddim(D, x, sig), sample_euler(D, x, sig))
    runs = [
        f(D, x, sig, generator=per_sample_generators(range(100, 106)))
        for f in (lambda *a, **k: sample_ddim(*a, eta=1.0, **k), sample_ddpm, sample_euler_ancestral)
    ]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_convergence_order():
    """Error vs the exact probability-flow ODE solution for a Gaussian (x_σ − μ scales as sqrt(s²+σ²))."""
    mu, s, smax, smin = 0.7, 0.5, 10.0, 1e-4
    D = gaussian_denoiser(mu, s)
    x = torch.tensor([[2.0], [-1.5]], dtype=torch.float64)
    exact = mu + s / math.sqrt(s**2 + smax**2) * (x - mu)

    def err(name: str, n: int) -> float:
        sig = torch.cat([torch.linspace(math.log(smax), math.log(smin), n, dtype=torch.float64).exp(), torch.zeros(1)])
        return (get_sampler(name)(D, x, sig) - exact).abs().max().item()

    expected = {"euler": (1.8, 2.2), "ddim": (1.8, 2.2), "heun": (3.5, 4.7), "dpm_2": (3.5, 4.7),
                "dpmpp_2m": (3.5, 4.7), "lms": (6.0, 17.0)}  # fmt: skip
    for name, (lo, hi) in expected.items():
        ratio = err(name, 32) / err(name, 64)
        assert lo < ratio < hi, (name, ratio)


# --------------------------------------------------------------------------- statistics
STAT_CASES = [
    ("euler", {}, 1000), ("euler", {"s_churn": 20.0}, 1000), ("ddim", {"eta": 0.5}, 1000), ("ddim", {"eta": 1.0}, 1000),
    ("euler_ancestral", {}, 1000), ("ddpm", {}, 1000), ("heun", {}, 60), ("heun", {"s_churn": 30.0}, 60),
    ("dpm_2", {}, 60), ("dpmpp_2m", {}, 60), ("lms", {}, 60),
]


def _gaussian_run(name: str, kw: dict, steps: int, n: int = 40000, seed: int = 0):
    mu, s = torch.tensor([0.7, -1.2]), 0.5
    sig = karras(steps).float()
    g = torch.Generator().manual_seed(seed)
    x = mu + math.sqrt(s**2 + sig[0].item() ** 2) * torch.randn(n, 2, generator=g)  # exact marginal at σ_max
    out = get_sampler(name)(gaussian_denoiser(mu, s), x, sig, generator=torch.Generator().manual_seed(seed + 1), **kw)
    return out, mu, s, n


def _gaussian_ok(out, mu, s, n) -> bool:
    """Mean within 5 standard errors; variance within 5 SE (sqrt(2/n)) + 2% for discretisation
    (first-order samplers at 1000 Karras steps are off by about 1.2% in variance, second-order at 60
    steps by under 1%)."""
    mean_ok = ((out.mean(0) - mu).abs() < 5 * s / math.sqrt(n)).all()
    var_ok = ((out.var(0) / s**2 - 1).abs() < 5 * math.sqrt(2 / n) + 0.02).all()
    return bool(mean_ok and var_ok)


@pytest.mark.parametrize("name,kw,steps", STAT_CASES)
def test_final_samples_have_gaussian_mean_and_variance(name, kw, steps):
    assert _gaussian_ok(*_gaussian_run(name, kw, steps)), name


def test_gaussian_check_can_fail():
    """Negative controls: dropping the ancestral noise, or a 10% variance error, fail the same check."""
    assert not _gaussian_ok(*_gaussian_run("euler_ancestral", {"s_noise": 0.0}, 1000))
    out, mu, s, n = _gaussian_run("heun", {}, 60)
    assert not _gaussian_ok(mu + (out - mu) * 1.05, mu, s, n)  # variance off by 10%


# --------------------------------------------------------------------------- randomness
@pytest.mark.parametrize(
    "name,kw", [("euler_ancestral", {}), ("ddpm", {}), ("euler", {"s_churn": 5.0}), ("heun", {"s_churn": 5.0}),
                ("dpm_2", {"s_churn": 5.0}), ("ddim", {"eta": 0.3})],
)  # fmt: skip
def test_per_sample_seeding_is_batch_independent(name, kw):
    D = gaussian_denoiser(0.3, 0.6)
    sig = karras(10, smax=20.0).float()
    def run(seed_list):
        g = per_sample_generators(seed_list)
        return get_sampler(name)(D, randn((len(seed_list), 3, 5), g) * sig[0], sig, generator=g, **kw)

    seeds = [11, 12, 13, 14]
    batch = run(seeds)
    for i, seed in enumerate(seeds):  # alone, in a batch of 4, in another order: the same sample
        assert torch.equal(run([seed])[0], batch[i])
    assert torch.equal(run(seeds[::-1]), batch.flip(0))
    assert torch.equal(run(seeds[:2] + [99]), torch.cat([batch[:2], run([99])]))
    other = run([1, 2, 3, 4])
    assert not torch.allclose(other, batch)


def test_noise_helpers():
    g = torch.Generator().manual_seed(5)
    a = randn((3, 4), g)
    assert torch.equal(a, torch.randn(3, 4, generator=torch.Generator().manual_seed(5)))
    assert randn_like(a, None).shape == (3, 4)
    assert randn_like(a.double(), per_sample_generators([1, 2, 3])).dtype == torch.float64
    assert len(per_sample_generators(torch.arange(3))) == 3
    with pytest.raises(ValueError, match="one generator per sample"):
        randn((3, 4), per_sample_generators([1, 2]))
    with pytest.raises(TypeError, match="integers"):
        per_sample_generators([1.5])
    with pytest.raises(TypeError, match="torch.Generator"):
        randn((2,), [torch.Generator(), 3])


# --------------------------------------------------------------------------- NFE, callback, dtype
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nfe_callback_and_sigma_shape(name):
    n, B = 7, 3

    def D(x, sigma, cond=None):
        assert sigma.shape == (B,) and sigma.dtype == torch.float32 and cond == "c"
        return x * 0.5

    counter = CountingDenoiser(D)
    infos = []
    out = get_sampler(name)(counter, torch.randn(B, 2, 4), karras(n).float(), "c", callback=infos.append,
                            generator=torch.Generator().manual_seed(0), progress=True)  # fmt: skip
    assert out.shape == (B, 2, 4) and torch.isfinite(out).all()
    assert counter.calls == (2 * n - 1 if name in ("heun", "dpm_2") else n) and counter.samples == B * counter.calls
    assert [info["i"] for info in infos] == list(range(n))
    assert set(infos[0]) == {"i", "x", "sigma", "sigma_hat", "sigma_next", "denoised"}
    assert infos[-1]["sigma_next"] == 0.0 and isinstance(infos[0]["sigma"], float)
    counter.reset()
    assert counter.calls == counter.samples == 0


def test_sigma_dtype_follows_x():
    got = []

    def D(x, sigma, cond=None):
        got.append(sigma.dtype)
        return x

    sample_euler(D, torch.ones(2, 3, dtype=torch.float64), [1.0, 0.0])
    sample_euler(D, torch.ones(2, 3, dtype=torch.bfloat16), [1.0, 0.0])
    assert got == [torch.float64, torch.float32]


# --------------------------------------------------------------------------- bad input
def _ok(x, sigma, cond=None):
    return x * 0


@pytest.mark.parametrize(
    "sigmas,match",
    [
        ([], "empty"),
        ([0.0], "at least 2"),
        ([[1.0, 0.0]], "1-D"),
        ([-1.0, 0.0], r"sigmas\[0\] must be > 0"),
        ([0.0, 0.0], r"sigmas\[0\] must be > 0"),
        ([2.0, 1.0], "end with 0"),
        ([1.0, 2.0, 0.0], "strictly decreasing"),
        ([2.0, 2.0, 0.0], "strictly decreasing"),
        ([float("nan"), 0.0], "finite"),
        ([float("inf"), 1.0, 0.0], "finite"),
    ],
)
def test_bad_sigmas(sigmas, match):
    with pytest.raises(ValueError, match=match):
        check_sigmas(sigmas)
    for name in SAMPLERS:
        with pytest.raises(ValueError, match=match):
            get_sampler(name)(_ok, torch.zeros(2, 3), torch.tensor(sigmas))


def test_bad_arguments():
    x, sig = torch.zeros(2, 3), [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="floating-point"):
        sample_euler(_ok, torch.zeros(2, 3, dtype=torch.long), sig)
    with pytest.raises(TypeError, match="torch.Tensor"):
        sample_euler(_ok, [[0.0]], sig)
    with pytest.raises(ValueError, match=r"shaped like x \(2, 3\), got \(2, 1\)"):
        sample_heun(lambda x, s, c: x[:, :1], x, sig)
    with pytest.raises(ValueError, match="2 samples"):
        sample_euler_ancestral(_ok, x, sig, generator=per_sample_generators([1, 2, 3]))
    with pytest.raises(TypeError, match="generator must be"):
        sample_euler(_ok, x, sig, generator=7)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(_ok, x, sig, eta=-1.0)
    with pytest.raises(ValueError, match="clip_denoised"):
        sample_ddim(_ok, x, sig, clip_denoised=0.0)
    with pytest.raises(ValueError, match="s_churn"):
        sample_euler(_ok, x, sig, s_churn=-1.0)
    with pytest.raises(ValueError, match="s_tmin"):
        sample_heun(_ok, x, sig, s_tmin=2.0, s_tmax=1.0)
    with pytest.raises(ValueError, match="order"):
        sample_lms(_ok, x, sig, order=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        sample_euler(_ok, x, sig, eta=0.5)
    with pytest.raises(KeyError, match="available: ddim, ddpm, dpm_2, dpmpp_2m, euler, euler_ancestral, heun, lms"):
        get_sampler("euler_a")
    assert get_sampler("DPMPP-2M") is SAMPLERS["dpmpp_2m"]
