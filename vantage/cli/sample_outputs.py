"""What ``vantage sample`` writes into ``--out`` (the list is in :mod:`vantage.cli.sample`'s docstring).

:func:`write_sample` writes the frames, the input(s), ``orbit.gif``/``orbit.mp4``, the contact sheet,
``cameras.json`` (vantage's convention and nerfstudio's ``transform_matrix``), ``nerfstudio/``,
``weights/`` (ViewFusion's composition weights), ``intermediates/`` (x̂0 of every denoising step) and
``sample.json``; GeNVS's ``field/`` and ``field_pooled/`` come from :func:`write_field_renders` (the sets of
``field_pooled/`` from :class:`PooledSets`, the orbit's callback). Images are ``(N, 3, H, W)`` in [-1, 1];
cameras OpenCV camera-to-world with pixel intrinsics (``docs/cameras.md``).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_mp4", "psnr", "write_sample", "render_field", "write_field_renders", "PooledSets"]


def write_mp4(frames_dir: Path, out: Path, fps: float, size: int) -> str | None:
    """Encode ``frames_dir/%03d.png`` with ffmpeg; returns None or why it was skipped."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return "ffmpeg not found on PATH: orbit.mp4 skipped"
    side = max(256, size) // 2 * 2
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-framerate", str(fps), "-i", str(frames_dir / "%03d.png"),
           "-vf", f"scale={side}:{side}:flags=neighbor", "-pix_fmt", "yuv420p", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    return None if res.returncode == 0 else f"ffmpeg failed ({res.stderr.strip()[:200]}): orbit.mp4 skipped"


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB of two images in [-1, 1] (peak 1 after mapping to [0, 1])."""
    mse = float(((a.float() - b.float()) / 2).pow(2).mean())
    return float("inf") if mse == 0 else -10 * math.log10(mse)


def write_sample(out: Path, *, result: Any, inp: Any, truth_idx: list[int | None], fps: float,
                 recorder: Any = None, weights_mode: str | None = None,
                 intermediates: dict[int, list[Any]] | None = None) -> tuple[list[str], dict[str, Any]]:
    """Write the outputs of one ``vantage sample`` run; returns ``(files written, summary entries)``.

    Args:
        result: the :class:`~vantage.sampling.OrbitResult` (sample 0 is written).
        inp: the :class:`~vantage.sampling.inputs.SampleInput`.
        truth_idx: per frame the view of ``inp.views`` that is its ground truth, or None.
        recorder: a :class:`~vantage.sampling.WeightRecorder` (``weights/``) or None.
        intermediates: orbit step -> uint8 ``(H, W, 3)`` x̂0 of every denoising step (``intermediates/``).
    """
    import torch
    from PIL import Image

    from vantage.data.formats.nerfstudio import write_nerfstudio
    from vantage.data.views import ObjectViews
    from vantage.sampling.targets import camera_entry
    from vantage.sampling.weights import save_weight_maps
    from vantage.viz import contact_sheet, save_gif, to_uint8

    views, inputs, in_idx = inp.views, inp.inputs, inp.input_indices
    k = len(in_idx)
    frames, gen = result.images[0].cpu(), result.generated[0]
    fdir = out / "frames"
    fdir.mkdir(exist_ok=True)
    for i, img in enumerate(to_uint8(frames)):
        Image.fromarray(img).save(fdir / f"{i:03d}.png")
    Image.fromarray(to_uint8(inputs.images[0])).save(out / "input.png")
    files = ["input.png"]
    if k > 1:
        (out / "inputs").mkdir(exist_ok=True)
        for j, img in enumerate(to_uint8(inputs.images)):
            Image.fromarray(img).save(out / "inputs" / f"{j:03d}.png")
        files.append("inputs/")
    save_gif(frames, out / "orbit.gif", fps=fps)
    files += ["frames/", "orbit.gif"]
    skipped = write_mp4(fdir, out / "orbit.mp4", fps, max(256, frames.shape[-1]))
    if skipped:
        print(f"note: {skipped}")
    else:
        files.append("orbit.mp4")
    truth = [None if j is None else views.images[j] for j in truth_idx]
    rows, labels = [inputs.images, frames], ["input" if k == 1 else "inputs", "generated"]
    if any(t is not None for t in truth):
        rows.append(torch.stack([torch.ones_like(frames[0]) if t is None else t for t in truth]))
        labels.append("truth")
    contact_sheet(rows, labels).save(out / "contact_sheet.png")
    files.append("contact_sheet.png")

    cams = result.cameras[0].to("cpu")
    in_files = ["input.png"] if k == 1 else [f"inputs/{j:03d}.png" for j in range(k)]
    input_cam = views.cameras[inp.input_index:inp.input_index + 1]
    doc = {"convention": "c2w: camera-to-world with OpenCV camera axes (x right, y down, z forward); K in pixels, "
                         "pixel centres at +0.5; world +z up. transform_matrix: the same camera with OpenGL axes "
                         "(nerfstudio / Blender)",
           "width": cams.width, "height": cams.height,
           "input": {"file": "input.png", **camera_entry(input_cam, 0), "posed": inp.posed},
           "inputs": [{"file": in_files[j], "view": in_idx[j], **camera_entry(inputs.cameras, j),
                       "posed": inp.posed} for j in range(k)],
           "frames": [{"file": f"frames/{i:03d}.png", "generated": bool(gen[i]),
                       "ground_truth_view": truth_idx[i], **camera_entry(cams, i)} for i in range(len(cams))]}
    (out / "cameras.json").write_text(json.dumps(doc, indent=1))
    with tempfile.TemporaryDirectory() as tmp:  # nerfstudio export of the frames (+ the input when not a frame)
        write_nerfstudio(ObjectViews(images=frames, cameras=cams), Path(tmp) / "ns")
        shutil.copytree(Path(tmp) / "ns", out / "nerfstudio", dirs_exist_ok=True)
    files += ["cameras.json", "nerfstudio/transforms.json"]
    if recorder is not None:
        azimuths = [doc["frames"][i]["azimuth_deg"] for i in range(len(cams))]
        written = save_weight_maps(recorder.records, out / "weights", mode=weights_mode or "mean",
                                   fps=min(fps, 2.0), cameras_deg=azimuths)
        maps = [f for f in written if f[0].isdigit()]
        files.append(f"weights/ ({len(maps)} weight maps NNN.png, {', '.join(f for f in written if f not in maps)})")
    n_copied = len(gen) - int(gen.sum())
    for j, images in (intermediates or {}).items():  # orbit step j made frame order[n_copied + j]
        folder = out / "intermediates" / f"{int(result.order[0, n_copied + j]):03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    if intermediates:
        files.append(f"intermediates/ (x̂0 of every denoising step: NNN/SSS.png for {len(intermediates)} frames)")
    scores = {i: psnr(frames[i], truth[i]) for i in range(len(truth)) if truth[i] is not None and gen[i]}
    summary = {"views": len(cams), "order": result.order[0].tolist(), "set_sizes": result.set_sizes[0].tolist(),
               "nfe": result.nfe, "seconds_sampling": round(result.seconds, 3),
               "psnr": {str(i): round(v, 3) for i, v in scores.items()},
               "psnr_mean": round(sum(scores.values()) / len(scores), 3) if scores else None}
    if getattr(inp, "preprocessing", None):  # the parameters that repeat `vantage preprocess` on the inputs
        summary["preprocessing"] = inp.preprocessing
    return files, summary


def _stack_sets(sets: list[Any]) -> Any:
    """``ViewSet (n, K)`` of ``n`` view sets ``(1, K)`` with the same ``K``."""
    import torch

    from vantage.cameras import Cameras
    from vantage.data.views import ViewSet

    if all(s is sets[0] for s in sets):
        return sets[0].index([0] * len(sets))
    cams = [s.cameras for s in sets]
    return ViewSet(images=torch.cat([s.images for s in sets]), valid=torch.cat([s.valid for s in sets]),
                   cameras=Cameras(torch.cat([c.c2w for c in cams]), torch.cat([c.K for c in cams]),
                                   cams[0].width, cams[0].height),
                   view_ids=torch.cat([s.view_ids for s in sets]))


def render_field(folder: Path, method: Any, sets: list[Any], cameras: Any, *, fps: float, device: str = "cpu",
                 chunk: int = 8, cache: Any = None) -> None:
    """The feature field of ``sets[i]`` (a ``ViewSet (1, K)``) volume-rendered at ``cameras[i]`` for every frame
    ``i`` (its RGB channels and camera-z depth, :meth:`~vantage.methods.genvs.GeNVS.render_conditioning`), written
    to ``folder/rgb/NNN.png``, ``folder/depth/NNN.png`` (depth normalised to the frames' range, near = bright;
    black where the opacity is < 0.5) and ``folder/field.gif`` (render | depth). Consecutive frames with sets of
    the same size render together, at most ``chunk`` at a time; each distinct set is encoded once (``cache``: the
    method's ``volume_cache``, a new one when None)."""
    import torch
    from PIL import Image

    from vantage.sampling.strategies import ViewSetCond
    from vantage.viz import save_gif, to_uint8

    if len(sets) != len(cameras):
        raise ValueError(f"{len(sets)} view sets for {len(cameras)} cameras")
    make_cache = getattr(method, "volume_cache", None)
    cache = cache if cache is not None else make_cache(1) if callable(make_cache) else None
    cached = {} if cache is None else {"cache": cache}
    rgbs, depths = [], []
    start = 0
    with torch.no_grad():
        while start < len(cameras):
            end = start + 1
            while end < len(cameras) and end - start < chunk and sets[end].num_views == sets[start].num_views:
                end += 1
            batch = _stack_sets(sets[start:end]).to(device)
            r = method.render_conditioning(ViewSetCond(batch, cameras[start:end].to(device)), **cached)
            rgbs.append(r["rgb"].float().cpu())
            depths.append(r["depth"].float().cpu())
            start = end
    rgb, depth = torch.cat(rgbs), torch.cat(depths)
    seen = depth > 0
    lo = float(depth[seen].min()) if seen.any() else 0.0
    hi = float(depth[seen].max()) if seen.any() else 1.0
    d = torch.where(seen, 1.0 - (depth - lo) / max(hi - lo, 1e-6) * 0.8, torch.zeros_like(depth))  # near = bright
    d = (d * 2 - 1).expand(-1, 3, -1, -1)
    for name, images in (("rgb", rgb), ("depth", d)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(to_uint8(images)):
            Image.fromarray(img).save(folder / name / f"{i:03d}.png")
    save_gif(torch.cat([rgb, d], dim=-1), folder / "field.gif", fps=fps)


def write_field_renders(out: Path, method: Any, inputs: Any, cameras: Any, *, fps: float, device: str = "cpu",
                        chunk: int = 8, pooled: list[Any] | None = None) -> list[str]:
    """GeNVS: the feature field of the *input* views rendered at every frame's camera (:func:`render_field`): what
    the volumes know before any denoising, in ``field/`` (``rgb/NNN.png``, ``depth/NNN.png``, ``field.gif``).
    ``cameras`` is ``Cameras (T,)``. ``pooled``: per frame the ``ViewSet (1, K)`` that conditioned it
    (:meth:`PooledSets.frame_sets`), rendered the same way into ``field_pooled/``. The input set is encoded once
    for both (one volume cache); returns the entries for the file list."""
    from vantage.sampling.orbit import as_view_set

    make_cache = getattr(method, "volume_cache", None)
    cache = make_cache(1) if callable(make_cache) else None  # one set: the inputs' (each pooled set is new)
    views = as_view_set(inputs)  # (1, K)
    render_field(out / "field", method, [views] * len(cameras), cameras, fps=fps, device=device, chunk=chunk,
                 cache=cache)
    files = ["field/rgb/ (the input views' feature field rendered at each frame)", "field/depth/", "field/field.gif"]
    if pooled is not None:
        render_field(out / "field_pooled", method, pooled, cameras, fps=fps, device=device, chunk=chunk,
                     cache=cache)
        files += ["field_pooled/rgb/ (the field of the pooled set that conditioned each frame)",
                  "field_pooled/depth/", "field_pooled/field.gif"]
    return files


class PooledSets:
    """``autoregressive_orbit(callback=...)`` for the ``genvs-pooled`` strategy: per orbit step, the view set that
    sample 0 was conditioned on at its last denoiser call (the strategy's ``last_cond``, which the last denoising
    step sets) and the positions of those views in the orbit's set (``last_index``: the inputs at
    ``0 .. n_inputs − 1``, the view generated at step ``j`` at ``n_inputs + j``)."""

    def __init__(self, n_inputs: int) -> None:
        self.n_inputs = n_inputs
        self.steps: dict[int, tuple[Any, list[int]]] = {}  # orbit step -> (ViewSet (1, K) on the CPU, positions)

    def __call__(self, info: dict[str, Any]) -> None:
        from vantage.cameras import Cameras
        from vantage.data.views import ViewSet

        strat, samples = info["strategy"], [int(b) for b in info["samples"]]
        cond, index = getattr(strat, "last_cond", None), getattr(strat, "last_index", None)
        if cond is None or index is None or 0 not in samples:
            return
        r = samples.index(0)
        keep = (index[r] >= 0).cpu()
        positions = index[r].cpu()[keep]
        v, cams = cond.views.to("cpu"), cond.views.cameras.to("cpu")
        views = ViewSet(images=v.images[r:r + 1, keep].clone(), valid=v.valid[r:r + 1, keep].clone(),
                        cameras=Cameras(cams.c2w[r:r + 1, keep], cams.K[r:r + 1, keep], cams.width, cams.height),
                        view_ids=positions[None].clone())
        self.steps[int(info["step"])] = (views, positions.tolist())

    def frame_sets(self, result: Any, inp: Any) -> tuple[list[Any], list[dict[str, Any]]]:
        """Per frame of sample 0 of ``result``: the ``ViewSet (1, K)`` that conditioned it (the input views for a
        frame copied from an input) and what it held, ``{"frame", "generated", "input_views" (the inputs' view
        ids, ``inp.input_indices``), "frames" (frame indices, in generation order)}``."""
        from vantage.sampling.orbit import as_view_set

        gen, order = result.generated[0], result.order[0].tolist()
        n_copied = len(gen) - int(gen.sum())
        step_of = {order[n_copied + j]: j for j in range(len(order) - n_copied)}
        in_idx, n = list(inp.input_indices), self.n_inputs
        sets, members = [], []
        for t in range(len(order)):
            if bool(gen[t]) and step_of[t] in self.steps:
                views, pos = self.steps[step_of[t]]
            else:
                views, pos = as_view_set(inp.inputs), list(range(n))
            sets.append(views)
            members.append({"frame": t, "generated": bool(gen[t]), "input_views": [in_idx[p] for p in pos if p < n],
                            "frames": [order[n_copied + p - n] for p in pos if p >= n]})
        return sets, members
