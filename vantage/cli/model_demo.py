"""The model demo: a 24-view orbit from one input view of held-out benchmark objects.

Used by ``vantage demo`` when a default model is available (shipped under
``vantage/assets/default-3dim/`` or given with ``--checkpoint``). For each object of the fixed
benchmark split (``vantage.data.synthetic.BENCHMARK``: 24-view ring at 30° elevation), view 0 is
the input and the other 23 ring views are generated autoregressively with 3DiM's stochastic
conditioning. Writes:

* ``orbit.gif``: generated | ground truth, side by side, one row per object;
* ``contact_sheet.png``: input, generated and ground-truth views (every third ring view);
* ``metrics.json``: PSNR and SSIM (Wang et al., Gaussian 11/1.5, images mapped to [0, 1]) of the
  generated views and of the "copy the input view" baseline against the ground truth, per object
  and averaged over the 23 generated views of every object.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

__all__ = ["DEFAULT_MODEL_DIR", "default_model_available", "run_model_demo"]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "default-3dim"


def default_model_available() -> bool:
    return (DEFAULT_MODEL_DIR / "model.safetensors").is_file() and (DEFAULT_MODEL_DIR / "config.json").is_file()


def orbit_metrics(generated: torch.Tensor, truth: torch.Tensor, input_view: torch.Tensor) -> dict:
    """PSNR/SSIM of ``generated (T, 3, H, W)`` and of the copy-the-input baseline vs ``truth``."""
    from vantage.eval import psnr, ssim, to_unit

    g, t = to_unit(generated), to_unit(truth)
    c = to_unit(input_view).expand_as(t)
    return {"psnr": psnr(g, t).mean().item(), "ssim": ssim(g, t).mean().item(),
            "baseline_psnr": psnr(c, t).mean().item(), "baseline_ssim": ssim(c, t).mean().item()}


def run_model_demo(out: Path, *, checkpoint: Path | None = None, objects: int = 4, device: str = "auto",
                   steps: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Generate orbits for ``objects`` benchmark objects and write the demo files into ``out``."""
    from vantage.cameras import Cameras
    from vantage.data.synthetic import SyntheticDataset
    from vantage.methods.base import sampler_options_for
    from vantage.sampling.orbit import autoregressive_orbit
    from vantage.train.checkpoint import load_checkpoint
    from vantage.viz import contact_sheet, save_gif

    t0 = time.perf_counter()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    method = load_checkpoint(checkpoint or DEFAULT_MODEL_DIR, device=dev).eval()
    res = method.config.resolution
    ds = SyntheticDataset(split="benchmark", num_objects=objects, views=24, resolution=res, layout="ring")
    objs = [ds.load(i) for i in range(len(ds))]
    inputs = [o.select([0]) for o in objs]
    cams = Cameras.stack([o.cameras for o in objs])  # (B, 24)
    result = autoregressive_orbit(method, inputs, cams, strategy="stochastic", order="alternating",
                                  steps=steps, seed=[seed + i for i in range(len(objs))], device=dev,
                                  progress=progress)
    gen = result.images.cpu()
    per_object, rows, labels, frames = [], [], [], []
    for i, o in enumerate(objs):
        m = orbit_metrics(gen[i, 1:], o.images[1:], o.images[:1])
        per_object.append({"object": ds.scene_name(i), **{k: round(v, 4) for k, v in m.items()}})
        rows += [o.images[:1], gen[i, ::3], o.images[::3]]
        labels += [f"{ds.scene_name(i)} input", "generated", "truth"]
        frames.append(torch.cat([gen[i], o.images], dim=-1))  # (24, 3, H, 2W)
    out.mkdir(parents=True, exist_ok=True)
    contact_sheet(rows, labels).save(out / "contact_sheet.png")
    save_gif(torch.cat(frames, dim=-2), out / "orbit.gif", fps=6)  # objects stacked vertically
    mean = {k: round(sum(p[k] for p in per_object) / len(per_object), 4)
            for k in ("psnr", "ssim", "baseline_psnr", "baseline_ssim")}
    metrics = {
        "what": "3DiM orbits from view 0 of benchmark objects; 23 generated views each vs ground truth",
        "metric_conventions": "PSNR on [0,1] images; SSIM Wang et al. (Gaussian window 11, sigma 1.5)",
        "baseline": "copy the input view to every target view",
        "checkpoint": str(checkpoint or DEFAULT_MODEL_DIR),
        "sampler": method.config.default_sampler, "sampler_options": sampler_options_for(method.config, None),
        "steps": steps or method.config.default_steps,
        "guidance": method.config.default_guidance, "strategy": "stochastic", "order": "alternating",
        "nfe": result.nfe, "mean": mean, "per_object": per_object,
        "seconds": round(time.perf_counter() - t0, 1), "device": dev,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
