"""What a training run writes for people: ``stats.jsonl``, ``loss.png``, sample grids, TensorBoard.

``stats.jsonl`` has one JSON object per log interval (fields in ``docs/training.md``). A resumed
run first drops the lines past its checkpoint (:func:`truncate_stats`), so the file always reads
as one uninterrupted run. Lines are appended and flushed; a line cut short by a kill is skipped
when the file is read back.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["RunLogger", "IntervalStats", "read_stats", "truncate_stats", "plot_loss", "save_sample_grid",
           "peak_memory_mb"]

STATS = "stats.jsonl"


def read_stats(path: str | Path) -> list[dict]:
    """The records of a ``stats.jsonl`` (unparsable lines, e.g. one cut short by a kill, are skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / STATS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def truncate_stats(run_dir: str | Path, max_step: int) -> int:
    """Keep only the records with ``step <= max_step`` (atomic rewrite); returns how many were dropped."""
    from vantage.train.checkpoint import atomic_write_text

    path = Path(run_dir) / STATS
    if not path.is_file():
        return 0
    records = read_stats(path)
    kept = [r for r in records if int(r.get("step", 0)) <= max_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory of ``device``, or the peak resident memory of this process (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def plot_loss(records: list[dict], path: str | Path) -> Path | None:
    """Loss (log scale) against kimg, one curve per logged scalar that starts with ``loss``; atomic write."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    keys = [k for k in records[-1] if k.startswith("loss") and isinstance(records[-1][k], (int, float))]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        pts = [(r["kimg"], r[k]) for r in records if isinstance(r.get(k), (int, float)) and r[k] > 0]
        if pts:
            ax.plot(*zip(*pts), label=k, marker="." if len(pts) < 50 else None)
    ax.set_yscale("log")
    ax.set_xlabel("kimg (thousands of training images)")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss (step {records[-1].get('step')}, {records[-1].get('kimg', 0):.4g} kimg)")
    ax.grid(True, which="both", alpha=0.3)
    if keys:
        ax.legend()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def save_sample_grid(path: str | Path, inputs: Tensor, generated: Tensor, target: Tensor) -> Path:
    """Three rows (input | generated | target) of ``(N, 3, H, W)`` images in [-1, 1], written atomically."""
    from vantage.viz import contact_sheet

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet([inputs.float().cpu(), generated.float().cpu(), target.float().cpu()],
                          row_labels=["input", "generated", "target"])
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


class IntervalStats:
    """Running sums of one log interval: means of each scalar over the steps that were not skipped,
    step/skip counts and training seconds (saved in checkpoints so a resumed run logs the same)."""

    def __init__(self, state: dict | None = None) -> None:
        s = state or {}
        self.sums: dict[str, float] = dict(s.get("sums", {}))
        self.counts: dict[str, int] = dict(s.get("counts", {}))
        self.steps, self.skipped = int(s.get("steps", 0)), int(s.get("skipped", 0))
        self.seconds = float(s.get("seconds", 0.0))

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            if math.isfinite(v):
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts.get(k)}

    def state(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts), "steps": self.steps, "skipped": self.skipped,
                "seconds": self.seconds}


class RunLogger:
    """Appends records to ``stats.jsonl``, mirrors them to TensorBoard, redraws ``loss.png``.

    Only the main process should make one. ``loss.png`` is redrawn at log time when at least
    ``plot_interval_s`` passed since the last drawing (matplotlib takes a fraction of a second), and
    always by :meth:`close` (end of the run, or when it stops on an error).
    """

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, plot_interval_s: float = 10.0,
                 log: Any = print) -> None:
        self.run_dir = Path(run_dir)
        self.stats_path = self.run_dir / STATS
        self.plot_interval_s = plot_interval_s
        self._last_plot = time.monotonic()  # first redraw after plot_interval_s (a short run draws once, at close)
        self._file = open(self.stats_path, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.tb = None
            else:
                self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
                log(f"TensorBoard events: {self.run_dir / 'tensorboard'}")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.tb is not None:
            step = int(record["step"])
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if time.monotonic() - self._last_plot >= self.plot_interval_s:
            self.plot()

    def plot(self) -> None:
        plot_loss(read_stats(self.stats_path), self.run_dir / "loss.png")
        self._last_plot = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            self.plot()
        if self.tb is not None:
            self.tb.close()
            self.tb = None
