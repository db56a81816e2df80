"""The ``vantage`` command: ``demo``, ``data``, ``sample``, ``train``, ``ema``, ``convert``, ``reconstruct``,
``export``, ``preprocess``, ``evaluate`` and ``serve``.

Each sub-command lives in its own module and registers itself with :func:`build_parser`.
Errors a user can fix (bad input, existing outputs) are printed as one line with exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from vantage import __version__
from vantage.cli.formatting import HelpFormatter

__all__ = ["build_parser", "main", "UserError"]


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from vantage.cli import convert, data, demo, ema, evaluate, export, preprocess, reconstruct, sample, serve
    from vantage.cli import train as train_cmd

    parser = argparse.ArgumentParser(
        prog="vantage",
        description="vantage: diffusion-based novel view synthesis (3DiM, ViewFusion, GeNVS, VIVID).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vantage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo.register(sub)
    data.register(sub)
    sample.register(sub)
    train_cmd.register(sub)
    ema.register(sub)
    convert.register(sub)
    reconstruct.register(sub)
    export.register(sub)
    preprocess.register(sub)
    evaluate.register(sub)
    serve.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vantage.data.formats.common import DatasetError
    from vantage.outputs import OutputExistsError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, DatasetError, OutputExistsError, FileNotFoundError) as e:
        print(f"vantage {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    # `python -m vantage.cli.main` runs this file as `__main__`; the sub-commands raise the UserError of
    # the importable `vantage.cli.main`, so run that module's main (one UserError class, one-line errors).
    from vantage.cli.main import main as _main

    sys.exit(_main())
