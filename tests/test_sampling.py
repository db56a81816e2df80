"""Multi-view strategies (single, stochastic, the branch/fusion extension point), view CFG, and the
autoregressive orbit loop (set growth, orders, per-sample seeds, coincident targets), with mock
single-view denoisers that record what they were given."""

from __future__ import annotations

import math

import pytest
import torch

from vantage.cameras import Cameras, alternating_order, orbit_cameras
from vantage.data.views import ObjectViews, ViewSet
from vantage.diffusion.noise import per_sample_generators
from vantage.diffusion.samplers import sample_euler
from vantage.methods.base import ViewCond
from vantage.sampling import (
    Branches,
    SingleView,
    StochasticConditioning,
    Strategy,
    ViewSetCond,
    autoregressive_orbit,
    generation_order,
    make_strategy,
    view_cfg_denoiser,
)
from vantage.sampling.strategies import GuidedViewDenoiser

R = 8


class Recorder:
    """Single-view denoiser mock: x̂0 = the conditioning image (+ a little of x so that noise matters).

    Every view in the tests is a constant image whose value encodes (sample, view); ``seen`` records
    the decoded view id of every row of every call."""

    def __init__(self, mix: float = 0.0) -> None:
        self.seen: list[list[int]] = []
        self.rows: list[int] = []
        self.mix = mix
        self.targets: list[Tensor] = []

    def __call__(self, x, sigma, cond: ViewCond):
        assert isinstance(cond, ViewCond) and cond.images.shape == x.shape
        self.seen.append([int(round(float(v) * 100)) % 100 for v in cond.images[:, 0, 0, 0]])
        self.rows.append(x.shape[0])
        self.targets.append(cond.target.centers.clone())
        s = sigma.view(-1, 1, 1, 1)
        return cond.images + self.mix * x / (1 + s**2)


Tensor = torch.Tensor


def _set(B: int, K: int, valid: Tensor | None = None) -> ViewSetCond:
    """Sample b, view k has the constant value (b*... ) encoding view id k in two decimals."""
    images = torch.zeros(B, K, 3, R, R)
    for b in range(B):
        for k in range(K):
            images[b, k] = k / 100 + b  # decoded as k by Recorder (value*100 mod 100)
    cams = orbit_cameras(K, resolution=R)
    c = Cameras(cams.c2w.expand(B, K, 4, 4), cams.K.expand(B, K, 3, 3), R, R)
    valid = torch.ones(B, K, dtype=torch.bool) if valid is None else valid
    vs = ViewSet(images=images, cameras=c, valid=valid, view_ids=torch.zeros(B, K, dtype=torch.long))
    return ViewSetCond(vs, orbit_cameras(B, resolution=R, elevation_deg=10.0))


def test_single_view_strategy_uses_the_chosen_view_and_target():
    cond = _set(3, 4)
    rec = Recorder()
    x = torch.randn(3, 3, R, R)
    out = SingleView(rec)(x, torch.full((3,), 2.0), cond)
    assert rec.seen == [[0, 0, 0]] and torch.allclose(out, cond.views.images[:, 0])
    SingleView(rec, view=torch.tensor([2, 1, 3]))(x, 2.0, cond)
    assert rec.seen[-1] == [2, 1, 3]
    assert torch.allclose(rec.targets[-1], cond.target.centers)  # each row got its own target camera
    with pytest.raises(ValueError, match="positions"):
        SingleView(rec, view=7)(x, 2.0, cond)


def test_stochastic_draws_only_valid_views_and_covers_the_set():
    valid = torch.tensor([[True, False, True, True, False, True]] * 2)
    cond = _set(2, 6, valid)
    rec = Recorder()
    strat = StochasticConditioning(rec, per_sample_generators([1, 2]), record=True)
    x = torch.randn(2, 3, R, R)
    for _ in range(200):
        strat(x, torch.ones(2), cond)
    drawn = torch.stack(strat.history)  # (calls, B)
    assert set(drawn.flatten().tolist()) == {0, 2, 3, 5}  # every valid view, never padding
    assert torch.equal(drawn, torch.tensor(rec.seen))  # the denoiser got exactly the drawn views
    assert all(r == 2 for r in rec.rows)  # one batched call of B rows per denoiser call


def test_stochastic_draw_is_uniform():
    K, n = 4, 8000
    cond = _set(1, K)
    strat = StochasticConditioning(lambda x, s, c: c.images, torch.Generator().manual_seed(0), record=True)
    x = torch.zeros(1, 3, R, R)
    for _ in range(n):
        strat(x, torch.ones(1), cond)
    counts = torch.bincount(torch.cat(strat.history), minlength=K).double()
    sd = math.sqrt(n * (1 / K) * (1 - 1 / K))
    assert ((counts - n / K).abs() < 4.5 * sd).all(), counts  # each view within 4.5 standard errors
    chi2 = float(((counts - n / K) ** 2 / (n / K)).sum())
    assert chi2 < 16.3  # chi-square, 3 degrees of freedom, p = 0.001


def test_stochastic_reproducible_and_per_sample_independent_of_batch():
    cond = _set(3, 5)

    def draws(gens, c, calls=30):
        s = StochasticConditioning(lambda x, sg, vc: vc.images, gens, record=True)
        for _ in range(calls):
            s(torch.zeros(c.batch_size, 3, R, R), torch.ones(c.batch_size), c)
        return torch.stack(s.history)

    a = draws(per_sample_generators([5, 6, 7]), cond)
    b = draws(per_sample_generators([5, 6, 7]), cond)
    assert torch.equal(a, b)
    c = draws(per_sample_generators([5, 9, 7]), cond)
    assert torch.equal(a[:, 0], c[:, 0]) and not torch.equal(a[:, 1], c[:, 1])
    alone = ViewSetCond(cond.views.index([1]), cond.target[1:2])
    assert torch.equal(draws(per_sample_generators([6]), alone)[:, 0], a[:, 1])
    # one generator for the whole batch is reproducible too (but depends on the batch)
    assert torch.equal(draws(torch.Generator().manual_seed(3), cond), draws(torch.Generator().manual_seed(3), cond))


class TwoBranch(Strategy):
    """The extension point: two branches per sample (views 0 and 1) with weights 1 and 3."""

    def branches(self, x, sigma, cond):
        B = x.shape[0]
        return Branches(index=torch.tensor([[0, 1]] * B), weight=torch.tensor([[1.0, 3.0]] * B))


def test_branches_run_as_one_batched_call_and_fuse_by_weight():
    cond = _set(2, 3)
    rec = Recorder()
    out = TwoBranch(rec)(torch.zeros(2, 3, R, R), torch.ones(2), cond)
    assert rec.rows == [4] and rec.seen == [[0, 1, 0, 1]]
    imgs = cond.views.images
    assert torch.allclose(out, 0.25 * imgs[:, 0] + 0.75 * imgs[:, 1])
    rec2 = Recorder()
    chunked = TwoBranch(rec2, max_rows=3)(torch.zeros(2, 3, R, R), torch.ones(2), cond)
    assert rec2.rows == [3, 1] and torch.allclose(chunked, out)


def test_strategies_run_in_any_sampler_and_errors():
    cond = _set(2, 3)
    strat = make_strategy("stochastic", Recorder(mix=0.5), generator=per_sample_generators([0, 1]))
    x = sample_euler(strat, torch.randn(2, 3, R, R) * 10, torch.tensor([10.0, 3.0, 1.0, 0.0]), cond)
    assert x.shape == (2, 3, R, R) and strat.calls == 3
    assert make_strategy("interpolated", Recorder()).name == "interpolated"
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("nope", Recorder())
    with pytest.raises(TypeError, match="ViewSetCond"):
        SingleView(Recorder())(torch.zeros(2, 3, R, R), 1.0, cond.views)
    with pytest.raises(ValueError, match="empty conditioning set"):
        _set(2, 3, torch.tensor([[True, False, False], [False, False, False]]))


def test_view_cfg_matches_the_formula_in_one_batched_call():
    def den(x, sigma, c: ViewCond):  # conditional: depends on the source camera unless dropped
        shift = torch.where(c.drop, 0.0, c.source.centers[:, 0]).view(-1, 1, 1, 1)
        return 0.3 * x + c.images + shift

    calls = []

    def counted(x, s, c):
        calls.append(x.shape[0])
        return den(x, s, c)

    cams = orbit_cameras(2, resolution=R)
    c = ViewCond(torch.rand(2, 3, R, R), cams, cams)
    x = torch.randn(2, 3, R, R)
    w = 3.0
    d_c = den(x, torch.ones(2), ViewCond(c.images, cams, cams, torch.zeros(2, dtype=torch.bool)))
    d_u = den(x, torch.ones(2), ViewCond(c.images, cams, cams, torch.ones(2, dtype=torch.bool)))
    guided = view_cfg_denoiser(counted, w)(x, torch.ones(2), c)
    assert calls == [4]  # cond + uncond rows in one call
    assert torch.allclose(guided, (1 + w) * d_c - w * d_u, atol=1e-6)  # ε form == x0 form with 1 + w
    assert torch.allclose(view_cfg_denoiser(den, 0.0)(x, torch.ones(2), c), d_c)
    clipped = GuidedViewDenoiser(den, w, clip_x0=1.0)(x, torch.ones(2), c)
    assert clipped.abs().max() <= 1.0


# ------------------------------------------------------------------------------------ orbits
def _object(n_in: int = 1, value: float = 0.0) -> ObjectViews:
    cams = orbit_cameras(8, resolution=R)[:n_in]
    images = torch.full((n_in, 3, R, R), value)
    for k in range(n_in):
        images[k] += k / 100
    return ObjectViews(images=images, cameras=cams)


def test_orbit_grows_the_set_and_conditions_on_generated_views():
    sizes = []

    class SizeRecorder(StochasticConditioning):
        def branches(self, x, sigma, cond):
            sizes.append(int(cond.views.valid.sum()))
            return super().branches(x, sigma, cond)

    rec = Recorder()
    targets = orbit_cameras(8, resolution=R, start_azimuth_deg=10.0)[:5]  # none coincides with the input
    events = []
    res = autoregressive_orbit(lambda x, s, c: rec(x, s, c) + 0.01, _object(), targets, strategy=SizeRecorder,
                               sampler="euler", sigmas=[10.0, 2.0, 0.5, 0.0], callback=events.append, seed=4)
    assert sorted(set(sizes)) == [1, 2, 3, 4, 5] and sizes == sorted(sizes)  # 3 calls per view, set grows by 1
    assert res.set_sizes.tolist() == [[1, 2, 3, 4, 5]] and res.generated.all() and res.nfe == 15
    assert [e["set_size"].tolist() for e in events] == [[1], [2], [3], [4], [5]]
    # generated view j is (conditioning view value) + 0.01: the set held the generated views
    vals = res.images[0, :, 0, 0, 0]
    assert torch.allclose(vals[0], torch.tensor(0.01))
    assert any(int(round(float(v) * 100)) >= 2 for v in vals[2:])  # some view conditioned on a generated one
    with pytest.raises(ValueError, match="at least one target"):
        autoregressive_orbit(rec, _object(), targets[:0], sampler="euler", sigmas=[1.0, 0.0])


def test_alternating_order_matches_cameras_alternating_order():
    n = 8
    ring = orbit_cameras(n, resolution=R)
    ref, targets = ring[:1], ring[1:].reshape(1, n - 1)
    order = generation_order(ref, targets, "alternating")[0].tolist()
    az = [round(math.degrees(float(a))) % 360 for a in targets.spherical()[0, :, 1]]
    want = [a % 360 for a in alternating_order(360 / n)]
    assert [az[i] for i in order] == [round(w) for w in want]  # 45, -45, 90, -90, 135, -135, 180
    assert generation_order(ref, targets, "sequential")[0].tolist() == list(range(n - 1))
    assert generation_order(ref, targets, [6, 5, 4, 3, 2, 1, 0])[0].tolist() == [6, 5, 4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="permutation"):
        generation_order(ref, targets, [0, 0, 1, 2, 3, 4, 5])
    # the orbit follows it: the set size at each target is its rank in the order (+1 for the input)
    res = autoregressive_orbit(Recorder(), _object(), targets, sampler="euler", sigmas=[5.0, 1.0, 0.0],
                               order="alternating")
    assert res.order[0].tolist() == order
    assert [int(res.set_sizes[0, t]) for t in order] == list(range(1, n))


def test_orbit_per_sample_seeds_and_coincident_targets():
    den = Recorder(mix=0.5)
    a, b = _object(2, 0.0), _object(2, 0.5)
    targets = orbit_cameras(8, resolution=R)  # target 0 and 1 coincide with the inputs: copied
    kw = dict(sampler="euler_ancestral", sigmas=[10.0, 3.0, 1.0, 0.3, 0.0], strategy="stochastic", guidance=None)
    both = autoregressive_orbit(den, [a, b], targets, seed=[11, 12], **kw)
    alone = autoregressive_orbit(den, b, targets, seed=[12], **kw)
    assert torch.equal(both.images[1], alone.images[0])
    again = autoregressive_orbit(den, [a, b], targets, seed=[11, 12], **kw)
    assert torch.equal(both.images, again.images)
    other = autoregressive_orbit(den, [a, b], targets, seed=[11, 99], **kw)
    assert torch.equal(both.images[0], other.images[0]) and not torch.equal(both.images[1], other.images[1])
    assert both.generated[:, :2].sum() == 0 and both.generated[:, 2:].all()
    assert torch.equal(both.images[0, :2], a.images) and both.order[0, :2].tolist() == [0, 1]
    assert both.set_sizes[0].tolist() == [0, 0, 2, 3, 4, 5, 6, 7]
    gen = autoregressive_orbit(den, a, targets, coincident="generate", **kw)
    assert gen.generated.all()


def test_fixed_views_orbit_conditions_on_the_inputs_only():
    rec = Recorder(mix=0.5)
    targets = orbit_cameras(8, resolution=R, start_azimuth_deg=10.0)[:4]  # none coincides with an input
    events = []
    kw = dict(sampler="euler_ancestral", sigmas=[10.0, 1.0, 0.0], strategy="stochastic", seed=3, autoregressive=False)
    res = autoregressive_orbit(rec, _object(2), targets, callback=events.append, **kw)
    assert res.set_sizes.tolist() == [[2, 2, 2, 2]] and res.generated.all() and res.nfe == 8
    assert {v for call in rec.seen for v in call} <= {0, 1}  # never a generated view
    assert all(isinstance(e["strategy"], StochasticConditioning) for e in events)
    # targets are independent of each other: the generation order changes nothing
    back = autoregressive_orbit(Recorder(mix=0.5), _object(2), targets, order=[3, 2, 1, 0], **kw)
    assert torch.equal(back.images, res.images)
    grown = autoregressive_orbit(Recorder(mix=0.5), _object(2), targets, **{**kw, "autoregressive": True})
    assert grown.set_sizes.tolist() == [[2, 3, 4, 5]]


def test_choose_input_views():
    from vantage.data.formats.common import DatasetError
    from vantage.sampling.inputs import choose_input_views

    assert choose_input_views(24) == [0] and choose_input_views(24, input_view=5) == [5]
    assert choose_input_views(24, input_views=[12, 0, -1]) == [12, 0, 23]
    assert choose_input_views(24, num_input_views=3, input_view=2) == [2, 10, 18]
    assert choose_input_views(5, num_input_views=5) == [0, 1, 2, 3, 4]
    assert choose_input_views(3, default_all=True) == [0, 1, 2]
    for kw, msg in (({"input_views": []}, "zero input views"), ({"num_input_views": 0}, "zero input views"),
                    ({"input_views": [0, 24]}, "has 24 views"), ({"input_views": [1, -23]}, "twice"),
                    ({"num_input_views": 25}, "only 24 views"), ({"input_view": 30}, "--input-view 30")):
        with pytest.raises(DatasetError, match=msg):
            choose_input_views(24, **kw)
