"""``vantage export``: write generated (or dataset) views and their cameras for nerfstudio, NeuS or instant-ngp.

    vantage export RUN_OR_DIR --format nerfstudio|neus|instant-ngp --out DIR
                   [--object NAME|INDEX --input-format F --radius R --center X,Y,Z --aabb-scale N
                    --generated-only --no-masks --overwrite]

RUN_OR_DIR is a ``vantage sample`` output folder (``cameras.json`` + ``frames/*.png``: the generated views and the
input view(s), flagged) or any dataset folder ``vantage`` reads (its first object, or ``--object``). Cameras go from
vantage's convention (OpenCV c2w, pixel K with pixel centres at +0.5, world +z up) to each tool's own:

* ``nerfstudio``: ``transforms.json`` (OpenGL c2w, ``OPENCV`` intrinsics, ``orientation_override: none``),
  ``images/``, ``masks/`` where masks are known;
* ``neus``: ``cameras_sphere.npz`` (``world_mat_i`` = K [R|t] projection, ``scale_mat_i`` = the bounding sphere),
  ``image/``, ``mask/`` (all white when unknown);
* ``instant-ngp``: ``transforms.json`` with ``scale``/``offset`` putting the bounding sphere in instant-ngp's unit
  cube, ``images/`` (RGBA with the mask as alpha where known).

The bounding sphere (NeuS, instant-ngp) is centred on the point closest to all optical axes (or ``--center``) with
radius ``--radius`` (default 1: vantage's objects fit in the unit sphere). ``export.json`` records each view's role
and source. ``--out`` must be new or empty unless ``--overwrite``. See ``docs/export.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "cmd_export"]

_RUN = {
    "nerfstudio": "ns-train nerfacto --data {out} nerfstudio-data --center-method none",
    "neus": "copy {out} to NeuS/public_data/<case>, then: python exp_runner.py --mode train --conf ./confs/{conf}.conf "
            "--case <case>",
    "instant-ngp": "./instant-ngp {out}",
}


def _center(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers like 0,0,0.1, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    from vantage.export import EXPORT_FORMATS

    p = sub.add_parser("export", formatter_class=HelpFormatter, description=__doc__,
                       help="write views + cameras for nerfstudio, NeuS or instant-ngp")
    p.add_argument("input", type=Path, metavar="RUN_OR_DIR",
                   help="a `vantage sample` output folder or a dataset folder")
    p.add_argument("--format", required=True, choices=list(EXPORT_FORMATS),
                   help="output format: " + "; ".join(f"{k}: {v}" for k, v in EXPORT_FORMATS.items()))
    p.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
    p.add_argument("--object", default=None, help="object/scene name or index in a dataset folder (default: first)")
    p.add_argument("--input-format", default=None, metavar="F",
                   help="dataset format of RUN_OR_DIR (default: a `vantage sample` folder, else detected)")
    p.add_argument("--radius", type=float, default=1.0,
                   help="radius of the object's bounding sphere in world units (NeuS scale_mat, instant-ngp scale); "
                        "vantage's synthetic objects and sample orbits fit in the unit sphere")
    p.add_argument("--center", type=_center, default=None, metavar="X,Y,Z",
                   help="centre of the bounding sphere (default: the point closest to all optical axes)")
    p.add_argument("--aabb-scale", type=int, default=1, choices=[2 ** k for k in range(8)],
                   help="instant-ngp's aabb_scale: rays march in a cube this many times the unit cube (1 for an "
                        "object on a plain background)")
    p.add_argument("--generated-only", action="store_true",
                   help="leave out the input views of a `vantage sample` folder (export only generated views)")
    p.add_argument("--no-masks", action="store_true", help="leave known object masks out")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from vantage.cli.main import UserError
    from vantage.export import export, load_source
    from vantage.export.common import ExportSource
    from vantage.outputs import prepare_output_dir

    if not args.radius > 0:
        raise UserError(f"--radius must be positive, got {args.radius}")
    if args.out.exists() and args.out.resolve() == args.input.resolve():
        raise UserError(f"--out {args.out} is the input folder; choose a new folder")
    prepare_output_dir(args.out, args.overwrite, what="export")  # refuse before reading anything
    src = load_source(args.input, object_=args.object, format=args.input_format)
    if args.generated_only:
        keep = [i for i, r in enumerate(src.roles) if r == "generated"]
        if not keep:
            raise UserError(f"--generated-only: {args.input} has no generated views (roles: "
                            f"{', '.join(sorted(set(src.roles)))})")
        src = ExportSource(src.views.select(keep), [src.roles[i] for i in keep], [src.sources[i] for i in keep],
                           src.kind, src.path, src.notes)
    try:
        summary = export(src, args.format, args.out, radius=args.radius, center=args.center,
                         aabb_scale=args.aabb_scale, masks=not args.no_masks, overwrite=True)
    except ValueError as e:
        raise UserError(str(e)) from None
    roles = ", ".join(f"{n} {'dataset' if r == 'view' else r}" for r, n in summary["roles"].items())
    print(f"exported {summary['views']} views ({roles}) of '{summary['scene']}' from {args.input} "
          f"({summary['source_kind']}), {summary['width']}x{summary['height']}, masks {summary['masks']}, "
          f"as {args.format} to {args.out}/:")
    for f in summary["files"]:
        print(f"  {f}")
    if "radius" in summary:
        c = ", ".join(f"{v:.4g}" for v in summary["center"])
        line = f"bounding sphere: centre ({c}), radius {summary['radius']:g}"
        if "scale" in summary:
            offset = ", ".join(f"{v:.4g}" for v in summary["offset"])
            line += f"; instant-ngp scale {summary['scale']:.4g}, offset [{offset}]"
        print(line)
    for note in summary["notes"]:
        print(f"note: {note}")
    conf = "wmask" if summary["masks"] == "known" else "womask"
    print("run: " + _RUN[args.format].format(out=args.out, conf=conf))
    return 0
