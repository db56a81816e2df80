"""The strategy options of ``vantage sample``: their flags, their validation and the strategy they select.

:func:`add_strategy_arguments` registers ``--strategy``, ``--max-rows``, ``--max-cond-views`` (``genvs-pooled``: the
views pooled per step), ``--max-context`` (the composed and
interpolated strategies: the inputs plus the ``K`` generated views nearest in pose, :mod:`vantage.sampling.context`)
and the interpolated-denoising group (``--t-in``, ``--t-auto``, ``--window``, ``--distance``, ``--separate-noise``,
and the single-target mode ``--walk-step`` / ``--save-walks``, :mod:`vantage.sampling.walks`).
:func:`choose_strategy` passes them to :func:`vantage.sampling.strategy_choice.choose_strategy` (the selection the web
server, ``vantage evaluate`` and the benchmarks share), turning its refusals into a one-line
:class:`~vantage.cli.main.UserError`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vantage.sampling.strategy_choice import StrategyChoice

__all__ = ["add_strategy_arguments", "choose_strategy", "composed_set_note"]


def add_strategy_arguments(p: argparse.ArgumentParser) -> None:
    """Register the strategy flags on the ``sample`` parser."""
    p.add_argument("--strategy", choices=["composed", "stochastic", "single", "interpolated", "genvs-pooled"],
                   default=None,
                   help="composed: every denoising step composes all views of the set with the learned per-pixel "
                        "weights (ViewFusion only; its default); stochastic: each step conditions on a random view "
                        "of the set (3DiM; the default for other methods); single: always on the first input; "
                        "interpolated: ViewFusion's interpolated denoising (Yang et al. 2024), all views near the "
                        "target fused with fixed weights; genvs-pooled: GeNVS's own set conditioning (the input, "
                        "a few earlier views and the latest one, each with its own volume; GeNVS's default)")
    p.add_argument("--max-rows", type=int, default=None, metavar="R",
                   help="ViewFusion (composed) and --strategy interpolated: at most R views per network call (the "
                        "set is split; less memory, same result)")
    p.add_argument("--max-cond-views", type=int, default=None, metavar="K", dest="max_cond_views",
                   help="--strategy genvs-pooled (GeNVS's default): condition every step on at most K views of the "
                        "set: the input views (at most K-1 of them), the latest generated view and random earlier "
                        "ones (default: the checkpoint's sample_max_views)")
    p.add_argument("--max-context", type=int, default=None, metavar="K",
                   help="--strategy composed or interpolated, autoregressive: condition on the input views and only "
                        "the K generated views nearest in pose to the target (default: all of them); a view then "
                        "costs at most inputs + K network rows per step instead of a number growing with the orbit")
    g = p.add_argument_group("interpolated strategy (Yang et al. 2024; docs/sampling.md)")
    g.add_argument("--t-in", type=float, default=None, metavar="T",
                   help="input temperature: input weight w_0 = exp(-(Δ_0/π)/T) (default 0.5)")
    g.add_argument("--t-auto", type=float, default=None, metavar="T",
                   help="temperature of the softmax over the other views' normalised distances (default 0.5)")
    g.add_argument("--window", type=float, default=None, metavar="DEG",
                   help="use the views within DEG degrees of the target (the input always) (default 125)")
    g.add_argument("--distance", choices=["azimuth", "azimuth+elevation"], default=None,
                   help="Δ: the azimuth difference about world +z, or plus |Δ elevation| (default: azimuth; "
                        "azimuth+elevation with --walk-step)")
    g.add_argument("--separate-noise", action="store_true",
                   help="the reference's variant: each branch draws its own sampler noise, the states are fused "
                        "(less noise; same result for deterministic samplers)")
    g.add_argument("--walk-step", type=float, default=None, metavar="DEG",
                   help="single-target mode: every target by its own walk from the input in steps of at most DEG "
                        "degrees (the paper: 10), each pose conditioned on the input and the walk's earlier poses, "
                        "the last kept; targets are independent (each seeded by its camera) instead of one "
                        "autoregressive orbit")
    g.add_argument("--save-walks", action="store_true",
                   help="with --walk-step: write every walk's poses to walks/NNN/ (frame NNN; the last pose is the "
                        "frame) with their cameras.json")


_FLAGS = {"strategy": "--strategy", "guidance": "--guidance", "max_rows": "--max-rows", "max_context": "--max-context",
          "weights": "--save-weights", "t_in": "--t-in", "t_auto": "--t-auto", "window_deg": "--window",
          "distance": "--distance", "separate_noise": "--separate-noise", "walk_step": "--walk-step",
          "order": "--order", "autoregressive": "--no-autoregressive", "max_views": "--max-cond-views"}


def choose_strategy(method: Any, args: argparse.Namespace) -> StrategyChoice:
    """The :class:`~vantage.sampling.strategy_choice.StrategyChoice` of the flags (strategy, name, options, order),
    by :func:`vantage.sampling.strategy_choice.choose_strategy`; a one-line user error for what does not fit."""
    from vantage.cli.main import UserError
    from vantage.sampling.strategy_choice import choose_strategy as choose

    if args.save_walks and args.walk_step is None:
        raise UserError("--save-walks writes the walks of the single-target mode: it needs --walk-step DEG")
    try:
        return choose(method, args.strategy, guidance=args.guidance, max_rows=args.max_rows,
                      max_context=args.max_context, autoregressive=args.autoregressive, weights=args.save_weights,
                      order=args.order, t_in=args.t_in, t_auto=args.t_auto, window_deg=args.window,
                      distance=args.distance, separate_noise=args.separate_noise, walk_step=args.walk_step,
                      names=_FLAGS, **_pooled(args))
    except ValueError as e:
        raise UserError(str(e)) from None


def _pooled(args: argparse.Namespace) -> dict[str, Any]:
    """``{"max_views": K}`` for ``--max-cond-views K`` (nothing without it, so callers' defaults stay)."""
    k = getattr(args, "max_cond_views", None)
    return {} if k is None else {"max_views": k}


def composed_set_note(cfg: Any, k: int, n_new: int, args: argparse.Namespace) -> str | None:
    """The note for a composed set larger than the model was trained with (``k`` inputs, ``n_new`` targets to
    generate), or None."""
    generated = max(0, n_new - 1) if args.autoregressive else 0
    if args.max_context is not None:
        generated = min(generated, args.max_context)
    largest = k + generated
    max_views = getattr(cfg, "max_views", largest)
    if largest <= max_views:
        return None
    return (f"the conditioning set reaches {largest} views, more than the {max_views} the model was trained with; "
            f"ViewFusion composes any number (a softmax over the views), quality may vary")
