"""Per-view composition weights of an orbit (ViewFusion), as ``vantage sample --save-weights`` writes them.

A composing set denoiser (:class:`vantage.methods.viewfusion.ViewFusionDenoiser`, what
``composed_strategy`` builds for every orbit step) weighs the noise predictions of the views of
its set per pixel and colour channel: ``w (B, S, 3, H, W)``, a softmax over the set's slots,
exactly 0 in the slots it did not use. :class:`WeightRecorder` is an ``autoregressive_orbit``
callback that keeps, for one sample and every generated view, the weights of the views that were
actually composed (read from the composition's own rows, not from the set's ``valid`` mask):

* ``mode="mean"`` (default): the mean of the weights over all denoiser calls of that view
  (the strategy must be built with ``accumulate_weights=True``); every call shapes the image,
  while at the last, almost noise-free step ``x̂0 ≈ x`` hardly depends on the weights at all.
* ``mode="final"``: the weights of the last denoiser call (the smallest σ).

Either way the weights of one pixel and channel sum to 1 over the views used. Slots of the set:
the inputs are ``0..N-1`` and the view generated at orbit step ``j`` is ``N + j``
(:func:`vantage.sampling.autoregressive_orbit`). :func:`save_weight_maps` writes one picture per
generated view (:func:`vantage.viz.weight_grid`), a GIF over the orbit and the raw tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["ViewWeights", "WeightRecorder", "save_weight_maps", "WEIGHT_MODES"]

WEIGHT_MODES = ("mean", "final")


@dataclass
class ViewWeights:
    """The composition weights of one generated view.

    Attributes:
        frame: index of the generated target (frame) in the orbit.
        step: orbit step at which it was generated.
        sources: ``k`` labels of the views composed, in set order: ``"input i"`` (the ``i``-th input
            view) or ``"frame t"`` (a view generated earlier).
        weights: ``(k, 3, H, W)`` float32 weights of those views (sum 1 over ``k``).
        images: ``(k, 3, H, W)`` the composed views in [-1, 1].
        output: ``(3, H, W)`` the generated view.
    """

    frame: int
    step: int
    sources: list[str]
    weights: Tensor
    images: Tensor
    output: Tensor


class WeightRecorder:
    """``autoregressive_orbit(..., callback=recorder)``: collect :class:`ViewWeights` of sample ``sample``.

    Args:
        inputs: ``(N, 3, H, W)`` the sample's input views, in the orbit's order (set slots ``0..N-1``).
        mode: ``"mean"`` over the denoiser calls or ``"final"`` call (module docstring).
        sample: which sample of the batch to record.
        input_labels: ``N`` labels of the inputs (default ``"input i"``).
    """

    def __init__(self, inputs: Tensor, mode: Literal["mean", "final"] = "mean", sample: int = 0,
                 input_labels: list[str] | None = None) -> None:
        if mode not in WEIGHT_MODES:
            raise ValueError(f"weights mode must be one of {WEIGHT_MODES}, got {mode!r}")
        self.inputs, self.mode, self.sample = inputs.detach().cpu(), mode, sample
        n = inputs.shape[0]
        self.labels = list(input_labels) if input_labels is not None else [f"input {i}" for i in range(n)]
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} input labels for {n} inputs")
        self.steps: dict[int, tuple[int, Tensor]] = {}  # orbit step -> (frame, generated image)
        self.records: list[ViewWeights] = []

    def _slot(self, slot: int) -> tuple[str, Tensor]:
        n = self.inputs.shape[0]
        if slot < n:
            return self.labels[slot], self.inputs[slot]
        if slot - n not in self.steps:
            raise RuntimeError(f"set slot {slot} holds no view generated before this step")
        frame, image = self.steps[slot - n]
        return f"frame {frame}", image

    def __call__(self, info: dict[str, Any]) -> None:
        rows = [r for r, b in enumerate(info["samples"].tolist()) if b == self.sample]
        if not rows:
            return
        r, step = rows[0], int(info["step"])
        frame, output = int(info["targets"][r]), info["images"][r].detach().float().cpu()
        strat = info.get("strategy")
        comp = getattr(strat, "last", None)
        if comp is None or not hasattr(comp, "weights"):
            raise TypeError("WeightRecorder needs a composing strategy (ViewFusion's composed_strategy), "
                            f"got {type(strat).__name__}")
        weights = strat.mean_weights if self.mode == "mean" else comp.weights
        if weights is None:
            raise ValueError("weights mode 'mean' needs the strategy built with accumulate_weights=True")
        slots = comp.view_index[comp.batch_index == r].tolist()  # the views composed for this sample
        picked = [self._slot(s) for s in slots]
        self.records.append(ViewWeights(frame=frame, step=step, sources=[p[0] for p in picked],
                                        weights=weights[r, slots].detach().float().cpu(),
                                        images=torch.stack([p[1] for p in picked]).float(), output=output))
        self.steps[step] = (frame, output)


def save_weight_maps(records: list[ViewWeights], out: str | Path, *, mode: str = "mean", fps: float = 2.0,
                     cameras_deg: list[float] | None = None) -> list[str]:
    """Write the weight maps of ``records`` into folder ``out``; returns the files written (relative).

    * ``NNN.png`` per generated frame ``NNN``: :func:`vantage.viz.weight_grid` (row 1: the composed
      views and the output; row 2: their weights, mean over colour channels, on a 0..1 colour scale);
    * ``orbit.gif``: those pictures in frame order (padded to one size);
    * ``weights.pt``: ``{"mode", "frames": [{"frame", "step", "sources", "weights" (k, 3, H, W)}]}``;
    * ``summary.json``: the mean weight of every composed view per frame.

    ``cameras_deg``: the azimuth of every frame (for the titles)."""
    from vantage.viz import save_image_gif, weight_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(records, key=lambda r: r.frame)
    what = "mean over the denoising steps" if mode == "mean" else "last denoising step"
    pictures, files = [], []
    for rec in ordered:
        az = "" if cameras_deg is None else f" (azimuth {cameras_deg[rec.frame] % 360:.0f}°)"
        title = f"frame {rec.frame}{az}, step {rec.step}: weights of {len(rec.sources)} view(s), {what}"
        img = weight_grid(rec.images, rec.weights, rec.sources, rec.output, title)
        img.save(out / f"{rec.frame:03d}.png")
        pictures.append(img)
        files.append(f"{rec.frame:03d}.png")
    if pictures:
        save_image_gif(pictures, out / "orbit.gif", fps=fps)
        files.append("orbit.gif")
    torch.save({"mode": mode, "frames": [{"frame": r.frame, "step": r.step, "sources": r.sources,
                                          "weights": r.weights} for r in ordered]}, out / "weights.pt")
    summary = {str(r.frame): {s: round(float(w.mean()), 4) for s, w in zip(r.sources, r.weights)} for r in ordered}
    (out / "summary.json").write_text(json.dumps({"mode": mode, "mean_weight": summary}, indent=1))
    return files + ["weights.pt", "summary.json"]
