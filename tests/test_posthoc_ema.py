"""EDM2's post-hoc power-function EMA (vantage.train.posthoc_ema, `vantage ema`): the σ_rel <-> γ conversion, the
closed-form inner products of the profiles, reconstruction of a stored width and of an intermediate one on a known
trajectory, the trainer's snapshots (off by default, resume) and the checkpoint `vantage ema` writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import toy_method
from safetensors.torch import load_file
from scipy.integrate import quad
from torch import nn
from toy_method import fast_config, make_toy, toy_scenes

from vantage.cli.main import main
from vantage.train import Trainer, find_checkpoint, load_checkpoint
from vantage.train.checkpoint import load_training_state
from vantage.train.ema import EMA, power_gamma, power_std
from vantage.train.posthoc_ema import (
    SNAPSHOTS,
    PosthocEMA,
    list_snapshots,
    posthoc_coefficients,
    power_profile,
    profile_inner_products,
    reconstruct_ema,
)

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------ σ_rel <-> γ
def _profile_std(gamma: float) -> float:
    """σ_rel by numerical integration of the profile (γ+1)τ^γ on [0, 1] (independent of Eq. 3's closed form)."""
    density = lambda tau: (gamma + 1) * tau ** gamma  # noqa: E731
    mass = quad(density, 0, 1)[0]
    mean = quad(lambda tau: tau * density(tau), 0, 1)[0] / mass
    var = quad(lambda tau: (tau - mean) ** 2 * density(tau), 0, 1)[0] / mass
    return math.sqrt(var)


def test_sigma_rel_gamma_conversion_round_trips_and_matches_the_profile():
    # EDM2's values (Sec. 3.1): σ_rel 0.05 <-> γ 16.97, 0.10 <-> γ 6.94
    assert power_gamma(0.05) == pytest.approx(16.97, abs=0.005)
    assert power_gamma(0.10) == pytest.approx(6.94, abs=0.005)
    for std in (0.01, 0.03, 0.05, 0.08, 0.1, 0.15, 0.25):
        g = power_gamma(std)
        assert power_std(g) == pytest.approx(std, rel=1e-10)
        assert _profile_std(g) == pytest.approx(std, rel=1e-7)  # quadrature, not the formula
    for g in (0.5, 2.0, 6.94, 16.97, 50.0, 300.0):
        assert power_gamma(power_std(g)) == pytest.approx(g, rel=1e-8)
    # the trainer's discrete EMA of the step index itself: mean and spread of its weights over the steps
    gamma = power_gamma(0.1)
    model = nn.Module()
    model.tau = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    ema = EMA(model, "power", std=0.1)
    t = 20000
    for step in range(1, t + 1):  # the weights after step τ are "held" over (τ-1, τ]: midpoint τ - 1/2
        with torch.no_grad():
            model.tau.copy_(torch.tensor([step - 0.5, (step - 0.5) ** 2 + 1 / 12], dtype=torch.float64))
        ema.update(model, step)
    m1, m2 = ema.module.tau.tolist()  # the midpoint values differ from the exact interval moments by O(γ/t²)
    assert m1 / t == pytest.approx((gamma + 1) / (gamma + 2), rel=1e-7)
    assert math.sqrt(m2 - m1 * m1) / t == pytest.approx(0.1, rel=1e-5)


# ------------------------------------------------------------------------------------ profiles
def test_inner_products_match_quadrature():
    cases = [(1000.0, 16.97, 1000.0, 6.94), (400.0, 6.94, 1000.0, 16.97), (1000.0, 3.0, 250.0, 3.0),
             (7.0, 0.5, 9.0, 40.0)]
    for ta, ga, tb, gb in cases:
        numeric = quad(lambda tau, a=(ta, ga), b=(tb, gb): float(power_profile(*a, tau) * power_profile(*b, tau)),
                       0, min(ta, tb), limit=200, epsabs=0, epsrel=1e-11)[0]
        assert float(profile_inner_products(ta, ga, tb, gb)) == pytest.approx(numeric, rel=1e-8)
    assert quad(lambda tau: float(power_profile(50.0, 4.0, tau)), 0, 50)[0] == pytest.approx(1.0)  # a density
    grid = profile_inner_products(np.array([[1.0], [2.0]]), 3.0, np.array([1.0, 2.0, 3.0]), 5.0)
    assert grid.shape == (2, 3)
    # a stored profile is reproduced exactly by itself
    x, residual = posthoc_coefficients([100, 200, 100, 200], [16.97, 16.97, 6.94, 6.94], 200, 6.94)
    assert residual < 1e-6 and x[3] == pytest.approx(1.0, abs=1e-6) and np.abs(x[:3]).max() < 1e-6


# ------------------------------------------------------------------------------------ reconstruction
def _trajectory(steps: int) -> np.ndarray:
    """A known parameter trajectory ``(steps, 3)``: θ_τ for τ = 1..steps (slow drift + oscillations)."""
    tau = np.arange(1, steps + 1, dtype=np.float64)[:, None]
    return np.concatenate([np.sin(tau / 150) + tau / steps - 0.5, np.cos(tau / 100) * tau / steps,
                           0.3 * np.sin(tau / 9) + (tau / steps) ** 2], axis=1)


def _run_trajectory(tmp_path, steps: int, every: int, stds=(0.05, 0.10), extra=()):
    """Feed the trajectory to PosthocEMA (snapshots every ``every``) and to direct power EMAs of ``extra`` widths."""
    theta = _trajectory(steps)
    model = nn.Module()
    model.theta = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    model.register_buffer("count", torch.zeros((), dtype=torch.long))
    tracker = PosthocEMA(model, stds)
    direct = {s: EMA(model, "power", std=s) for s in extra}
    for step in range(1, steps + 1):
        with torch.no_grad():
            model.theta.copy_(torch.from_numpy(theta[step - 1]))
            model.count.fill_(step)
        tracker.update(model, step)
        for e in direct.values():
            e.update(model, step)
        if step % every == 0:
            tracker.save(tmp_path, step, step * 4, "toy")
    return theta, tracker, direct


def test_reconstructing_a_stored_width_returns_that_ema(tmp_path):
    theta, tracker, _ = _run_trajectory(tmp_path, 600, 50)
    snaps = list_snapshots(tmp_path)
    assert len(snaps) == 24 and {s.sigma_rel for s in snaps} == {0.05, 0.1}
    assert snaps[-1].step == 600 and snaps[-1].images == 2400 and snaps[-1].buffers == ("count",)
    for std, ema in zip(tracker.stds, tracker.emas):
        res = reconstruct_ema(tmp_path, std)
        assert res.step == 600 and res.residual < 1e-6
        assert torch.allclose(res.state["theta"], ema.module.theta, rtol=1e-7, atol=1e-9)
        assert int(res.state["count"]) == 600  # buffers: the newest snapshot's, not a weighted sum
    # at an earlier snapshot step, from the snapshots up to it
    res = reconstruct_ema(tmp_path, 0.10, step=300)
    stored = load_file(str(next(s.path for s in snaps if s.step == 300 and s.sigma_rel == 0.1)))
    assert res.step == 300 and max(s.step for s in res.snapshots) == 300
    assert torch.allclose(res.state["theta"], stored["theta"], rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="no EMA snapshot at or before step 10"):
        reconstruct_ema(tmp_path, 0.1, step=10)
    with pytest.raises(ValueError, match="no EMA snapshots"):
        reconstruct_ema(tmp_path / "none", 0.1)


def test_posthoc_ema_at_an_intermediate_width_matches_the_direct_one(tmp_path):
    """σ_rel 0.08 from snapshots of 0.05 and 0.10 every 100 of 2000 steps vs the power EMA of 0.08 run directly.

    Tolerance: the post-hoc result is ``∫ p̂ θ`` and the direct one ``∫ p_r θ`` (θ piecewise constant over the
    steps, which is exactly what the discrete update averages), so per parameter ``|post-hoc − direct| <=
    ‖p_r − p̂‖₂ · ‖θ‖₂`` (Cauchy-Schwarz), with ``‖p_r − p̂‖₂ = residual · ‖p_r‖₂`` from the fit and
    ``‖θ‖₂² = Σ_τ θ_τ²``. The bound is checked to be small next to what separates the stored widths, so the test
    fails if the reconstruction returned either of them (or any poor mix)."""
    steps = 2000
    theta, tracker, direct = _run_trajectory(tmp_path, steps, 100, extra=(0.08, 0.05, 0.10))
    res = reconstruct_ema(tmp_path, 0.08)
    assert res.residual < 0.01  # EDM2 Fig. 5: a width between the stored ones is matched closely
    p_norm = math.sqrt(float(profile_inner_products(steps, res.gamma, steps, res.gamma)))
    bound = res.residual * p_norm * np.sqrt((theta ** 2).sum(0))  # per parameter
    got, want = res.state["theta"].numpy(), direct[0.08].module.theta.detach().numpy()
    assert (np.abs(got - want) <= bound * 1.0001 + 1e-12).all()
    apart = np.minimum(np.abs(want - direct[0.05].module.theta.detach().numpy()),
                       np.abs(want - direct[0.10].module.theta.detach().numpy()))
    assert (bound < 0.1 * apart).all(), (bound, apart)
    assert abs(sum(res.coefficients) - 1) < 1e-2  # profiles are densities: the mix nearly sums to one


# ------------------------------------------------------------------------------------ the trainer and `vantage ema`
@pytest.fixture
def toy(monkeypatch):
    import vantage.methods as vm

    monkeypatch.setitem(vm.METHODS, toy_method.METHOD, "toy_method:ToyMethod")
    monkeypatch.setitem(vm.PRESETS, toy_method.PRESET, (toy_method.METHOD, {}, "toy"))


class Killed(Exception):
    pass


def _train(run_dir, kill_after=None, **cfg):
    def hook(step, values):
        if kill_after is not None and step == kill_after:
            raise Killed

    base = {"duration": 6, "batch": 4, "ckpt_every": 2, "keep_checkpoints": 0, "ema": "power", "ema_std": 0.05}
    return Trainer(make_toy(0, noise=0.3), toy_scenes(), fast_config(**{**base, **cfg}), run_dir, on_step_end=hook,
                   log=lambda s: None).fit()


def test_trainer_snapshots_resume_and_default_off(tmp_path, toy):
    _train(tmp_path / "plain")
    assert not (tmp_path / "plain" / SNAPSHOTS).exists()
    assert "posthoc_ema" not in load_training_state(find_checkpoint(tmp_path / "plain"))
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["train"]["ema_posthoc"] is False

    on = {"ema_posthoc": True, "ema_posthoc_every": 1}
    _train(tmp_path / "whole", **on)
    snaps = list_snapshots(tmp_path / "whole")
    assert [(s.step, s.sigma_rel) for s in snaps] == [(k, w) for k in range(1, 7) for w in (0.05, 0.1)]
    # the 0.05 width is the trainer's own power EMA (shared): the checkpoint's weights are that snapshot
    ckpt = find_checkpoint(tmp_path / "whole")
    weights = load_file(str(ckpt / "model.safetensors"))
    last = {s.sigma_rel: load_file(str(s.path)) for s in snaps if s.step == 6}
    assert all(torch.equal(weights[k], last[0.05][k]) for k in weights)
    assert not all(torch.equal(weights[k], last[0.1][k]) for k in weights)
    assert load_training_state(ckpt)["posthoc_ema"]["emas"][0] is None  # shared, not stored twice
    # killed after step 3 (checkpoint at 2, snapshot 3 already written): resumed, the snapshots are the same
    with pytest.raises(Killed):
        _train(tmp_path / "split", kill_after=3, **on)
    assert max(s.step for s in list_snapshots(tmp_path / "split")) == 3
    _train(tmp_path / "split", **on)
    again = list_snapshots(tmp_path / "split")
    assert [(s.step, s.sigma_rel) for s in again] == [(s.step, s.sigma_rel) for s in snaps]
    for a, b in zip(snaps, again):
        sa, sb = load_file(str(a.path)), load_file(str(b.path))
        assert all(torch.equal(sa[k], sb[k]) for k in sa), a.path.name
    # turning it on for a run that did not keep it is refused (its past cannot be averaged)
    with pytest.raises(ValueError, match="ema_posthoc"):
        _train(tmp_path / "plain", duration=8, **on)


def test_a_restart_from_step_0_drops_the_dead_attempts_snapshots(tmp_path, toy):
    on = {"ema_posthoc": True, "ema_posthoc_every": 1}
    with pytest.raises(Killed):  # dies after step 1: a snapshot, no checkpoint yet (ckpt_every 2)
        _train(tmp_path / "r", kill_after=1, **on)
    assert {s.sigma_rel for s in list_snapshots(tmp_path / "r")} == {0.05, 0.1}
    _train(tmp_path / "r", **{**on, "ema_posthoc_stds": [0.05, 0.2]})  # started again, other widths
    snaps = list_snapshots(tmp_path / "r")
    assert [(s.step, s.sigma_rel) for s in snaps] == [(k, w) for k in range(1, 7) for w in (0.05, 0.2)]
    # a file in ema_snapshots/ that vantage did not write stops the resume with its name; nothing is deleted
    foreign = tmp_path / "r" / SNAPSHOTS / "step-000009-mine.safetensors"
    foreign.write_bytes(b"not a snapshot")
    with pytest.raises(ValueError, match="step-000009-mine.safetensors.*move it out"):
        _train(tmp_path / "r", duration=8, **{**on, "ema_posthoc_stds": [0.05, 0.2]})
    assert foreign.read_bytes() == b"not a snapshot"
    # widths must stay distinct in the file names
    with pytest.raises(ValueError, match="distinct to 4 decimals"):
        fast_config(ema_posthoc=True, ema_posthoc_stds=[0.05, 0.05001])


def test_vantage_ema_writes_a_checkpoint(tmp_path, toy, capsys):
    run = tmp_path / "run"
    _train(run, ema_posthoc=True, ema_posthoc_every=2)
    assert main(["ema", str(run), "--list"]) == 0
    assert "6 snapshots" in capsys.readouterr().out
    out = tmp_path / "ema010"
    assert main(["ema", str(run), "--sigma-rel", "0.1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "σ_rel=0.1" in printed and "step 6" in printed
    model = load_checkpoint(out)  # what `vantage sample/evaluate --checkpoint` load
    stored = load_file(str(next(s.path for s in list_snapshots(run) if s.step == 6 and s.sigma_rel == 0.1)))
    for k, v in model.state_dict().items():
        assert torch.allclose(v.float(), stored[k].float(), rtol=1e-5, atol=1e-6), k
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["step"] == 6 and cfg["images"] == 24 and cfg["posthoc_ema"]["sigma_rel"] == 0.1
    assert len(cfg["posthoc_ema"]["snapshots"]) == 6
    # an intermediate width at an earlier step
    assert main(["ema", str(run), "--sigma-rel", "0.07", "--step", "4", "--out", str(tmp_path / "e07")]) == 0
    assert json.loads((tmp_path / "e07" / "config.json").read_text())["posthoc_ema"]["step"] == 4
    capsys.readouterr()
    # never over an existing checkpoint without --overwrite, never into the run
    before = (out / "model.safetensors").read_bytes()
    assert main(["ema", str(run), "--sigma-rel", "0.05", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "model.safetensors").read_bytes() == before
    assert main(["ema", str(run), "--sigma-rel", "0.05", "--out", str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() != before
    for inside in (run, run / "checkpoints" / "step-000006", run / SNAPSHOTS):
        assert main(["ema", str(run), "--sigma-rel", "0.05", "--out", str(inside), "--overwrite"]) == 2
        assert "never replaced" in capsys.readouterr().err
    assert main(["ema", str(run), "--sigma-rel", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert "(0, 0.3)" in capsys.readouterr().err
    plain = tmp_path / "plain"
    _train(plain)
    assert main(["ema", str(plain), "--sigma-rel", "0.05", "--out", str(tmp_path / "none")]) == 2
    assert "train.ema_posthoc=true" in capsys.readouterr().err
