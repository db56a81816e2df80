"""ViewFusion's ``prediction="v"`` option (Salimans & Ho 2022, Sec. 4): the composed ε̂, the denoiser's x̂0 and the
training loss of a v-prediction model against direct computations, and the presets that use it."""

from __future__ import annotations

import pytest
import torch
from test_viewfusion import _perturbed, _random_case, _targets, _tiny, _views

from vantage.diffusion.losses import per_sample_mse, vp_training_inputs
from vantage.methods import build_method
from vantage.sampling.strategies import ViewSetCond

pytestmark = pytest.mark.usefixtures("single_thread")


def _gamma(sigma: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    s = sigma.double() / scale
    return (1 / (1 + s * s)).float()[:, None, None, None]


@pytest.mark.parametrize("input_range", ["signed", "unit"])
def test_v_model_composes_v_and_recovers_eps(input_range):
    m = _perturbed(_tiny(prediction="v", input_range=input_range))
    images, valid, x, sigma = _random_case()
    with torch.no_grad():
        comp = m.compose(x, sigma, _views(images, valid), _targets([1, 7, 13], 16))
    g = _gamma(sigma, m.scale)
    z = m.to_model_range(x) * g.sqrt()  # what the network saw
    for b in range(3):
        rows = (comp.batch_index == b).nonzero().flatten()
        w = comp.weights[b, comp.view_index[rows]]
        v_b = (w * comp.raw[rows, :3]).sum(0)
        assert torch.allclose(comp.pred[b], v_b, atol=1e-5)
        # ε_i = sqrt(γ)·v_i + sqrt(1 − γ)·z per view, composed with the same weights
        eps_i = g[b].sqrt() * comp.raw[rows, :3] + (1 - g[b]).sqrt() * z[b]
        assert torch.allclose(comp.eps[b], (w * eps_i).sum(0), atol=1e-5)
    assert not torch.allclose(comp.eps, comp.pred)


def test_v_denoiser_x0_is_the_v_parameterisation():
    m = _perturbed(_tiny(prediction="v"))
    images, valid, x, sigma = _random_case()
    views, target = _views(images, valid), _targets([1, 7, 13], 16)
    D = m.set_denoiser(clip_x0="none")
    with torch.no_grad():
        x0 = D(x, sigma, ViewSetCond(views, target))
        comp = m.compose(x, sigma, views, target)
    g = _gamma(sigma)
    z = x * g.sqrt()
    # x̂0 = sqrt(γ)·z − sqrt(1 − γ)·v̂ (network range = ours for a signed model)
    assert torch.allclose(x0, g.sqrt() * z - (1 - g).sqrt() * comp.pred, atol=1e-4)


def test_v_loss_compares_the_composed_v_with_its_target():
    m = _perturbed(_tiny(prediction="v"))
    images, valid, _, _ = _random_case()
    views, target = _views(images, valid), _targets([1, 7, 13], 16)
    x0 = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        loss = m.training_loss(x0, views, target, generator=torch.Generator().manual_seed(3))["loss"]
        tr = vp_training_inputs(x0, m.schedule, noise_cond="gamma", prediction="v",
                                generator=torch.Generator().manual_seed(3))
        angle, _ = m.angles(views, target)
        out = m.predict(tr.x_in, tr.noise_input, views.images, views.valid, angle)
        want = per_sample_mse(out.pred, tr.target.float()).mean()
        eps_loss = per_sample_mse(out.eps, tr.noise.float()).mean()
    assert torch.allclose(loss, want, atol=1e-6)
    assert not torch.allclose(loss, eps_loss, atol=1e-4)  # the v loss, not the ε loss of the same model


def test_eps_model_has_no_separate_prediction():
    m = _perturbed(_tiny())
    images, valid, x, sigma = _random_case()
    with torch.no_grad():
        comp = m.compose(x, sigma, _views(images, valid), _targets([1, 7, 13], 16))
    assert m.config.prediction == "eps" and comp.pred is None and comp.output is comp.eps


def test_prediction_option_and_presets():
    with pytest.raises(ValueError, match="prediction"):
        _tiny(prediction="x0")
    with torch.device("meta"):
        assert build_method("viewfusion-nmr64").config.prediction == "eps"  # the paper and its released weights
        for p in ("viewfusion-shapes32", "viewfusion-shapes64"):
            assert build_method(p).config.prediction == "v"
