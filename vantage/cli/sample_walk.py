"""``vantage sample --walk-step DEG``: ViewFusion's single-target mode (Yang et al. 2024) for every target.

Every target (of the orbit, ``--arc``, ``--cameras`` or ``--targets dataset``) is generated on its own, by a walk
from the (first) input camera in steps of at most ``DEG`` degrees, each pose by interpolated denoising on the
input and the walk's earlier poses, the last pose kept (:func:`vantage.sampling.walks.sample_target_walks`). The
walk to a camera is seeded by the run's seed and the camera, so a target's frame is the same whichever other
targets are asked for. The outputs are an orbit's (frames, GIF, contact sheet, cameras), plus with
``--save-walks`` every walk's poses in ``walks/NNN/SSS.png`` (frame ``NNN``, pose ``SSS``; the last is the frame)
and their cameras in ``walks/NNN/cameras.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["walk_plan_text", "run_walks", "intermediates_by_step", "write_walks", "walk_summary"]


def walk_plan_text(inputs: Any, targets: Any, step_deg: float) -> str:
    """What the walks will cost, for the ``generating ...`` line."""
    from vantage.sampling.walks import plan_walks

    lengths = [len(p) for p in plan_walks(inputs, targets, step_deg=step_deg) if p is not None]
    if not lengths:
        return "every target is an input view: no walk"
    span = f"{min(lengths)}" if min(lengths) == max(lengths) else f"{min(lengths)}-{max(lengths)}"
    return (f"each target by its own walk from the input in steps of at most {step_deg:g}°: {len(lengths)} walk(s) "
            f"of {span} poses, {sum(lengths)} poses in all")


def run_walks(method: Any, inputs: Any, targets: Any, args: argparse.Namespace, *, options: dict[str, Any],
              x0_frames: dict[int, list[Any]] | None = None, **sampling: Any) -> Any:
    """The :class:`~vantage.sampling.walks.TargetWalks` of every target; ``options`` are the interpolated
    strategy's, ``sampling`` the sampler settings (``sampler``, ``steps``, ``guidance``, ``device``). With
    ``x0_frames`` (``--save-intermediates``), the x̂0 of every denoising step of each target pose is kept in it
    (frame -> uint8 ``(H, W, 3)`` images)."""
    from vantage.sampling.walks import sample_target_walks
    from vantage.viz import to_uint8

    def keep(info: dict[str, Any]) -> None:
        if info["final"] and x0_frames is not None:
            x0_frames.setdefault(info["target"], []).append(to_uint8(info["denoised"][0]))

    return sample_target_walks(method, inputs, targets, step_deg=args.walk_step, seed=args.seed, progress=True,
                               step_callback=keep if x0_frames is not None else None, **options, **sampling)


def intermediates_by_step(walks: Any, x0_frames: dict[int, list[Any]]) -> dict[int, list[Any]]:
    """``x0_frames`` (frame -> images) keyed as :func:`~vantage.cli.sample_outputs.write_sample` wants them: by
    the rank of the frame among the generated ones (its "orbit step")."""
    frames = [t for t, g in enumerate(walks.generated.tolist()) if g]
    return {j: x0_frames[t] for j, t in enumerate(frames) if t in x0_frames}


def write_walks(out: Path, walks: Any) -> list[str]:
    """``walks/NNN/SSS.png`` and ``walks/NNN/cameras.json`` of every generated frame; returns the file list entry."""
    from PIL import Image

    from vantage.sampling.targets import camera_entry
    from vantage.viz import to_uint8

    n = 0
    for t, (path, images, seed) in enumerate(zip(walks.paths, walks.path_images, walks.seeds)):
        if path is None:
            continue
        folder = out / "walks" / f"{t:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(to_uint8(images.cpu())):
            Image.fromarray(img).save(folder / f"{i:03d}.png")
        path = path.to("cpu")
        doc = {"frame": t, "seed": seed, "poses": [{"file": f"{i:03d}.png", **camera_entry(path, i)}
                                                   for i in range(len(path))]}
        (folder / "cameras.json").write_text(json.dumps(doc, indent=1))
        n += 1
    return [f"walks/ (the poses of {n} walk(s): NNN/SSS.png, the last pose is frame NNN; NNN/cameras.json)"]


def walk_summary(walks: Any, step_deg: float) -> dict[str, Any]:
    """The ``sample.json`` entries of the single-target mode."""
    return {"mode": "single-target walks", "walk_step_deg": step_deg, "walk_lengths": walks.walk_lengths,
            "walk_poses": sum(walks.walk_lengths), "walk_seeds": walks.seeds}
