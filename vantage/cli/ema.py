"""``vantage ema``: EDM2's post-hoc EMA: the weights of a power-function EMA of any width, reconstructed after
training from the snapshots a run kept (``--set train.ema_posthoc=true``), written as a checkpoint folder.

    vantage ema RUN_DIR --sigma-rel 0.08 --out CKPT_DIR [--step N] [--overwrite]
    vantage ema RUN_DIR --list

The run keeps power EMAs of two widths (``train.ema_posthoc_stds``, default σ_rel 0.05 and 0.10) and writes
snapshots of both to ``RUN_DIR/ema_snapshots/`` every ``train.ema_posthoc_every``. The EMA of width ``--sigma-rel``
at step ``--step`` (default: the newest snapshot) is the least-squares combination of the snapshots up to that
step whose averaging profiles best match the requested one (Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models", Sec. 3.2 and Appendix C.2; :mod:`vantage.train.posthoc_ema`). The relative
L2 error of that profile match is printed and recorded.

``--out`` becomes a checkpoint folder (``config.json``: the run's config with ``step``, ``images`` and
``posthoc_ema``; ``model.safetensors``) for ``vantage sample --checkpoint`` and ``vantage evaluate --checkpoint``.
It must be new or empty unless ``--overwrite``; the run folder and its ``checkpoints/`` and ``ema_snapshots/``
are refused. See ``docs/training.md`` ("Post-hoc EMA").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "cmd_ema"]

EPILOG = """examples:
  vantage train vivid-shapes32 --data synthetic --out runs/v32 --set train.ema_posthoc=true
  vantage ema runs/v32 --list
  vantage ema runs/v32 --sigma-rel 0.08 --out runs/v32-ema0.08
  vantage sample --checkpoint runs/v32-ema0.08 --input photo.png --out orbit
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ema", formatter_class=HelpFormatter, description=__doc__, epilog=EPILOG,
                       help="reconstruct a post-hoc power-function EMA (EDM2) of a run as a checkpoint")
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="a training run that kept EMA snapshots")
    p.add_argument("--sigma-rel", type=float, default=None,
                   help="relative width σ_rel of the EMA to reconstruct, in (0, 0.3) (e.g. 0.05, 0.08, 0.10)")
    p.add_argument("--step", type=int, default=None,
                   help="training step whose EMA to reconstruct (default: the newest snapshot's)")
    p.add_argument("--out", type=Path, default=None, help="checkpoint folder to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty --out")
    p.add_argument("--list", action="store_true", help="list the run's snapshots and exit")
    p.set_defaults(func=cmd_ema)


def cmd_ema(args: argparse.Namespace) -> int:
    from vantage.cli.main import UserError
    from vantage.train.posthoc_ema import SNAPSHOTS, list_snapshots, write_posthoc_checkpoint

    if not args.run.is_dir():
        raise UserError(f"run folder not found: {args.run}")
    try:
        snaps = list_snapshots(args.run)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.list:
        if not snaps:
            print(f"{args.run} has no EMA snapshots (train with --set train.ema_posthoc=true)")
            return 0
        steps = sorted({s.step for s in snaps})
        widths = sorted({s.sigma_rel for s in snaps})
        print(f"{len(snaps)} snapshots in {args.run / SNAPSHOTS}: {len(steps)} steps x widths "
              f"{', '.join(f'{w:g}' for w in widths)}")
        for step in steps:
            row = [s for s in snaps if s.step == step]
            widths_here = ", ".join(f"{s.sigma_rel:g}" for s in row)
            print(f"  step {step:>8}  {row[0].images / 1000:>10g} kimg  σ_rel {widths_here}")
        return 0
    if args.sigma_rel is None or args.out is None:
        raise UserError("give --sigma-rel and --out (or --list)")
    if not 0 < args.sigma_rel < 0.3:
        raise UserError(f"--sigma-rel must be in (0, 0.3) (EDM2's relative width), got {args.sigma_rel:g}")
    try:
        out, result = write_posthoc_checkpoint(args.run, args.sigma_rel, args.out, step=args.step,
                                               overwrite=args.overwrite)
    except ValueError as e:
        raise UserError(str(e)) from None
    widths = sorted({s.sigma_rel for s in result.snapshots})
    print(f"wrote {out}: power-function EMA σ_rel={result.sigma_rel:g} (γ={result.gamma:.3f}) at step {result.step} "
          f"({result.images / 1000:g} kimg) from {len(result.snapshots)} snapshots (σ_rel "
          f"{', '.join(f'{w:g}' for w in widths)}); relative profile error {100 * result.residual:.3g}%")
    if result.residual > 0.05:
        print("note: the stored snapshots match this width or step poorly (more than 5% profile error); the "
              "result is an approximation (a width between the stored ones, at a snapshot step, matches best)")
    print(f"use it with: vantage sample --checkpoint {out} ...")
    return 0
