"""``vantage serve``: a local web page that generates novel views from a photo or a benchmark object.

    vantage serve [--checkpoint RUN_DIR] [--port P] [--host 127.0.0.1] [--device D] [--views N] [--steps K]
                  [--objects N]

The page (Gradio; install the ``web`` extra: ``pip install -e ".[web]"``) takes an uploaded image or a
held-out benchmark object, shows it preprocessed the way the model sees it, and generates one view at a
chosen azimuth and elevation, or an orbit, with any sampler, number of steps, guidance weight, seed and
strategy. It shows the generated views, the orbit GIF and, for ViewFusion, the per-pixel weight maps, with a
progress bar while it runs. Requests are queued (one model run at a time). A different checkpoint can be
typed into the page.

The model: ``--checkpoint`` (a run folder, whose newest checkpoint is used, or a checkpoint folder), else the
default model shipped in ``vantage/assets/default-3dim/`` when it is there. The model is loaded before the
server starts, so a broken checkpoint is reported at once.

The server binds 127.0.0.1 (this machine only) unless ``--host`` says otherwise; it has no login, so do not
expose it to a network you do not trust. Results go to a temporary folder of its own, removed when it stops.
See ``docs/serve.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import threading
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "cmd_serve", "gradio_available", "INSTALL_HINT"]

INSTALL_HINT = ('vantage serve needs gradio, which is not installed. Install the web extra: pip install -e ".[web]" '
                '(in a vantage checkout) or pip install "gradio>=4"')
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

EPILOG = """examples:
  vantage serve --checkpoint runs/3dim                       # http://127.0.0.1:7860
  vantage serve --checkpoint runs/3dim --port 8080 --steps 16 --views 12
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", formatter_class=HelpFormatter, description=__doc__, epilog=EPILOG,
                       help="a local web page (Gradio) that generates novel views")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                   help="run or checkpoint folder (default: the shipped default model, vantage/assets/default-3dim/, "
                        "when it is there)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; the default serves this machine only (0.0.0.0: every network interface, "
                        "without any login)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--views", type=int, default=8, metavar="N", help="default number of orbit views on the page")
    p.add_argument("--steps", type=int, default=None, metavar="K",
                   help="default sampling steps on the page (default: the model's)")
    p.add_argument("--objects", type=int, default=12, metavar="N",
                   help="how many held-out benchmark objects the page offers (at most 100)")
    p.set_defaults(func=cmd_serve)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl-C: it closes and its temporary folder is removed


def gradio_available() -> bool:
    """Whether gradio can be imported (without importing it)."""
    return importlib.util.find_spec("gradio") is not None


def cmd_serve(args: argparse.Namespace) -> int:
    from vantage.cli.main import UserError

    if not gradio_available():
        print(f"vantage serve: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from vantage.serve.engine import MAX_STEPS, MAX_VIEWS, ServeEngine
    from vantage.serve.models import ServeError, default_checkpoint

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in [0, 65535], got {args.port}")
    if not 2 <= args.views <= MAX_VIEWS:
        raise UserError(f"--views must be in [2, {MAX_VIEWS}], got {args.views}")
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise UserError(f"--steps must be in [1, {MAX_STEPS}], got {args.steps}")
    try:
        checkpoint = default_checkpoint(args.checkpoint)
    except ServeError as e:
        raise UserError(str(e)) from None
    engine = ServeEngine(checkpoint, device=args.device, views=args.views, steps=args.steps,
                         benchmark_objects=args.objects)
    try:
        _, info = engine.load()  # a broken checkpoint is reported now, not on the first request
    except ServeError as e:
        raise UserError(str(e)) from None
    from vantage.serve.app import build_app, launch

    print(f"model: {info.describe()}; device {engine.device}")
    if args.host not in LOCAL_HOSTS:
        print(f"note: serving on {args.host}: anyone who can reach this address can use the page (there is no "
              f"login); the default 127.0.0.1 serves this machine only")
    print(f"results go to {engine.store.root} (temporary, removed when the server stops); Ctrl-C stops it")
    app = build_app(engine)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        launch(app, engine, host=args.host, port=args.port, block=True)
    except OSError as e:  # e.g. the port is taken
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e}") from None
    finally:
        app.close()
        engine.store.cleanup()
    return 0
