"""``vantage demo``: the main job on the embedded synthetic data.

No trained model ships yet (it arrives with the 3DiM issue), so the demo renders a few
held-out synthetic objects (the ``test`` split) on the 24-view ring and writes what a person
looks at: a contact sheet, a camera plot and one orbit GIF per object. It says so plainly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "run_demo"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", formatter_class=HelpFormatter,
                       help="run the demo on the embedded synthetic data (no download)",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: ./vantage-demo, or vantage-demo-2, ... if that is taken)")
    p.add_argument("--objects", type=int, default=4, help="number of held-out objects")
    p.add_argument("--views", type=int, default=24, help="views per object on the ring")
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.set_defaults(func=cmd_demo)


def run_demo(out: Path, objects: int = 4, views: int = 24, resolution: int = 64) -> dict:
    """Render ``objects`` test-split objects and write the demo outputs into ``out``."""
    import torch

    from vantage.data.synthetic import SyntheticDataset
    from vantage.viz import contact_sheet, plot_cameras, save_gif

    t0 = time.perf_counter()
    ds = SyntheticDataset(split="test", num_objects=objects, views=views, resolution=resolution, layout="ring")
    rows, labels, files = [], [], []
    for i in range(len(ds)):
        obj = ds.load(i)
        step = max(1, len(obj) // 8)
        rows.append(obj.images[::step][:8])
        labels.append(ds.scene_name(i))
        files.append(str(save_gif(obj.images, out / f"orbit_{i:02d}.gif")))
        if i == 0:
            plot_cameras(obj.cameras, out / "cameras.png", title=f"{views}-view ring around {ds.scene_name(0)}")
            masks = obj.masks[::step][:8].expand(-1, 3, -1, -1) * 2 - 1
            depth = obj.depth[::step][:8]
            fg = depth > 0
            d = torch.where(fg, depth, depth.new_tensor(float("nan")))
            lo, hi = d[fg].min(), d[fg].max()
            depth_img = torch.where(fg, 1 - 2 * (depth - lo) / (hi - lo + 1e-8), torch.ones_like(depth))
            rows_first = [rows[0], masks, depth_img.expand(-1, 3, -1, -1)]
    sheet = contact_sheet(rows_first + rows[1:], [labels[0], "mask", "depth"] + labels[1:])
    sheet.save(out / "contact_sheet.png")
    summary = {
        "what": "ground-truth renders of held-out synthetic objects (test split); no trained model yet",
        "objects": [ds.scene_name(i) for i in range(len(ds))],
        "views": views, "resolution": resolution,
        "files": ["contact_sheet.png", "cameras.png"] + [Path(f).name for f in files],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_demo(args) -> int:
    from vantage.outputs import next_free_dir, prepare_output_dir

    out = next_free_dir("vantage-demo") if args.out is None else args.out
    out = prepare_output_dir(out, args.overwrite)
    print("vantage demo: no trained model ships yet (it comes with the 3DiM training issue).")
    print(f"Rendering {args.objects} held-out synthetic objects (test split, {args.views}-view ring, "
          f"{args.resolution}px) to show the data every method trains on.")
    summary = run_demo(out, args.objects, args.views, args.resolution)
    print(f"wrote to {out}/ in {summary['seconds']} s:")
    for f in summary["files"]:
        print(f"  {f}")
    return 0
