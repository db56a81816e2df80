"""The strategy options of ``vantage sample``: their flags, their validation and the strategy they select.

:func:`add_strategy_arguments` registers ``--strategy``, ``--max-rows``, ``--max-context`` (ViewFusion's composed
strategy: the inputs plus the ``K`` generated views nearest in pose, :mod:`vantage.sampling.context`) and the
interpolated-denoising group (``--t-in``, ``--t-auto``, ``--window``, ``--distance``, ``--separate-noise``, and
the single-target mode ``--walk-step`` / ``--save-walks``, :mod:`vantage.sampling.walks`).
:func:`choose_strategy` turns them into what :func:`vantage.sampling.autoregressive_orbit` takes, refusing with a
one-line :class:`~vantage.cli.main.UserError` what does not fit the checkpoint or the other options.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

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
    p.add_argument("--max-context", type=int, default=None, metavar="K",
                   help="--strategy composed, autoregressive: compose the input views and only the K generated views "
                        "nearest in pose to the target (default: all of them); a view then costs at most inputs + K "
                        "network rows per step instead of a number growing with the orbit")
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


def choose_strategy(method: Any, args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]]:
    """``(strategy for autoregressive_orbit, its name, strategy options)``; user errors for what does not fit."""
    from vantage.cli.main import UserError

    composing = callable(getattr(method, "set_denoiser", None)) and method.name == "viewfusion"
    name = args.strategy or getattr(method, "default_strategy", None) or ("composed" if composing else "stochastic")
    if name == "genvs-pooled" and method.name != "genvs":
        raise UserError(f"--strategy genvs-pooled pools GeNVS feature volumes; '{method.name}' has none "
                        f"(use stochastic, single or interpolated)")
    if name == "composed" and not composing:
        raise UserError(f"--strategy composed needs a ViewFusion checkpoint; '{method.name}' conditions on one view "
                        f"at a time (use stochastic or single)")
    if args.save_weights and name != "composed":
        raise UserError(f"--save-weights shows the weights of ViewFusion's composition: it needs --strategy "
                        f"composed (got {name})")
    flags = {"--t-in": args.t_in, "--t-auto": args.t_auto, "--window": args.window, "--distance": args.distance,
             "--separate-noise": args.separate_noise or None, "--walk-step": args.walk_step}
    given = [f for f, v in flags.items() if v is not None]
    if name != "interpolated" and given:
        raise UserError(f"{', '.join(given)}: option(s) of interpolated denoising, they need --strategy interpolated "
                        f"(got {name})")
    _check_walk(args)
    _check_max_context(args, name)
    if args.guidance and not getattr(method, "supports_guidance", True):
        raise UserError(f"{method.name} has no classifier-free guidance (no unconditional branch): "
                        f"leave out --guidance (or give 0), got --guidance {args.guidance:g}")
    try:
        method.single_view_denoiser()
    except NotImplementedError:
        raise UserError(f"the checkpoint's method '{method.name}' has no single-view denoiser: strategies "
                        f"single/stochastic/interpolated need one (this method samples with its own set "
                        f"conditioning)") from None
    if args.max_rows is not None and args.max_rows < 1:
        raise UserError(f"--max-rows must be >= 1, got {args.max_rows}")
    if name == "interpolated":
        for flag, value in (("--t-in", args.t_in), ("--t-auto", args.t_auto)):
            if value is not None and not value > 0:
                raise UserError(f"{flag} is a temperature and must be > 0, got {value:g}")
        if args.window is not None and not args.window >= 0:
            raise UserError(f"--window is an angle in degrees and must be >= 0, got {args.window:g}")
        window = 125.0 if args.window is None else args.window  # may be 0
        distance = args.distance or ("azimuth+elevation" if args.walk_step is not None else "azimuth")
        return name, name, {"t_in": args.t_in or 0.5, "t_auto": args.t_auto or 0.5, "window_deg": window,
                            "distance": distance, "separate_noise": args.separate_noise, "max_rows": args.max_rows}
    if args.max_rows is not None:
        if not hasattr(method.config, "max_rows"):
            raise UserError(f"--max-rows applies to ViewFusion's composed set and to --strategy interpolated; "
                            f"'{method.name}' has no such option")
        method.config.max_rows = args.max_rows
    if name != "composed":
        return name, name, {}
    from vantage.methods.viewfusion import composed_strategy

    return composed_strategy, name, {"accumulate_weights": args.save_weights == "mean",
                                     "max_context": args.max_context}


def _check_walk(args: argparse.Namespace) -> None:
    """``--walk-step`` / ``--save-walks``: a positive step, and nothing that only an orbit has."""
    from vantage.cli.main import UserError

    if args.walk_step is None:
        if args.save_walks:
            raise UserError("--save-walks writes the walks of the single-target mode: it needs --walk-step DEG")
        return
    if not (math.isfinite(args.walk_step) and args.walk_step > 0):
        raise UserError(f"--walk-step is the largest step of a walk in degrees and must be > 0, got {args.walk_step:g}")
    if not args.autoregressive:
        raise UserError("--walk-step: a walk conditions every pose on the ones before it; --no-autoregressive "
                        "does not apply (every target is already independent of the others)")
    if args.order is not None:
        raise UserError(f"--walk-step generates every target independently by its own walk: --order {args.order} "
                        f"does not apply")


def _check_max_context(args: argparse.Namespace, name: str) -> None:
    """``--max-context K``: the composed strategy, autoregressive, ``K >= 0``."""
    from vantage.cli.main import UserError

    if args.max_context is None:
        return
    if name != "composed":
        raise UserError(f"--max-context bounds the views ViewFusion's composed strategy composes: it needs "
                        f"--strategy composed (got {name})")
    if args.max_context < 0:
        raise UserError(f"--max-context is a number of generated views and must be >= 0, got {args.max_context}")
    if not args.autoregressive:
        raise UserError("--max-context bounds the generated views in the set; with --no-autoregressive there are "
                        "none (every target composes the inputs only)")


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
