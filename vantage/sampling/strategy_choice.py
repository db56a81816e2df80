"""Which multi-view strategy a method samples with, and with which options: the one selection behind ``vantage
sample``, ``vantage serve``, ``vantage evaluate`` and ``bench/bench_methods.py`` (``docs/sampling.md``).

* :func:`default_strategy_name`: a method's own ``default_strategy`` attribute (GeNVS: ``genvs-pooled``,
  regression: ``single``), else ``composed`` for ViewFusion (it composes its whole set), else ``stochastic``
  (3DiM's stochastic conditioning). Works on a method or its class (the web server reads a config only).
* :func:`choose_strategy`: a :class:`StrategyChoice` (what :func:`~vantage.sampling.autoregressive_orbit` takes as
  ``strategy`` and ``strategy_options``, and the default generation order) from explicit keyword options, or a
  :class:`ValueError` with a one-line message for what does not fit the method or the other options. ``names``
  says how the caller spells the options in those messages (the command: ``{"max_context": "--max-context"}``...).

Which option fits which strategy:

* ``max_context``: ``composed`` and ``interpolated``, autoregressive only (the inputs + the ``K`` nearest views);
* ``max_rows``: ``interpolated`` (a strategy option) and ``composed`` (sets the ViewFusion config's ``max_rows``);
* ``weights``: ``composed`` only (its per-view weight maps; ``"mean"`` accumulates them over the calls);
* ``t_in``, ``t_auto``, ``window_deg``, ``distance``, ``separate_noise``, ``walk_step``: ``interpolated`` only;
* ``guidance`` ≠ 0: methods with classifier-free guidance (not ViewFusion);
* ``genvs-pooled``: GeNVS only (the ``input_views`` of the set are kept: ``keep_first``); ``max_views``: its
  pooled set size (``vantage sample --max-cond-views``), ``genvs-pooled`` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STRATEGY_NAMES", "StrategyChoice", "choose_strategy", "composes", "default_strategy_name"]

STRATEGY_NAMES = ("stochastic", "single", "interpolated", "composed", "genvs-pooled")
INTERPOLATED_DEFAULTS = {"t_in": 0.5, "t_auto": 0.5, "window_deg": 125.0}
_SPELLING = {"autoregressive": "autoregressive=False"}  # how an option is named in messages when the caller does not


@dataclass
class StrategyChoice:
    """The selected strategy.

    Attributes:
        strategy: what :func:`~vantage.sampling.autoregressive_orbit` takes as ``strategy``: a registered name, or
            ViewFusion's :func:`~vantage.methods.viewfusion.composed_strategy` factory.
        name: the strategy's name (one of :data:`STRATEGY_NAMES`).
        options: its ``strategy_options`` (a fresh dict: callers may add to it).
        order: the generation order: the one given, else ``alternating`` for ``interpolated`` (the paper's),
            ``sequential`` otherwise.
    """

    strategy: Any
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    order: str = "sequential"


def composes(method: Any) -> bool:
    """Whether ``method`` (a method or its class) composes its whole set: ViewFusion."""
    return getattr(method, "name", None) == "viewfusion" and callable(getattr(method, "set_denoiser", None))


def default_strategy_name(method: Any) -> str:
    """The strategy ``method`` (a method or its class) samples with when none is named (module docstring)."""
    return getattr(method, "default_strategy", None) or ("composed" if composes(method) else "stochastic")


def choose_strategy(method: Any, name: str | None = None, *, guidance: float | None = None,
                    max_rows: int | None = None, max_context: int | None = None, autoregressive: bool = True,
                    weights: str | None = None, input_views: int = 1, order: str | None = None,
                    t_in: float | None = None, t_auto: float | None = None, window_deg: float | None = None,
                    distance: str | None = None, separate_noise: bool = False, walk_step: float | None = None,
                    names: Mapping[str, str] | None = None, max_views: int | None = None) -> StrategyChoice:
    """The strategy ``name`` (None: :func:`default_strategy_name`) for ``method`` with these options, checked.

    Args:
        method: the loaded :class:`~vantage.methods.base.Method` (its single-view denoiser is built once to check
            that it has one).
        guidance: the guidance weight that will be used (≠ 0 is refused for a method without guidance).
        max_rows: at most this many views per network call (``interpolated``: an option; ``composed``: written
            into ``method.config.max_rows``); ``>= 1``.
        max_context: ``composed`` / ``interpolated``: condition on the inputs and only the ``K`` generated views
            nearest in pose (:func:`~vantage.sampling.context.nearest_context`); ``>= 0``, autoregressive only.
        autoregressive: whether generated views join the set (False: ``max_context`` and walks do not apply).
        weights: ``"mean"`` or ``"final"``: the caller records the composed strategy's weight maps (``"mean"``
            accumulates them over the calls); only with ``composed``.
        input_views: the number of input views (``genvs-pooled`` keeps them all: ``keep_first``).
        order: the generation order, if the caller fixes one (refused with ``walk_step``).
        t_in, t_auto, window_deg, distance, separate_noise: ``interpolated`` options (None / False: the paper's
            defaults; ``distance`` then ``azimuth``, or ``azimuth+elevation`` with ``walk_step``).
        walk_step: ``interpolated``'s single-target mode, the largest step of a walk in degrees (> 0); it is
            checked here, the walks themselves are :func:`~vantage.sampling.walks.sample_target_walks`.
        max_views: ``genvs-pooled``: pool at most this many views of the set (``>= 1``; None: the checkpoint's
            ``sample_max_views``).
        names: how the caller names the options in the messages (``{"max_context": "--max-context", ...}``; keys:
            the keyword names above and ``strategy``, ``autoregressive`` (its False setting)).

    Raises:
        ValueError: a one-line message naming the option, what it needs and what was given.
    """

    def say(key: str) -> str:
        return (names or {}).get(key) or _SPELLING.get(key, key)

    name = name or default_strategy_name(method)
    strategy_word = say("strategy")
    if name not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    if name == "genvs-pooled" and method.name != "genvs":
        raise ValueError(f"{strategy_word} genvs-pooled pools GeNVS feature volumes; '{method.name}' has none "
                         f"(use stochastic, single or interpolated)")
    if name == "composed" and not composes(method):
        raise ValueError(f"{strategy_word} composed needs a ViewFusion checkpoint; '{method.name}' conditions on one "
                         f"view at a time (use stochastic or single)")
    if weights and name != "composed":
        raise ValueError(f"{say('weights')} shows the weights of ViewFusion's composition: it needs {strategy_word} "
                         f"composed (got {name})")
    interpolated = {"t_in": t_in, "t_auto": t_auto, "window_deg": window_deg, "distance": distance,
                    "separate_noise": separate_noise or None, "walk_step": walk_step}
    given = [say(k) for k, v in interpolated.items() if v is not None]
    if name != "interpolated" and given:
        raise ValueError(f"{', '.join(given)}: option(s) of interpolated denoising, they need {strategy_word} "
                         f"interpolated (got {name})")
    _check_walk(walk_step, autoregressive, order, say)
    if max_views is not None:
        if name != "genvs-pooled":
            raise ValueError(f"{say('max_views')} sets how many views GeNVS's pooled set conditioning uses: it needs "
                             f"{strategy_word} genvs-pooled (got {name})")
        if isinstance(max_views, bool) or not isinstance(max_views, int) or max_views < 1:
            raise ValueError(f"{say('max_views')} is a number of views and must be >= 1, got {max_views}")
    _check_max_context(max_context, name, autoregressive, say)
    if guidance and not getattr(method, "supports_guidance", True):
        raise ValueError(f"{method.name} has no classifier-free guidance (no unconditional branch): set "
                         f"{say('guidance')} to 0 (got {guidance:g})")
    try:
        method.single_view_denoiser()
    except NotImplementedError:
        raise ValueError(f"the checkpoint's method '{method.name}' has no single-view denoiser: strategies "
                         f"single/stochastic/interpolated need one (this method samples with its own set "
                         f"conditioning)") from None
    if max_rows is not None and not (isinstance(max_rows, int) and max_rows >= 1):
        raise ValueError(f"{say('max_rows')} must be >= 1, got {max_rows}")
    order = order or ("alternating" if name == "interpolated" else "sequential")
    if name == "interpolated":
        for key, value in (("t_in", t_in), ("t_auto", t_auto)):
            if value is not None and not value > 0:
                raise ValueError(f"{say(key)} is a temperature and must be > 0, got {value:g}")
        if window_deg is not None and not window_deg >= 0:
            raise ValueError(f"{say('window_deg')} is an angle in degrees and must be >= 0, got {window_deg:g}")
        given_options = {"t_in": t_in, "t_auto": t_auto, "window_deg": window_deg}
        options = {k: float(INTERPOLATED_DEFAULTS[k] if v is None else v) for k, v in given_options.items()}
        options.update(distance=distance or ("azimuth+elevation" if walk_step is not None else "azimuth"),
                       separate_noise=bool(separate_noise), max_rows=max_rows, max_context=max_context)
        return StrategyChoice(name, name, options, order)
    if max_rows is not None:
        if not hasattr(method.config, "max_rows"):
            raise ValueError(f"{say('max_rows')} applies to ViewFusion's composed set and to {strategy_word} "
                             f"interpolated; '{method.name}' has no such option")
        method.config.max_rows = max_rows
    if name == "composed":
        from vantage.methods.viewfusion import composed_strategy

        return StrategyChoice(composed_strategy, name, {"accumulate_weights": weights == "mean",
                                                        "max_context": max_context}, order)
    if name == "genvs-pooled":
        pooled = {"keep_first": input_views, **({} if max_views is None else {"max_views": max_views})}
        return StrategyChoice(name, name, pooled, order)
    return StrategyChoice(name, name, {}, order)


def _check_walk(walk_step: float | None, autoregressive: bool, order: str | None, say: Any) -> None:
    """The single-target mode: a positive step, and nothing that only an orbit has."""
    if walk_step is None:
        return
    if not (isinstance(walk_step, int | float) and math.isfinite(walk_step) and walk_step > 0):
        raise ValueError(f"{say('walk_step')} is the largest step of a walk in degrees and must be > 0, "
                         f"got {walk_step:g}")
    if not autoregressive:
        raise ValueError(f"{say('walk_step')}: a walk conditions every pose on the ones before it; "
                         f"{say('autoregressive')} does not apply (every target is already independent of the others)")
    if order is not None:
        raise ValueError(f"{say('walk_step')} generates every target independently by its own walk: {say('order')} "
                         f"{order} does not apply")


def _check_max_context(max_context: int | None, name: str, autoregressive: bool, say: Any) -> None:
    """``max_context=K``: the composed or interpolated strategy, autoregressive, an int ``K >= 0``."""
    if max_context is None:
        return
    if name not in ("composed", "interpolated"):
        raise ValueError(f"{say('max_context')} bounds the generated views that the composed and interpolated "
                         f"strategies condition on: it needs {say('strategy')} composed or interpolated (got {name})")
    if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 0:
        raise ValueError(f"{say('max_context')} is a number of generated views and must be >= 0, got {max_context}")
    if not autoregressive:
        raise ValueError(f"{say('max_context')} bounds the generated views in the set; with {say('autoregressive')} "
                         f"there are none (every target conditions on the inputs only)")
