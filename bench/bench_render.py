"""Synthetic renderer throughput: views per second by resolution, with/without shadows and 2x2 AA.

Renders ring views of train-split objects through :class:`vantage.data.synthetic.SyntheticDataset`
(object generation + cameras + rendering, everything a training loader pays) and prints a
Markdown table plus the command that reproduces it::

    python bench/bench_render.py                       # 2 threads, all resolutions
    python bench/bench_render.py --threads 4 --resolutions 64 128 --objects 16
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from vantage.data.synthetic import SyntheticDataset

CONFIGS = {"shadows (default)": {"shadows": True, "supersample": 1},
           "no shadows": {"shadows": False, "supersample": 1},
           "shadows + 2x2 AA": {"shadows": True, "supersample": 2}}


def views_per_second(resolution: int, views: int, objects: int, repeats: int, **options) -> float:
    """Best-of-``repeats`` views/s rendering the same ``objects`` objects (``views`` ring views each).

    The best of several runs is reported because other processes on a shared machine only ever
    slow a run down.
    """
    ds = SyntheticDataset("train", objects, views=views, resolution=resolution, **options)
    ds.load(0)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(objects):
            ds.load(i)
        best = min(best, time.perf_counter() - t0)
    return objects * views / best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--views", type=int, default=24, help="ring views per object")
    p.add_argument("--objects", type=int, default=8, help="objects per run (the first N of the train split)")
    p.add_argument("--repeats", type=int, default=3, help="runs per cell; the best is reported")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cmd = "python bench/bench_render.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"Synthetic renderer, views/s: best of {args.repeats} runs over train objects "
          f"0-{args.objects - 1}, {args.views}-view ring (higher is better)\n")
    print("| resolution | " + " | ".join(CONFIGS) + " |")
    print("|---:|" + "---:|" * len(CONFIGS))
    for res in args.resolutions:
        cells = [f"{views_per_second(res, args.views, args.objects, args.repeats, **opt):.0f}"
                 for opt in CONFIGS.values()]
        print(f"| {res}x{res} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n`{cmd.strip()}` — torch {torch.__version__}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
