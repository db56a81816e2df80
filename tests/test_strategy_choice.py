"""The one strategy selection (`vantage.sampling.strategy_choice`) that `vantage sample`, `vantage serve`,
`vantage evaluate` and the benchmarks share: defaults per method, which options fit which strategy, the options and
order it returns, and its messages in the caller's spelling. Stand-in methods: nothing is built."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from vantage.methods.viewfusion import composed_strategy
from vantage.sampling.strategy_choice import STRATEGY_NAMES, choose_strategy, composes, default_strategy_name


class Plain:
    """A view-conditioned method with guidance (3DiM-like)."""

    name = "3dim"
    supports_guidance = True

    def __init__(self) -> None:
        self.config = SimpleNamespace()

    def single_view_denoiser(self):
        return lambda x, s, c: x


class Fusion(Plain):
    name = "viewfusion"
    supports_guidance = False

    def __init__(self) -> None:
        self.config = SimpleNamespace(max_rows=None)

    def set_denoiser(self):  # pragma: no cover - only its presence matters
        raise AssertionError


class Pooled(Plain):
    name = "genvs"
    default_strategy = "genvs-pooled"


class NoSingleView(Plain):
    name = "vivid"

    def single_view_denoiser(self):
        raise NotImplementedError


def test_defaults_per_method_and_on_classes():
    assert [default_strategy_name(m) for m in (Plain(), Fusion(), Pooled())] == ["stochastic", "composed",
                                                                                  "genvs-pooled"]
    assert default_strategy_name(Fusion) == "composed" and composes(Fusion) and not composes(Plain)
    plain = choose_strategy(Plain())
    assert (plain.strategy, plain.name, plain.options, plain.order) == ("stochastic", "stochastic", {}, "sequential")
    fused = choose_strategy(Fusion())
    assert fused.strategy is composed_strategy and fused.options == {"accumulate_weights": False, "max_context": None}
    assert choose_strategy(Fusion(), weights="mean").options["accumulate_weights"] is True
    assert choose_strategy(Pooled(), input_views=3).options == {"keep_first": 3}
    assert set(STRATEGY_NAMES) == {"stochastic", "single", "interpolated", "composed", "genvs-pooled"}


def test_interpolated_options_order_and_max_context():
    c = choose_strategy(Plain(), "interpolated")
    assert c.order == "alternating" and c.options == {"t_in": 0.5, "t_auto": 0.5, "window_deg": 125.0,
                                                      "distance": "azimuth", "separate_noise": False,
                                                      "max_rows": None, "max_context": None}
    c = choose_strategy(Plain(), "interpolated", t_in=0.4, window_deg=0, max_rows=2, max_context=3, walk_step=10,
                        separate_noise=True)
    assert c.options == {"t_in": 0.4, "t_auto": 0.5, "window_deg": 0.0, "distance": "azimuth+elevation",
                         "separate_noise": True, "max_rows": 2, "max_context": 3}
    assert choose_strategy(Plain(), "interpolated", order="sequential").order == "sequential"
    assert choose_strategy(Fusion(), max_context=0).options["max_context"] == 0
    fusion = Fusion()
    assert choose_strategy(fusion, max_rows=4).name == "composed" and fusion.config.max_rows == 4


@pytest.mark.parametrize("method,name,options,message", [
    (Plain(), "bogus", {}, "unknown strategy 'bogus'"),
    (Plain(), "genvs-pooled", {}, "strategy genvs-pooled pools GeNVS feature volumes; '3dim' has none"),
    (Plain(), "composed", {}, "strategy composed needs a ViewFusion checkpoint"),
    (Plain(), None, {"weights": "final"}, "weights shows the weights of ViewFusion's composition: it needs "
                                          "strategy composed (got stochastic)"),
    (Plain(), None, {"t_in": 0.3, "walk_step": 10}, "t_in, walk_step: option(s) of interpolated denoising, they "
                                                    "need strategy interpolated (got stochastic)"),
    (Plain(), "single", {"max_context": 2}, "max_context bounds the generated views that the composed and "
                                            "interpolated strategies condition on: it needs strategy composed or "
                                            "interpolated (got single)"),
    (Plain(), "interpolated", {"max_context": -1}, "must be >= 0, got -1"),
    (Plain(), "interpolated", {"max_context": 2, "autoregressive": False}, "with autoregressive=False there are none"),
    (Plain(), "interpolated", {"walk_step": 0}, "must be > 0, got 0"),
    (Plain(), "interpolated", {"walk_step": 10, "order": "alternating"}, "order alternating does not apply"),
    (Plain(), "interpolated", {"t_auto": 0}, "t_auto is a temperature and must be > 0, got 0"),
    (Plain(), "interpolated", {"window_deg": -1}, "window_deg is an angle in degrees and must be >= 0"),
    (Plain(), None, {"max_rows": 0}, "max_rows must be >= 1, got 0"),
    (Plain(), None, {"max_rows": 2}, "'3dim' has no such option"),
    (Fusion(), None, {"guidance": 3.0}, "viewfusion has no classifier-free guidance (no unconditional branch): set "
                                        "guidance to 0 (got 3)"),
    (NoSingleView(), None, {}, "'vivid' has no single-view denoiser"),
])
def test_refusals(method, name, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        choose_strategy(method, name, **options)


def test_messages_in_the_callers_spelling():
    with pytest.raises(ValueError, match=r"--max-context bounds .* it needs --strategy composed or interpolated "
                                         r"\(got stochastic\)"):
        choose_strategy(Plain(), max_context=1, names={"max_context": "--max-context", "strategy": "--strategy"})
    with pytest.raises(ValueError, match="with --no-autoregressive there are none"):
        choose_strategy(Fusion(), max_context=1, autoregressive=False, names={"autoregressive": "--no-autoregressive"})
    # guidance 0 is no guidance: accepted for a method without it
    assert choose_strategy(Fusion(), guidance=0.0).name == "composed"


def test_the_web_server_selects_through_it():
    from vantage.serve.models import STRATEGY_CHOICES, ModelInfo, ServeError
    from vantage.serve.models import choose_strategy as serve_choice

    assert STRATEGY_CHOICES == ("auto", *STRATEGY_NAMES)
    for m in (Plain(), Fusion(), Pooled()):
        info = ModelInfo(None, m.name, m.config, composes(m), m.supports_guidance, default_strategy_name(m))
        strategy, name, options, order = serve_choice(info, m, "auto")
        assert name == default_strategy_name(m) and order == "sequential"
        assert options == {"stochastic": {}, "composed": {"accumulate_weights": True, "max_context": None},
                           "genvs-pooled": {"keep_first": 1}}[name]
    assert serve_choice(info, Pooled(), "interpolated")[3] == "alternating"
    with pytest.raises(ServeError, match="unknown strategy 'best'; choose one of auto, stochastic"):
        serve_choice(info, Pooled(), "best")
    fusion = Fusion()
    info = ModelInfo(None, "viewfusion", fusion.config, True, False, "composed")
    with pytest.raises(ServeError, match="set the guidance to 0"):
        serve_choice(info, fusion, None, guidance=2.0)
