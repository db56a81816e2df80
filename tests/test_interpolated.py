"""Interpolated denoising (ViewFusion, Yang et al. 2024): the weights against the closed form of
/work/shared/METHODS.md, the window, the input that is always kept, max_rows chunking, every sampler,
classifier-free guidance inside the branches, the separate-noise variant, orbits, the single-target
walk and `vantage sample --strategy interpolated`. The mock denoisers return a function of the
conditioning view, so the fused output has a closed form."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, cartesian_to_spherical, orbit_cameras
from vantage.data.views import ObjectViews, ViewSet
from vantage.diffusion.samplers import SAMPLERS
from vantage.methods.base import ViewCond
from vantage.sampling import (
    InterpolatedDenoising,
    ViewSetCond,
    autoregressive_orbit,
    make_strategy,
    sample_single_target,
    view_cfg_denoiser,
    walk_cameras,
)
from vantage.sampling.interpolated import interpolation_weights, view_distances

R = 8
SIGMAS = torch.tensor([10.0, 3.0, 1.0, 0.3, 0.0])


def _cams(azimuths, elevation: float = 30.0, radius: float = 2.5) -> Cameras:
    if not isinstance(elevation, list | tuple):
        elevation = [elevation] * len(azimuths)
    return Cameras.cat([orbit_cameras(1, resolution=R, start_azimuth_deg=a, elevation_deg=e, radius=radius)
                        for a, e in zip(azimuths, elevation)])


def _cond(view_az, target_az, *, valid=None, view_el=30.0, target_el=30.0) -> ViewSetCond:
    """One sample; view k is the constant image k + 1 (plus a pattern), so outputs decode the weights."""
    K = len(view_az)
    images = (torch.arange(1, K + 1, dtype=torch.float32).view(1, K, 1, 1, 1)
              + torch.linspace(0, 0.5, R).view(1, 1, 1, 1, R)).expand(1, K, 3, R, R).clone()
    cams = _cams(view_az, view_el)
    valid = torch.ones(1, K, dtype=torch.bool) if valid is None else torch.as_tensor(valid).view(1, K)
    vs = ViewSet(images=images, cameras=Cameras(cams.c2w[None], cams.K[None], R, R), valid=valid,
                 view_ids=torch.zeros(1, K, dtype=torch.long))
    return ViewSetCond(vs, _cams([target_az], target_el))


def _batch(*conds: ViewSetCond) -> ViewSetCond:
    v = [c.views for c in conds]
    cams = Cameras.cat([x.cameras for x in v])
    vs = ViewSet(images=torch.cat([x.images for x in v]), cameras=cams, valid=torch.cat([x.valid for x in v]),
                 view_ids=torch.cat([x.view_ids for x in v]))
    return ViewSetCond(vs, Cameras.cat([c.target for c in conds]))


def closed_form(deltas_deg, t_in=0.5, t_auto=0.5, window=125.0):
    """The weights of METHODS.md written out: input (position 0) and the other views in the window."""
    d = [math.radians(x) for x in deltas_deg]
    kept = [i for i in range(1, len(d)) if d[i] < math.radians(window)]
    w = [0.0] * len(d)
    if not kept:
        w[0] = 1.0
        return w
    w[0] = math.exp(-(d[0] / math.pi) / t_in)
    top = max(d[i] for i in kept)
    e = {i: math.exp(-d[i] / top / t_auto) for i in kept}
    for i in kept:
        w[i] = e[i] / sum(e.values()) * (1 - w[0])
    return w


class ViewMock:
    """x̂0 = the conditioning image (+ ``mix`` of x): a function of the view; records rows per call."""

    def __init__(self, mix: float = 0.0) -> None:
        self.mix, self.rows = mix, []

    def __call__(self, x, sigma, cond: ViewCond):
        self.rows.append(x.shape[0])
        return cond.images + self.mix * x / (1 + sigma.view(-1, 1, 1, 1) ** 2)


VIEWS = [0, 10, -10, 20, 150, -170]  # target at 30: Δ = 30, 20, 40, 10, 120, 160 (the last outside 125°)
DELTAS = [30, 20, 40, 10, 120, 160]


@pytest.mark.parametrize("t_in,t_auto", [(0.5, 0.5), (1 / 3, 1.0), (0.5, 0.1)])
def test_weights_match_the_closed_form_and_fuse_in_one_call(t_in, t_auto):
    cond = _cond(VIEWS, 30)
    den = ViewMock()
    strat = make_strategy("interpolated", den, t_in=t_in, t_auto=t_auto)
    assert isinstance(strat, InterpolatedDenoising)
    out = strat(torch.zeros(1, 3, R, R), torch.ones(1), cond)
    want = torch.tensor(closed_form(DELTAS, t_in, t_auto), dtype=torch.float64)
    assert torch.allclose(strat.last_weights[0], want, atol=1e-9)
    assert abs(float(strat.last_weights.sum()) - 1) < 1e-12
    assert strat.last_active[0].tolist() == [True, True, True, True, True, False]
    assert den.rows == [5]  # the five kept views: one batched call
    fused = (want.float().view(-1, 1, 1, 1) * cond.views.images[0]).sum(0)
    assert torch.allclose(out[0], fused, atol=1e-5)
    assert math.isclose(float(want[0]), math.exp(-(30 / 180) / t_in))  # w_0 = exp(-(Δ_0/π)/T_in)


def test_distance_definitions():
    views, target = _cams([0, 350, 10, 0], elevation=[30, 30, 10, 30], radius=2.5), _cams([10], 30, radius=4.0)
    vc = Cameras(views.c2w[None], views.K[None], R, R)
    az = torch.rad2deg(view_distances(vc, target))[0]
    assert torch.allclose(az, torch.tensor([10.0, 20.0, 0.0, 10.0], dtype=torch.float64), atol=1e-4)  # wrapped
    both = torch.rad2deg(view_distances(vc, target, "azimuth+elevation"))[0]
    assert torch.allclose(both, torch.tensor([10.0, 20.0, 20.0, 10.0], dtype=torch.float64), atol=1e-4)
    with pytest.raises(ValueError, match="distance"):
        view_distances(vc, target, "rotation")


@pytest.mark.filterwarnings("ignore:interpolated denoising")
def test_window_selection_and_the_input_is_always_kept():
    cond = _cond(VIEWS, 30)
    narrow = make_strategy("interpolated", ViewMock(), window_deg=15)
    narrow(torch.zeros(1, 3, R, R), torch.ones(1), cond)
    assert narrow.last_active[0].tolist() == [True, False, False, True, False, False]  # Δ = 10 only, and the input
    assert torch.allclose(narrow.last_weights[0], torch.tensor(closed_form(DELTAS, window=15), dtype=torch.float64))
    # a window that excludes every view: the input alone, weight 1, one warning however many calls
    none = make_strategy("interpolated", ViewMock(), window_deg=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            out = none(torch.zeros(1, 3, R, R), torch.ones(1), cond)
    assert len(caught) == 1 and "outside the window" in str(caught[0].message)
    assert none.last_active[0].tolist() == [True] + [False] * 5 and float(none.last_weights[0, 0]) == 1.0
    assert torch.equal(out, cond.views.images[:, 0])
    # the input 180° from the target: kept (and warned) although outside the 125° window
    far = make_strategy("interpolated", ViewMock())
    with pytest.warns(UserWarning, match="input view is outside"):
        far(torch.zeros(1, 3, R, R), torch.ones(1), _cond([0, 170, 150], 180))
    assert far.last_active[0].tolist() == [True, True, True]
    assert torch.allclose(far.last_weights[0], torch.tensor(closed_form([180, 10, 30]), dtype=torch.float64))
    # the input is the first *valid* view of the set
    shifted = make_strategy("interpolated", ViewMock())
    shifted(torch.zeros(1, 3, R, R), torch.ones(1), _cond([90] + VIEWS, 30, valid=[False] + [True] * 6))
    assert torch.allclose(shifted.last_weights[0, 1:], torch.tensor(closed_form(DELTAS), dtype=torch.float64))
    assert float(shifted.last_weights[0, 0]) == 0 and not shifted.last_active[0, 0]


def test_ragged_batch_chunking_and_option_errors():
    a, b = _cond(VIEWS, 30), _cond(VIEWS, -40, valid=[True, True, False, True, True, True])
    both = _batch(a, b)
    x = torch.randn(2, 3, R, R)
    den = ViewMock(mix=0.3)
    out = make_strategy("interpolated", den)(x, torch.full((2,), 2.0), both)
    for i, c in enumerate((a, b)):  # each sample's weights depend on its own set only
        alone = make_strategy("interpolated", ViewMock(mix=0.3))(x[i:i + 1], torch.full((1,), 2.0), c)
        assert torch.allclose(out[i:i + 1], alone, atol=1e-6)
    for rows in (1, 3, 4):  # the memory bound: at most max_rows rows per call, identical result
        chunked_den = ViewMock(mix=0.3)
        chunked = make_strategy("interpolated", chunked_den, max_rows=rows)(x, torch.full((2,), 2.0), both)
        assert max(chunked_den.rows) <= rows and sum(chunked_den.rows) == den.rows[0]
        assert torch.allclose(chunked, out, atol=1e-6)
    w, active = interpolation_weights(torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool))
    assert w[0].tolist() == [1.0, 0.0, 0.0] and active[0].tolist() == [True, False, False]  # Δ_0 = 0: input only
    v = a.views  # a sample without a valid input view
    empty = ViewSet(images=v.images, cameras=v.cameras, valid=torch.zeros_like(v.valid), view_ids=v.view_ids)
    with pytest.raises(ValueError, match="empty input set"):
        autoregressive_orbit(den, empty, _cams([30.0]), strategy="interpolated", sampler="euler", sigmas=[1.0, 0.0])
    for kw, msg in (({"t_in": 0}, "t_in"), ({"t_auto": -1.0}, "t_auto"), ({"window_deg": -5}, "window_deg"),
                    ({"distance": "rotation"}, "distance")):
        with pytest.raises(ValueError, match=msg):
            make_strategy("interpolated", den, **kw)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_with_shared_and_separate_noise(name):
    cond = _cond(VIEWS, 30)
    want = torch.tensor(closed_form(DELTAS)).float()
    fused = (want.view(-1, 1, 1, 1) * cond.views.images[0])[None].sum(1)
    runs = {}
    for sep in (False, True):
        strat = make_strategy("interpolated", ViewMock(), separate_noise=sep)
        x = torch.randn(1, 3, R, R, generator=torch.Generator().manual_seed(1)) * 10
        gens = [torch.Generator().manual_seed(2)]
        y = strat.wrap_sampler(SAMPLERS[name])(strat, x, SIGMAS, cond, generator=gens)
        assert torch.allclose(y, fused, atol=1e-4), (name, sep)  # x̂0 independent of x: the sample is the fusion
        mixed = make_strategy("interpolated", ViewMock(mix=0.5), separate_noise=sep)
        gens = [torch.Generator().manual_seed(2)]
        runs[sep] = mixed.wrap_sampler(SAMPLERS[name])(mixed, x, SIGMAS, cond, generator=gens)
        assert mixed.calls >= len(SIGMAS) - 1
    if name in ("euler", "heun", "dpm_2", "dpmpp_2m", "lms", "ddim"):  # no fresh noise: the variants agree
        assert torch.allclose(runs[False], runs[True], atol=1e-4)


def test_separate_noise_draws_per_branch_and_fuses_it():
    cond = _cond([0, 10, -10, 20, 40, 50], 60)  # all in the window; w_0 = exp(-2/3) ≈ 0.51
    big = 48

    def zero(x, sigma, c):
        return torch.zeros_like(x)

    def first_noise(sep: bool, seed: int = 0) -> tuple[torch.Tensor, InterpolatedDenoising]:
        strat = make_strategy("interpolated", zero, separate_noise=sep)
        seen = []
        strat.wrap_sampler(SAMPLERS["euler_ancestral"])(
            strat, torch.zeros(1, 3, big, big), torch.tensor([10.0, 5.0, 0.0]), _cond_big(cond, big),
            generator=[torch.Generator().manual_seed(seed)], callback=seen.append)
        assert [tuple(i["x"].shape) for i in seen] == [(1, 3, big, big)] * 2  # fused (B, ...) in the callback
        return seen[1]["x"], strat  # the state after one step: σ_up · (shared or fused) noise

    shared, _ = first_noise(False)
    separate, strat = first_noise(True)
    rho = float(strat.last_weights.pow(2).sum().sqrt())  # std of Σ w_i z_i
    assert rho < 0.8
    assert abs(float(separate.std() / shared.std()) - rho) < 0.05
    assert torch.equal(separate, first_noise(True)[0])  # reproducible
    assert not torch.equal(separate, first_noise(True, seed=1)[0])


def _cond_big(cond: ViewSetCond, size: int) -> ViewSetCond:
    v = cond.views
    cams = Cameras(v.cameras.c2w, v.cameras.K, size, size)
    vs = ViewSet(images=torch.zeros(*v.images.shape[:2], 3, size, size), cameras=cams, valid=v.valid,
                 view_ids=v.view_ids)
    return ViewSetCond(vs, Cameras(cond.target.c2w, cond.target.K, size, size))


def test_guidance_sits_inside_every_branch():
    calls = []

    def den(x, sigma, c: ViewCond):  # conditional: the view; unconditional (dropped): zero
        calls.append(x.shape[0])
        return torch.where(c.drop.view(-1, 1, 1, 1), torch.zeros_like(c.images), c.images)

    cond = _cond(VIEWS, 30)
    w = 2.0
    out = make_strategy("interpolated", view_cfg_denoiser(den, w))(torch.zeros(1, 3, R, R), torch.ones(1), cond)
    want = torch.tensor(closed_form(DELTAS)).float()
    fused = (want.view(-1, 1, 1, 1) * cond.views.images[0]).sum(0)
    assert calls == [2 * 5]  # conditional and unconditional rows of the five branches in one call
    assert torch.allclose(out[0], (1 + w) * fused, atol=1e-5)  # ε form: D_u + (1 + w)(D_c − D_u)


def _object(azimuths=(0.0,)) -> ObjectViews:
    cams = _cams(list(azimuths))
    return ObjectViews(images=torch.full((len(azimuths), 3, R, R), 0.5), cameras=cams)


@pytest.mark.filterwarnings("ignore:interpolated denoising")
def test_paper_orbit_36_views_alternating():
    events = []
    targets = orbit_cameras(36, resolution=R)[1:]  # 10° apart; the input is at 0°
    res = autoregressive_orbit(ViewMock(mix=0.2), _object(), targets, strategy="interpolated", order="alternating",
                               sampler="euler", sigmas=[2.0, 0.0], callback=events.append)
    az = [round(math.degrees(float(a))) for a in targets.spherical()[:, 1]]
    assert [az[t] for t in res.order[0].tolist()][:4] == [10, -10, 20, -20] and res.generated.all()
    assert res.set_sizes[0, res.order[0, 1]] == 2  # −10° is made from the input and +10°
    second = events[1]["strategy"]
    assert torch.allclose(second.last_weights[0, :2], torch.tensor(closed_form([10, 20]), dtype=torch.float64))
    last = events[-1]["strategy"]  # 180°: the input (Δ = 180°) kept outside the window, views beyond 125° not
    assert bool(last.last_active[0, 0]) and last.last_weights.shape == (1, 36)
    kept = int(last.last_active.sum()) - 1
    assert kept == 24  # generated views at 60°..170° on either side (Δ ≤ 120°): 12 per side
    assert res.nfe == 35


def test_walk_cameras_steps_at_most_10_degrees():
    start, target = _cams([0.0], 30.0), _cams([135.0], -20.0, radius=3.0)
    path = walk_cameras(start, target)
    sph = cartesian_to_spherical(torch.cat([start.centers, path.centers]).double())
    az, el = torch.rad2deg(sph[:, 1]), 90 - torch.rad2deg(sph[:, 0])
    assert len(path) == 14  # max(ceil(135/10), ceil(50/10))
    assert (az.diff().abs() <= 10 + 1e-4).all() and (el.diff().abs() <= 10 + 1e-4).all()
    assert torch.equal(path.c2w[-1], target.c2w[0]) and torch.equal(path.K[-1], target.K[0])
    assert (sph[:, 2].diff() >= -1e-5).all()  # radius interpolated
    back = walk_cameras(start, _cams([-170.0], 30.0))  # the short way round: 17 steps clockwise
    assert len(back) == 17 and float(torch.rad2deg(back.spherical()[0, 1])) < 0
    assert len(walk_cameras(start, start)) == 1
    with pytest.raises(ValueError, match="step_deg"):
        walk_cameras(start, target, step_deg=0)


@pytest.mark.filterwarnings("ignore:interpolated denoising")
def test_single_target_mode_walks_autoregressively():
    inputs = [_object(), _object()]
    targets = Cameras.cat([_cams([45.0], 30.0), _cams([-95.0], 0.0)])  # walks of 5 and 10 poses
    seen = []
    res = sample_single_target(ViewMock(mix=0.3), inputs, targets, sampler="euler_ancestral", sigmas=[5.0, 1.0, 0.0],
                               seed=[3, 4], callback=seen.append)
    assert [len(p) for p in res.paths] == [5, 10] and [len(p) for p in res.path_images] == [5, 10]
    assert torch.equal(res.image[1], res.path_images[1][-1])
    assert {e["strategy"].distance for e in seen} == {"azimuth+elevation"}
    assert max(int(e["set_size"].max()) for e in seen) == 10  # the input and the nine poses before the target
    alone = sample_single_target(ViewMock(mix=0.3), inputs[1], targets[1], sampler="euler_ancestral",
                                 sigmas=[5.0, 1.0, 0.0], seed=[4])
    assert torch.allclose(alone.image[0], res.image[1], atol=1e-6)  # independent of the batch
    assert res.nfe == 2 * (5 + 10)


# ------------------------------------------------------------------------------------ command line
def test_cli_interpolated_strategy(tmp_path, capsys):
    from test_cli_sample import TINY

    from vantage.cli.main import main
    from vantage.methods import build_method
    from vantage.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m = build_method("3dim", TINY)
    run = tmp_path / "run"
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    img = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (200, 40, 40)).save(img)

    def sample(out: str, *extra: str) -> int:
        return main(["sample", "--checkpoint", str(run), "--input", str(img), "--out", str(tmp_path / out),
                     "--device", "cpu", "--steps", "2", *extra])

    assert sample("vf", "--strategy", "interpolated", "--orbit", "6", "--t-in", "0.4", "--window", "100",
                  "--separate-noise", "--sampler", "euler_ancestral", "--save-intermediates", "--max-rows", "2") == 0
    said = capsys.readouterr().out
    assert "strategy interpolated" in said and "order alternating" in said
    assert "note: interpolated denoising: the input view is outside the window" in said  # 120° and 180° targets
    summary = json.loads((tmp_path / "vf" / "sample.json").read_text())
    assert summary["strategy_options"] == {"t_in": 0.4, "t_auto": 0.5, "window_deg": 100.0, "distance": "azimuth",
                                           "separate_noise": True, "max_rows": 2, "max_context": None}
    assert summary["order"] == [0, 1, 5, 2, 4, 3] and summary["set_sizes"] == [0, 1, 3, 5, 4, 2]
    inter = tmp_path / "vf" / "intermediates"
    assert sorted(p.name for p in inter.iterdir()) == ["001", "002", "003", "004", "005"]  # frame 0 is the input
    assert sorted(p.name for p in (inter / "003").iterdir()) == ["000.png", "001.png"]  # one x̂0 per step
    assert np.asarray(Image.open(inter / "003" / "001.png")).shape == (16, 16, 3)
    for extra, msg in ((("--strategy", "interpolated", "--t-in", "0"), "--t-in is a temperature"),
                       (("--strategy", "interpolated", "--window", "-1"), "--window"),
                       (("--t-auto", "0.2"), "need --strategy interpolated"),
                       (("--separate-noise",), "--separate-noise")):
        assert sample(f"bad{len(msg)}{len(extra)}", *extra) == 2
        assert msg in capsys.readouterr().err
