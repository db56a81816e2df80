"""``vantage reconstruct``: fit a voxel radiance field to posed views; turntable, mesh and fit metrics.

    vantage reconstruct INPUT --out DIR [--grid 48 --iters 500 --device D --object NAME
                        --mesh-format ply|obj --level 0.5 --score --resolution R]

INPUT is a ``vantage sample`` output folder (``cameras.json`` + ``frames/*.png``) or any dataset
folder ``vantage`` reads (first object, or ``--object NAME|INDEX``). Cameras follow vantage's
convention (OpenCV c2w, pixel K, world +z up); the field lives in the box ``[-bbox, bbox]³``
around the origin (objects of the synthetic data and of ``vantage sample`` fit in the unit ball).

Writes into ``--out`` (which must be new or empty, unless ``--overwrite``):

* ``turntable.gif``: renders on a ring of cameras at the views' mean elevation and distance;
* ``renders.png``: the input views over the field's renders of the same cameras;
* ``mesh.ply`` (or ``mesh.obj``): the surface where one voxel length is ``--level`` opaque, with
  vertex colours (marching tetrahedra, :mod:`vantage.eval.mesh`);
* ``field.pt``: the fitted grid (``torch.load`` -> ``Field.from_state_dict``);
* ``reconstruct.json``: settings, timings, train PSNR/SSIM per view and, with ``--score``, the 3D
  consistency score (a second fit on every other view, tested on the rest; ``docs/consistency.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "cmd_reconstruct", "load_views", "turntable_cameras"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", formatter_class=HelpFormatter, description=__doc__,
                       help="fit a voxel radiance field to posed views: turntable GIF, mesh, fit metrics")
    p.add_argument("input", type=Path, help="a `vantage sample` output folder or a dataset folder")
    p.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
    p.add_argument("--object", default=None, help="object/scene name or index in a dataset folder (default: first)")
    p.add_argument("--format", default=None, help="dataset format of INPUT (default: detected)")
    p.add_argument("--grid", type=int, default=48, help="grid resolution (about the image side works well)")
    p.add_argument("--iters", type=int, default=500, help="optimisation steps")
    p.add_argument("--batch-rays", type=int, default=1024, help="rays per step")
    p.add_argument("--bbox", type=float, default=1.0, help="half side of the cube [-b, b]^3 the field fills")
    p.add_argument("--background", default="white", help="background colour of the views: white, black or r,g,b")
    p.add_argument("--resolution", type=int, default=None, help="resize the views to this side first (faster)")
    p.add_argument("--turntable", type=int, default=36, help="frames of the turntable GIF")
    p.add_argument("--fps", type=float, default=12.0, help="frames per second of the GIF")
    p.add_argument("--mesh-format", choices=["ply", "obj"], default="ply", help="mesh file format")
    p.add_argument("--level", type=float, default=0.5, help="mesh surface: opacity of one voxel length, in (0, 1)")
    p.add_argument("--score", action="store_true",
                   help="also compute the 3D consistency score (fit on every other view, test on the rest)")
    p.add_argument("--seed", type=int, default=0, help="random seed (ray batches, stratified samples)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.set_defaults(func=cmd_reconstruct)


def load_views(path: Path, *, object_: str | None = None, format: str | None = None, resolution: int | None = None):
    """``(ObjectViews, format name)`` of INPUT (see the module docstring; :func:`vantage.export.common.load_source`
    reads it: a `vantage sample` folder's frames and input views, or one object of a dataset)."""
    from vantage.data.formats.common import resize_views
    from vantage.data.views import ObjectViews
    from vantage.export.common import load_source

    src = load_source(path, object_=object_, format=format, purpose="reconstruct")
    views = src.views
    if resolution is not None:
        cams, images, _, _ = resize_views(views.cameras, views.images, size=resolution, where=str(path))
        views = ObjectViews(images=images, cameras=cams, name=views.name, meta=views.meta)
    return views, src.kind


def turntable_cameras(cameras, n: int, center=None):
    """``n`` cameras on a circle around world +z through ``center`` (default origin) at the mean
    elevation and distance of ``cameras``, with the first camera's intrinsics."""
    import torch

    from vantage.cameras import Cameras, cartesian_to_spherical, look_at, spherical_to_cartesian

    center = torch.zeros(3) if center is None else torch.as_tensor(center, dtype=torch.float32)
    sph = cartesian_to_spherical(cameras.centers.double() - center.double())
    polar, radius = float(sph[:, 0].mean()), float(sph[:, 2].mean())
    az0 = float(sph[0, 1])
    az = torch.tensor([az0 + 2 * math.pi * k / n for k in range(n)])
    eye = spherical_to_cartesian(torch.full_like(az, polar), az, torch.full_like(az, radius)) + center
    c2w = look_at(eye, center.expand_as(eye))
    return Cameras(c2w, cameras.K[0].expand(n, 3, 3).clone(), cameras.width, cameras.height)


def cmd_reconstruct(args) -> int:
    import torch

    from vantage.cli.main import UserError
    from vantage.eval.consistency import consistency_score
    from vantage.eval.mesh import field_mesh, write_mesh
    from vantage.eval.metrics import psnr, ssim, to_unit
    from vantage.eval.voxels import fit_field, parse_background, render
    from vantage.outputs import prepare_output_dir
    from vantage.viz import contact_sheet, save_gif

    t_start = time.perf_counter()
    for name, value, lo in (("--grid", args.grid, 4), ("--iters", args.iters, 1), ("--turntable", args.turntable, 1),
                            ("--batch-rays", args.batch_rays, 1)):
        if value < lo:
            raise UserError(f"{name} must be >= {lo}, got {value}")
    if not 0 < args.level < 1:
        raise UserError(f"--level is an opacity per voxel length and must be in (0, 1), got {args.level}")
    if args.bbox <= 0:
        raise UserError(f"--bbox must be positive, got {args.bbox}")
    try:
        background = parse_background(args.background)
    except ValueError as e:
        raise UserError(f"--background: {e}") from None
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available on this machine")
    out = prepare_output_dir(args.out, args.overwrite)
    views, fmt = load_views(args.input, object_=args.object, format=args.format, resolution=args.resolution)
    n, _, h, w = views.images.shape
    print(f"input: {args.input} ({fmt}), scene '{views.name}': {n} views of {w}x{h}")
    fit = dict(background=background, bbox=args.bbox, grid=args.grid, iters=args.iters, seed=args.seed,
               batch_rays=args.batch_rays)
    t0 = time.perf_counter()
    field = fit_field(views.images, views.cameras, progress=True, device=args.device, **fit)
    t_fit = time.perf_counter() - t0
    renders, _, _ = render(field, views.cameras.to(args.device))
    renders = renders.cpu()
    p = psnr(to_unit(renders), to_unit(views.images)).tolist()
    s = ssim(to_unit(renders), to_unit(views.images)).tolist() if min(h, w) >= 11 else []
    print(f"fitted a {args.grid}^3 grid in {t_fit:.1f} s: train PSNR {sum(p) / n:.2f} dB")

    ring = turntable_cameras(views.cameras, args.turntable)
    frames, _, _ = render(field, ring.to(args.device))
    save_gif(frames.cpu(), out / "turntable.gif", fps=args.fps)
    contact_sheet([views.images[:24], renders[:24]], ["input", "render"]).save(out / "renders.png")
    mesh = field_mesh(field.to("cpu"), args.level)
    mesh_file = write_mesh(mesh, out / f"mesh.{args.mesh_format}")
    if mesh.faces.shape[0] == 0:
        print(f"note: no surface at --level {args.level}: the mesh is empty (the field is too transparent)")
    torch.save(field.state_dict(), out / "field.pt")
    summary = {"input": str(args.input), "format": fmt, "scene": views.name, "views": n, "width": w, "height": h,
               "settings": {**{k: v for k, v in fit.items() if k != "background"}, "background": background.tolist(),
                            "level": args.level, "device": args.device, "turntable": args.turntable},
               "train_psnr": sum(p) / n, "train_ssim": sum(s) / len(s) if s else None,
               "train_psnr_per_view": p, "train_ssim_per_view": s,
               "mesh": {"file": mesh_file.name, "vertices": int(mesh.vertices.shape[0]),
                        "faces": int(mesh.faces.shape[0])},
               "seconds_fit": round(t_fit, 3)}
    if args.score:
        if n < 4:
            raise UserError(f"--score needs at least 4 views (fit on half, test on the rest), got {n}")
        score = consistency_score(views.images, views.cameras, progress=True, device=args.device, **fit)
        summary["consistency"] = {k: v for k, v in score.items() if k not in ("field", "renders")}
        print(f"3D consistency score (fit on {len(score['train_views'])} views, tested on {len(score['test_views'])}): "
              f"PSNR {score['psnr']:.2f} dB, SSIM {score['ssim']:.3f}")
    summary["seconds_total"] = round(time.perf_counter() - t_start, 3)
    (out / "reconstruct.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}/: turntable.gif, renders.png, {mesh_file.name} ({summary['mesh']['vertices']} vertices, "
          f"{summary['mesh']['faces']} faces), field.pt, reconstruct.json in {summary['seconds_total']:.1f} s")
    return 0
