"""``vantage data``: render, verify, convert, show and shard multi-view datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="render, verify, convert, show and shard datasets",
                       description="Work with multi-view datasets. Every format is read into vantage's "
                                   "camera convention (docs/cameras.md); see docs/datasets.md.",
                       formatter_class=HelpFormatter)
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    from vantage.data.formats import FORMATS

    formats = list(FORMATS)

    r = dsub.add_parser("render", formatter_class=HelpFormatter,
                        help="render the synthetic multi-view dataset to disk",
                        description="Render objects of the embedded synthetic dataset (docs/synthetic.md): "
                                    "one folder per object with rgb/, mask/, depth/ and cameras.json.")
    r.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
    r.add_argument("--objects", type=int, default=16, help="number of objects")
    r.add_argument("--views", type=int, default=24, help="views per object")
    r.add_argument("--resolution", type=int, default=64, help="image side in pixels (16..256)")
    r.add_argument("--layout", choices=["ring", "orbit", "hemisphere"], default="ring",
                   help="camera layout: ring = NMR-like 24-view ring at 30° elevation; orbit = evenly spaced "
                        "circle at --elevation; hemisphere = random upper hemisphere (SRN-like)")
    r.add_argument("--elevation", type=float, default=30.0, help="elevation in degrees (ring/orbit)")
    r.add_argument("--split", choices=["train", "val", "test", "benchmark"], default="train",
                   help="which disjoint object split to draw from")
    r.add_argument("--seed", type=int, default=0, help="first object index within the split")
    r.add_argument("--workers", type=int, default=0,
                   help="render in this many processes (same files; e.g. the machine's core count)")
    r.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    r.set_defaults(func=cmd_render)

    v = dsub.add_parser("verify", formatter_class=HelpFormatter, help="check a dataset and print a summary",
                        description="Load every scene, check images and camera sanity (proper rotations, "
                                    "cameras looking at the object, baselines). Exit 0 when valid, 1 otherwise.")
    v.add_argument("path", type=Path, help="dataset root, or one scene folder")
    v.add_argument("--format", choices=formats, help="dataset format (detected when omitted)")
    v.add_argument("--limit", type=int, help="check only the first N scenes")
    _add_option_flag(v)
    v.set_defaults(func=cmd_verify)

    c = dsub.add_parser("convert", formatter_class=HelpFormatter, help="convert a dataset to nerfstudio",
                        description="Write each scene as a nerfstudio dataset: images/, transforms.json with "
                                    "OpenGL c2w, masks as mask_path, depth as 16-bit PNG millimetres "
                                    "(depth_unit_scale_factor 0.001), one folder per scene.")
    c.add_argument("path", type=Path, help="dataset root, or one scene folder")
    c.add_argument("--format", choices=formats, help="input format (detected when omitted)")
    c.add_argument("--to", choices=["nerfstudio"], default="nerfstudio", help="output format")
    c.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
    c.add_argument("--limit", type=int, help="convert only the first N scenes")
    _add_option_flag(c)
    c.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    c.set_defaults(func=cmd_convert)

    s = dsub.add_parser("show", formatter_class=HelpFormatter, help="contact sheet and camera plot",
                        description="Write a contact sheet PNG (one row per scene) and a 3D plot of the first "
                                    "scene's camera positions and viewing directions.")
    s.add_argument("path", type=Path, help="dataset root, or one scene folder")
    s.add_argument("--format", choices=formats, help="dataset format (detected when omitted)")
    s.add_argument("--out", type=Path, default=None,
                   help="output PNG for the contact sheet (default: <name>_sheet.png in the current folder); "
                        "the camera plot goes next to it as *_cameras.png")
    s.add_argument("--scenes", type=int, default=6, help="rows: number of scenes")
    s.add_argument("--views", type=int, default=8, help="columns: views per scene (evenly spaced)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output PNGs")
    _add_option_flag(s)
    s.set_defaults(func=cmd_show)

    h = dsub.add_parser("shard", formatter_class=HelpFormatter, help="write webdataset tar shards",
                        description="Write any dataset as webdataset tar shards (one sample per scene) for "
                                    "multi-GPU training; see docs/data-pipeline.md.")
    h.add_argument("path", type=Path, help="dataset root")
    h.add_argument("--format", choices=formats, help="dataset format (detected when omitted)")
    h.add_argument("--out", required=True, type=Path, help="output folder for shard-*.tar and index.json")
    h.add_argument("--shard-size", type=int, default=256, help="scenes per shard")
    h.add_argument("--shuffle-seed", type=int, default=None,
                   help="write scenes in a seeded random order (recommended for class-sorted sources such as "
                        "NMR: each reader streams contiguous blocks); default keeps the source order")
    h.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    _add_option_flag(h)
    h.set_defaults(func=cmd_shard)


def _add_option_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, repeatable (e.g. -o frames=false -o resolution=128 for "
                        "RealEstate10K, -o split=train for NMR); see docs/datasets.md")


def parse_options(items: list[str]) -> dict:
    """``["a=1", "b=false", "c=x"]`` -> ``{"a": 1, "b": False, "c": "x"}``."""
    import json

    from vantage.cli.main import UserError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--option expects KEY=VALUE, got '{item}'")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        elif low in ("none", "null"):
            out[key] = None
        else:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
    return out


def _open(args):
    from vantage.cli.main import UserError
    from vantage.data.formats import open_dataset

    options = parse_options(getattr(args, "option", []))
    try:
        ds = open_dataset(args.path, args.format, **options)
    except TypeError as e:
        raise UserError(f"bad --option for this format: {e}") from e
    print(ds.summary())
    for s in ds.skipped[:10]:
        print(f"  skipped {s}")
    if len(ds.skipped) > 10:
        print(f"  ... and {len(ds.skipped) - 10} more skipped")
    return ds


def cmd_render(args) -> int:
    from vantage.cli.main import UserError
    from vantage.data.synthetic_io import write_synthetic_dataset

    if not 16 <= args.resolution <= 256:
        raise UserError(f"--resolution must be between 16 and 256, got {args.resolution}")
    if args.objects < 1 or args.views < 1:
        raise UserError("--objects and --views must be at least 1")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    try:
        root = write_synthetic_dataset(args.out, split=args.split, num_objects=args.objects, views=args.views,
                                       resolution=args.resolution, layout=args.layout, seed=args.seed,
                                       elevation=args.elevation, overwrite=args.overwrite, progress=True,
                                       workers=args.workers)
    except ValueError as e:  # option combinations the synthetic dataset rejects (benchmark split, counts)
        raise UserError(str(e)) from e
    print(f"wrote {args.objects} objects x {args.views} views at {args.resolution}px to {root}")
    return 0


def cmd_verify(args) -> int:
    from vantage.data.verify import verify_dataset

    ds = _open(args)
    report = verify_dataset(ds, limit=args.limit, progress=sys.stderr.isatty())
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_convert(args) -> int:
    from tqdm import tqdm

    from vantage.data.formats.nerfstudio import write_nerfstudio
    from vantage.outputs import prepare_output_dir

    ds = _open(args)
    out = prepare_output_dir(args.out, args.overwrite)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    for i in tqdm(range(n), desc="convert", unit="scene"):
        obj = ds.load(i)
        write_nerfstudio(obj, out / _safe_name(ds.scene_name(i)), overwrite=args.overwrite)
    print(f"wrote {n} nerfstudio scene folder(s) to {out}")
    return 0


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "scene"


def cmd_show(args) -> int:
    import torch

    from vantage.outputs import OutputExistsError
    from vantage.viz import contact_sheet, plot_cameras

    ds = _open(args)
    n = min(args.scenes, len(ds))
    out = args.out or Path(f"{_safe_name(args.path.resolve().name)}_sheet.png")
    cam_out = out.with_name(out.stem.removesuffix("_sheet") + "_cameras.png")
    for p in (out, cam_out):
        if p.exists() and not args.overwrite:
            raise OutputExistsError(f"{p} already exists; pass --overwrite to replace it or choose --out")
    rows, labels, first = [], [], None
    for i in range(n):
        k = ds.num_views(i)
        idx = torch.linspace(0, k - 1, min(args.views, k)).round().long().unique().tolist()
        obj = ds.load(i, views=idx)
        if first is None:
            first = ds.load(i)
        if rows and obj.resolution != rows[0].shape[-2:]:
            obj_images = torch.nn.functional.interpolate(obj.images, size=rows[0].shape[-2:], mode="area")
        else:
            obj_images = obj.images
        rows.append(obj_images)
        labels.append(ds.scene_name(i)[:16])
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(rows, labels).save(out)
    plot_cameras(first.cameras, cam_out, title=f"{ds.format_name}: {ds.scene_name(0)}")
    print(f"wrote {out} ({n} scenes) and {cam_out}")
    return 0


def cmd_shard(args) -> int:
    from vantage.data.shards import write_shards

    ds = _open(args)
    index = write_shards(ds, args.out, shard_size=args.shard_size, overwrite=args.overwrite, progress=True,
                         shuffle_seed=args.shuffle_seed)
    print(f"wrote {index['num_samples']} scenes in {len(index['shards'])} shard(s) to {args.out} "
          f"(index: {args.out / 'index.json'})")
    return 0
