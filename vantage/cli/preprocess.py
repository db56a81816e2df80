"""``vantage preprocess``: frame your photos the way the model's training views were framed.

    vantage preprocess IMAGE... --out DIR [--checkpoint RUN_DIR] [--resolution N] [--object-fraction F]
                       [--background white|black|R,G,B] [--matting auto|threshold|alpha|rembg]
                       [--params JSON_OR_DIR] [--max-side N] [--overwrite]

For each image: find the object (its alpha channel; else a threshold against a near-uniform background,
estimated from the border pixels; or a matting backend such as rembg when it and its model file are on
this machine), centre its bounding box, pad to a square, scale it so that its longest side is the object
fraction of the frame, composite it on the background and resize it (antialiased) to the resolution.
The resolution, object fraction and background are the checkpoint's (``--checkpoint``; a model config
without ``object_fraction`` gets the synthetic training data's 0.63) unless given; without a checkpoint
they default to 256, 0.63 and white.

Writes into ``--out`` (new or empty, unless ``--overwrite``), per image ``NAME``: ``NAME.png`` (RGB),
``NAME_mask.png`` and ``NAME.json`` (every parameter used). ``--params`` repeats an earlier run exactly:
a ``NAME.json`` (one image) or the earlier ``--out`` folder. Large images are downscaled to
``--max-side`` first. Warnings (the object touches the border: it will be cropped; a tiny object; a
non-uniform background) are printed; an unreadable file or an image without an object is an error,
and then nothing is written. See ``docs/preprocess.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "cmd_preprocess", "parse_background"]

_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}


def parse_background(text: str) -> tuple[float, float, float]:
    """``white`` | ``black`` | ``grey`` | ``R,G,B`` (0-255) -> RGB in [0, 1]."""
    key = text.strip().lower()
    if key in _NAMED:
        values = list(_NAMED[key])
    else:
        try:
            values = [int(v) for v in key.split(",")]
        except ValueError:
            values = []
        if len(values) != 3 or not all(0 <= v <= 255 for v in values):
            raise argparse.ArgumentTypeError(f"expected white, black, grey or R,G,B with 0-255 integers like "
                                             f"255,255,255, got {text!r}")
    return tuple(v / 255.0 for v in values)


def register(sub: argparse._SubParsersAction) -> None:
    from vantage.preprocess import MASK_SOURCES, MATTING_BACKENDS

    p = sub.add_parser("preprocess", formatter_class=HelpFormatter, description=__doc__,
                       help="mask, recentre and scale photos to the model's training framing")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files (png, jpg, webp, ...)")
    p.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                   help="a run or checkpoint folder: its resolution, object fraction and background")
    p.add_argument("--resolution", type=int, default=None, metavar="N",
                   help="output side in pixels (default: the checkpoint's, else 256)")
    p.add_argument("--object-fraction", type=float, default=None, metavar="F",
                   help="longest side of the object's bounding box over the image side (default: the checkpoint's, "
                        "else the synthetic training data's 0.63)")
    p.add_argument("--background", type=parse_background, default=None, metavar="white|R,G,B",
                   help="colour the object is composited on (default: the checkpoint's, else white)")
    p.add_argument("--matting", choices=[*MASK_SOURCES, *MATTING_BACKENDS], default="auto",
                   help="how the object is found: alpha (the alpha channel), threshold (a near-uniform background), "
                        "rembg (needs the rembg package and its model file; never downloaded), auto (alpha when the "
                        "image has one, else threshold, else rembg when the background is not uniform)")
    p.add_argument("--params", type=Path, default=None, metavar="JSON_OR_DIR",
                   help="repeat an earlier run: its NAME.json (one IMAGE) or its --out folder (NAME.json per image)")
    p.add_argument("--max-side", type=int, default=None, metavar="N",
                   help="downscale larger images to this longer side first, for speed (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.set_defaults(func=cmd_preprocess)


def _settings(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from vantage.cli.main import UserError
    from vantage.preprocess import MAX_SIDE, SYNTHETIC_OBJECT_FRACTION, framing_from_config

    notes: list[str] = []
    framing = {"resolution": 256, "object_fraction": SYNTHETIC_OBJECT_FRACTION, "background": (1.0, 1.0, 1.0)}
    if args.checkpoint is not None:
        found = framing_from_config(args.checkpoint)
        notes += [f"{n} (from {found['config']})" for n in found.pop("notes")]
        found.pop("config")
        framing.update(found)
    for key in framing:
        if getattr(args, key) is not None:
            framing[key] = getattr(args, key)
    if framing["resolution"] < 1:
        raise UserError(f"--resolution must be positive, got {framing['resolution']}")
    if not 0 < framing["object_fraction"] <= 1:
        raise UserError(f"--object-fraction must be in (0, 1], got {framing['object_fraction']}")
    max_side = MAX_SIDE if args.max_side is None else args.max_side
    if max_side < 16:
        raise UserError(f"--max-side must be at least 16, got {max_side}")
    return {**framing, "matting": args.matting, "max_side": max_side}, notes


def _params_for(args: argparse.Namespace, stems: list[str]) -> list[dict]:
    from vantage.cli.main import UserError

    given = [k for k in ("checkpoint", "resolution", "object_fraction", "background", "max_side")
             if getattr(args, k) is not None] + (["matting"] if args.matting != "auto" else [])
    if given:
        raise UserError(f"--params repeats an earlier run with its own settings: leave out "
                        f"{', '.join('--' + k.replace('_', '-') for k in given)}")
    if args.params.is_dir():
        files = [args.params / f"{s}.json" for s in stems]
    elif len(stems) > 1:
        raise UserError(f"--params {args.params} is one file but {len(stems)} images are given: pass the earlier "
                        f"--out folder (NAME.json per image)")
    else:
        files = [args.params]
    out = []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"parameters not found: {f}")
        try:
            out.append(json.loads(f.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{f}: not valid JSON ({e})") from None
    return out


def cmd_preprocess(args: argparse.Namespace) -> int:
    from vantage.cli.main import UserError
    from vantage.outputs import prepare_output_dir
    from vantage.preprocess import describe, preprocess_image, reapply_preprocess, save_preprocessed
    from vantage.preprocess.io import output_names

    paths = list(args.images)
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise UserError(f"{stems[p.stem]} and {p} would both be written as {p.stem}.png: rename one")
        stems[p.stem] = p
    written = {(args.out / n).resolve() for s in stems for n in output_names(s)}
    clash = [str(p) for p in paths if p.resolve() in written]
    if clash:
        raise UserError(f"--out {args.out} would overwrite the input {clash[0]}: choose another folder")
    if args.params is not None:
        params, settings, notes = _params_for(args, list(stems)), None, []
    else:
        params, (settings, notes) = None, _settings(args)
    for p in paths:  # refuse before any work
        if not p.exists():
            raise FileNotFoundError(f"input not found: {p}")
    if args.out.exists():  # refuse before any work; a new folder is made only once every image is done
        prepare_output_dir(args.out, args.overwrite, what="preprocess")
    for n in notes:
        print(f"note: {n}")
    if settings is not None:
        bg = ",".join(str(round(v * 255)) for v in settings["background"])
        print(f"preprocessing {len(paths)} image(s) to {settings['resolution']}x{settings['resolution']}, object "
              f"fraction {settings['object_fraction']:g}, background {bg}, matting {settings['matting']}")
    results = []
    for i, p in enumerate(paths):
        try:
            if params is not None:
                results.append(reapply_preprocess(p, params[i], name=str(p)))
            else:
                results.append(preprocess_image(p, settings["resolution"], settings["object_fraction"],
                                                settings["background"], matting=settings["matting"],
                                                max_side=settings["max_side"], name=str(p)))
        except ValueError as e:  # PreprocessError is a DatasetError (a ValueError) and prints the same
            raise UserError(str(e)) from None
    prepare_output_dir(args.out, args.overwrite, what="preprocess")
    files = []
    for p, (image, info) in zip(paths, results):
        lines = describe(info)
        print(f"{p}: {lines[0]}")
        for line in lines[1:]:
            print(f"{line.split(': ', 1)[0]}: {p}: {line.split(': ', 1)[1]}")
        files += save_preprocessed(image, info, args.out, p.stem)
    print(f"wrote {len(files)} files to {args.out}/: " + ", ".join(files))
    return 0
