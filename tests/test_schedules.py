"""Noise schedules: diffusers / k-diffusion / ViewFusion fixtures, conversions, σ ↔ t, bad inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import REF, load_reference

from vantage.diffusion.schedules import (
    CosineLogSNR,
    DiscreteSchedule,
    alpha_bar_from_logsnr,
    alpha_bar_from_sigma,
    cosine_betas,
    discrete_sigmas,
    exponential_sigmas,
    karras_sigmas,
    linear_sigmas,
    logsnr_from_alpha_bar,
    logsnr_from_sigma,
    make_betas,
    polyexponential_sigmas,
    sample_lognormal_sigma,
    sigma_from_alpha_bar,
    sigma_from_logsnr,
    spaced_timesteps,
)

_load = load_reference


# --- fixtures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "key"), [("linear", "linear"), ("cosine", "cos")])
def test_diffusers_betas_and_alphas_cumprod(name: str, key: str) -> None:
    d = _load("diffusers_schedulers")
    s = DiscreteSchedule.make(name, 1000)
    torch.testing.assert_close(s.betas.float(), d[f"{key}.betas"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.alphas_cumprod.float(), d[f"{key}.alphas_cumprod"], rtol=1e-5, atol=1e-6)


def test_diffusers_timesteps_leading_and_trailing() -> None:
    d = _load("diffusers_schedulers")
    runs = json.loads((REF / "diffusers_schedulers.json").read_text())["runs"]
    checked = 0
    for key, run in runs.items():
        cfg = run["config"]
        ts = spaced_timesteps(cfg["num_train_timesteps"], 20, cfg["timestep_spacing"], cfg["steps_offset"])
        expected = run.get("timesteps", run.get("timesteps_after_set_timesteps_20"))
        assert ts.tolist() == expected, key
        if f"{key}.timesteps" in d:
            assert ts.tolist() == d[f"{key}.timesteps"].long().tolist(), key
        checked += 1
    assert checked >= 9
    assert any(r["config"]["timestep_spacing"] == "trailing" for r in runs.values())


def test_spacings_small_cases() -> None:
    assert spaced_timesteps(10, 3, "leading").tolist() == [6, 3, 0]
    assert spaced_timesteps(10, 3, "leading", steps_offset=1).tolist() == [7, 4, 1]
    assert spaced_timesteps(10, 3, "trailing").tolist() == [9, 6, 2]  # round(10, 6.67, 3.33) - 1
    assert spaced_timesteps(10, 3, "linspace").tolist() == [9, 4, 0]  # round(0, 4.5, 9): 4.5 -> 4 (half-even)
    assert spaced_timesteps(1000, 3, "trailing").tolist() == [999, 666, 332]
    assert spaced_timesteps(5, 5, "leading").tolist() == [4, 3, 2, 1, 0]


def test_karras_and_exponential_match_kdiffusion() -> None:
    d = _load("kdiffusion_samplers")
    torch.testing.assert_close(karras_sigmas(12, 0.002, 80.0, rho=7.0), d["sigmas_karras_n12"], rtol=0, atol=1e-6)
    torch.testing.assert_close(karras_sigmas(10, 0.002, 80.0), d["sigmas_karras_n10"], rtol=0, atol=1e-6)
    torch.testing.assert_close(exponential_sigmas(10, 0.002, 80.0), d["sigmas_exponential_n10"], rtol=0, atol=1e-6)
    # polyexponential with rho = 1 is the exponential schedule
    torch.testing.assert_close(polyexponential_sigmas(10, 0.002, 80.0, rho=1.0), d["sigmas_exponential_n10"],
                               rtol=1e-6, atol=1e-6)


def test_viewfusion_schedule_and_sr3_gamma_draw() -> None:
    d = _load("viewfusion_unet")
    s = DiscreteSchedule.make("linear", 2000, 1e-6, 1e-2)
    torch.testing.assert_close(s.betas.float(), d["schedule.betas"], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(s.alphas_cumprod.float(), d["schedule.alphas_cumprod"], rtol=1e-6, atol=1e-7)
    # the reference draws t = randint(1, T) then u = rand from the global RNG seeded 42
    gamma, t = s.sample_sr3_gamma(2, torch.Generator().manual_seed(42))
    torch.testing.assert_close(gamma, d["in.gamma"].reshape(-1), rtol=0, atol=1e-7)
    a = s.alphas_cumprod
    assert ((a[t].float() <= gamma) & (gamma <= a[t - 1].float())).all()


# --- sequences --------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [karras_sigmas, exponential_sigmas, polyexponential_sigmas, linear_sigmas])
def test_sigma_sequences_shape_order_ends(fn) -> None:
    s = fn(7, 0.01, 10.0)
    assert s.shape == (8,) and s.dtype == torch.float32
    assert s[-1] == 0 and (s[:-1][1:] < s[:-1][:-1]).all()
    assert math.isclose(float(s[0]), 10.0, rel_tol=1e-5) and math.isclose(float(s[-2]), 0.01, rel_tol=1e-5)
    assert fn(7, 0.01, 10.0, append_zero=False).shape == (7,)
    assert fn(1, 0.01, 10.0).tolist() == pytest.approx([10.0, 0.0], rel=1e-6)


def test_discrete_sigmas_are_table_values_then_zero() -> None:
    s = DiscreteSchedule.make("linear", 1000)
    sig = discrete_sigmas(s, 20)
    ts = s.timesteps(20)
    assert sig.shape == (21,) and sig[-1] == 0
    torch.testing.assert_close(sig[:-1], s.sigmas[ts].float())
    sig1 = discrete_sigmas(s, 20, "trailing", set_alpha_to_one=False)
    assert sig1[-1] == pytest.approx(s.sigma_min) and sig1[0] == pytest.approx(s.sigma_max)
    # every step of a 1000-step chain: DDPM over all T steps
    assert torch.equal(discrete_sigmas(s, 1000, dtype=torch.float64)[:-1], s.sigmas.flip(0))


def test_lognormal_sigma_statistics_and_seed() -> None:
    a = sample_lognormal_sigma(20000, -0.8, 1.6, generator=torch.Generator().manual_seed(0))
    b = sample_lognormal_sigma(20000, -0.8, 1.6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and (a > 0).all()
    assert abs(a.log().mean().item() + 0.8) < 0.05 and abs(a.log().std().item() - 1.6) < 0.05


# --- conversions --------------------------------------------------------------------------------

sigmas_st = st.floats(min_value=1e-4, max_value=1e4, allow_nan=False)


@given(sigmas_st)
@settings(max_examples=60, deadline=None)
def test_conversion_round_trips(sigma: float) -> None:
    s = torch.tensor(sigma, dtype=torch.float64)
    ab, lam = alpha_bar_from_sigma(s), logsnr_from_sigma(s)
    assert math.isclose(float(sigma_from_alpha_bar(ab)), sigma, rel_tol=1e-6)
    assert math.isclose(float(sigma_from_logsnr(lam)), sigma, rel_tol=1e-9)
    assert math.isclose(float(alpha_bar_from_logsnr(lam)), float(ab), rel_tol=1e-9)
    assert math.isclose(float(logsnr_from_alpha_bar(ab)), float(lam), rel_tol=1e-6, abs_tol=1e-6)
    assert math.isclose(float(ab), 1 / (1 + sigma**2), rel_tol=1e-12)


@given(st.floats(min_value=0.0, max_value=999.0, allow_nan=False), st.sampled_from(["linear", "cosine"]))
@settings(max_examples=60, deadline=None)
def test_sigma_to_t_inverts_t_to_sigma(t: float, name: str) -> None:
    s = _SCHEDULES[name]
    tt = torch.tensor([t], dtype=torch.float64)
    assert float(s.sigma_to_t(s.t_to_sigma(tt))) == pytest.approx(t, abs=1e-6)


_SCHEDULES = {n: DiscreteSchedule.make(n, 1000) for n in ("linear", "cosine")}


def test_sigma_to_t_integers_quantize_and_clamp() -> None:
    s = _SCHEDULES["linear"]
    t = torch.arange(0, 1000, 37)
    sig = s.t_to_sigma(t)  # float32
    torch.testing.assert_close(sig, s.sigmas[t].float())
    torch.testing.assert_close(s.sigma_to_t(sig), t.float(), rtol=0, atol=2e-3)
    assert torch.equal(s.sigma_to_t(sig, quantize=True), t.float())
    # outside the table: clamped to the ends; σ = 0 maps to t = 0
    out = s.sigma_to_t(torch.tensor([0.0, s.sigma_min / 2, s.sigma_max * 2]))
    assert out.tolist() == [0.0, 0.0, 999.0]
    # mid-way in log σ between two steps is half a step
    mid = (s.sigmas[10].log() + s.sigmas[11].log()).mul(0.5).exp()
    assert float(s.sigma_to_t(mid)) == pytest.approx(10.5, abs=1e-9)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        s.t_to_sigma(torch.tensor([1000.0]))


@given(st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
@settings(max_examples=50, deadline=None)
def test_cosine_logsnr_round_trip(t: float) -> None:
    sch = CosineLogSNR()
    tt = torch.tensor(t, dtype=torch.float64)
    assert float(sch.sigma_to_t(sch.t_to_sigma(tt))) == pytest.approx(t, abs=1e-9)
    assert -20 - 1e-9 <= float(sch.logsnr(tt)) <= 20 + 1e-9


def test_cosine_logsnr_ends_and_plain_form() -> None:
    sch = CosineLogSNR()
    ends = sch.logsnr(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([20.0, -20.0], dtype=torch.float64))
    assert sch.sigma_min == pytest.approx(math.exp(-10)) and sch.sigma_max == pytest.approx(math.exp(10))
    # with the range wide open it is -2 log tan(pi t / 2)
    wide = CosineLogSNR(-200.0, 200.0)
    t = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    torch.testing.assert_close(wide.logsnr(t), -2 * torch.tan(math.pi * t / 2).log(), rtol=0, atol=1e-9)
    shifted = CosineLogSNR(shift=0.5)
    torch.testing.assert_close(shifted.logsnr(t), sch.logsnr(t) + 2 * math.log(0.5))
    u = sch.sample_t(1000, torch.Generator().manual_seed(0))
    assert u.shape == (1000,) and 0 <= u.min() and u.max() < 1


def test_cosine_betas_and_ddpm_schedule_properties() -> None:
    b = cosine_betas(1000)
    assert b.max() <= 0.999 and b.min() > 0
    s = DiscreteSchedule.make("scaled_linear", 1000)
    assert s.betas[0] == pytest.approx(0.00085) and s.betas[-1] == pytest.approx(0.012)
    assert s.T == 1000 and s.sigmas.shape == (1000,) and (s.sigmas[1:] > s.sigmas[:-1]).all()
    torch.testing.assert_close(DiscreteSchedule(s.alphas_cumprod).betas, s.betas)
    ts = s.sample_timesteps(500, torch.Generator().manual_seed(1))
    assert ts.dtype == torch.int64 and ts.min() >= 0 and ts.max() <= 999


# --- bad inputs -------------------------------------------------------------------------------


def test_bad_inputs_have_clear_errors() -> None:
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        karras_sigmas(0, 0.1, 10.0)
    with pytest.raises(ValueError, match="0 < sigma_min < sigma_max"):
        karras_sigmas(5, 10.0, 1.0)
    with pytest.raises(ValueError, match="0 < sigma_min < sigma_max"):
        exponential_sigmas(5, 0.0, 1.0)
    with pytest.raises(ValueError, match="T must be an int >= 2"):
        make_betas("linear", 1)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("quadratic", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown timestep spacing"):
        spaced_timesteps(100, 10, "uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n must be an int in \[1, T=100\]"):
        spaced_timesteps(100, 101)
    with pytest.raises(ValueError, match="steps_offset"):
        spaced_timesteps(100, 10, "leading", steps_offset=20)
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiscreteSchedule(torch.tensor([0.9, 0.95, 0.5]))
    with pytest.raises(ValueError, match=r"strictly inside \(0, 1\)"):
        DiscreteSchedule(torch.tensor([0.9, 0.5, 0.0]))
    with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
        CosineLogSNR(5.0, -5.0)
    with pytest.raises(ValueError, match="P_std must be > 0"):
        sample_lognormal_sigma(3, P_std=0.0)
