"""``vantage sample``: an orbit of novel views from one or more input views, with a trained checkpoint.

    vantage sample --checkpoint RUN_DIR --input IMAGE(S)_OR_OBJECT_DIR --orbit N --out DIR
                   [--input-views 0,6,12 | --num-input-views K] [--no-autoregressive]
                   [--sampler S --steps K --guidance W --strategy composed|stochastic|single --order O
                    --save-weights [mean|final] --seed S --elevation E --targets orbit|dataset --device D]

Several input views: an object folder with ``--input-views`` (positions) or ``--num-input-views``
(evenly spaced), or several image files. The orbit runs through the first input. By default every
generated view joins the conditioning set (autoregressive); ``--no-autoregressive`` conditions
every target on the input views only (fixed views). Strategies: ``composed`` (ViewFusion's
composition of the whole set; the default for ViewFusion checkpoints), ``stochastic`` (3DiM: one
random view of the set per denoising step; the default otherwise), ``single`` (the first input).

Writes into ``--out`` (which must be new or empty, unless ``--overwrite``):

* ``frames/000.png`` …: one PNG per target view (frame 0 of an orbit through the input camera is
  the input itself, not generated); ``input.png`` (the first input) and ``inputs/`` (all of them,
  when several);
* ``orbit.gif`` and ``orbit.mp4`` (the MP4 only when ``ffmpeg`` is on PATH);
* ``contact_sheet.png``: inputs | generated | ground truth (when the input folder has views at
  the target cameras; white where unknown);
* ``cameras.json``: every frame's camera in vantage's convention (OpenCV ``c2w``, pixel ``K``) and as
  a nerfstudio ``transform_matrix`` (OpenGL ``c2w``), plus ``nerfstudio/transforms.json`` with
  the frames, which nerfstudio opens directly;
* ``weights/`` (``--save-weights``, composed strategy): per generated frame the composed views and
  their per-pixel weights (``NNN.png``), ``orbit.gif``, ``weights.pt`` and ``summary.json``;
* ``sample.json``: the settings, timings, NFE and the PSNR against ground truth where known.

See ``docs/sampling.md`` for the input rules (default camera of an unposed image, resizing) and
``docs/viewfusion.md`` for ViewFusion.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "load_method", "cmd_sample"]


def _view_list(text: str) -> list[int]:
    """``"0,6,12"`` -> ``[0, 6, 12]`` (``""`` -> ``[]``, refused later as zero input views)."""
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated view positions like 0,6,12, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", formatter_class=HelpFormatter, description=__doc__,
                       help="generate an orbit of novel views from input views")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="run directory or checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--input", required=True, type=Path, nargs="+",
                   help="an image (png/jpg; no pose: the model's default camera is assumed), several images (the "
                        "views of one object, all inputs) or an object folder of any supported dataset format")
    p.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
    p.add_argument("--orbit", type=int, default=None,
                   help="number of views: the orbit through the input camera (default 24); with --targets dataset, "
                        "at most this many of the object's other views (default: all)")
    p.add_argument("--targets", choices=["orbit", "dataset"], default="orbit",
                   help="orbit: cameras on a circle through the (first) input camera; dataset: the object's own "
                        "cameras (those not used as inputs)")
    p.add_argument("--elevation", type=float, default=None,
                   help="orbit elevation in degrees (default: the input camera's). For an unposed image it is also "
                        "the elevation assumed for the input (default: the model's input_elevation_deg)")
    p.add_argument("--radius", type=float, default=None, help="camera distance assumed for an unposed image")
    p.add_argument("--fov", type=float, default=None, help="horizontal FOV (degrees) assumed for an unposed image")
    p.add_argument("--sampler", default=None, help="sampler name (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight w, ε form (1+w)ε_c − wε_u; 0 = none (default: the model's). "
                        "Not for ViewFusion (no unconditional branch)")
    p.add_argument("--strategy", choices=["composed", "stochastic", "single"], default=None,
                   help="composed: every denoising step composes all views of the set with the learned per-pixel "
                        "weights (ViewFusion only; its default); stochastic: each step conditions on a random view "
                        "of the set (3DiM; the default for other methods); single: always on the first input")
    p.add_argument("--autoregressive", action=argparse.BooleanOptionalAction, default=True,
                   help="add every generated view to the conditioning set (the default, the papers' mode); "
                        "--no-autoregressive: fixed views, every target from the input views only")
    p.add_argument("--order", choices=["sequential", "alternating"], default="sequential",
                   help="generation order: as listed, or nearest-to-the-input first on alternating sides")
    p.add_argument("--save-weights", nargs="?", const="mean", choices=["mean", "final"], default=None,
                   help="write ViewFusion's per-view weight maps (composed strategy) to weights/: the mean over "
                        "the denoising steps (default) or those of the final step")
    p.add_argument("--max-rows", type=int, default=None, metavar="R",
                   help="ViewFusion: at most R views per network call (the composed set is split; less memory, "
                        "same result)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--scene", default=None, help="scene index or name when the input folder holds several")
    p.add_argument("--input-view", type=int, default=0,
                   help="which view of an object folder is the input (the first one with --num-input-views)")
    p.add_argument("--input-views", type=_view_list, default=None, metavar="I,J,...",
                   help="several input views of an object folder (or of several images), by position, e.g. 0,6,12; "
                        "the orbit runs through the first")
    p.add_argument("--num-input-views", type=int, default=None, metavar="K",
                   help="K input views evenly spaced over the object's views, starting at --input-view")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second of the GIF/MP4")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.set_defaults(func=cmd_sample)


# ------------------------------------------------------------------------------------ checkpoint
def load_method(path: Path, device: str = "cpu"):
    """``(method, checkpoint folder)``: the checkpoint's method with its (EMA) weights, in eval mode.

    ``path`` is a run folder (its newest checkpoint), a checkpoint folder or a file in one
    (:func:`vantage.train.checkpoint.load_checkpoint`). Problems become a :class:`UserError` naming the file.
    """
    from vantage.cli.main import UserError
    from vantage.train.checkpoint import CheckpointError, find_checkpoint, load_checkpoint

    path = Path(path)
    try:
        method = load_checkpoint(path, device=device)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    folder = path.parent if path.is_file() else path
    if not (folder / "model.safetensors").is_file():
        folder = find_checkpoint(folder) or folder
    return method, folder


# ------------------------------------------------------------------------------------ outputs
def _write_mp4(frames_dir: Path, out: Path, fps: float, size: int) -> str | None:
    """Encode ``frames_dir/%03d.png`` with ffmpeg; returns None or why it was skipped."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return "ffmpeg not found on PATH: orbit.mp4 skipped"
    side = max(256, size) // 2 * 2
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-framerate", str(fps), "-i", str(frames_dir / "%03d.png"),
           "-vf", f"scale={side}:{side}:flags=neighbor", "-pix_fmt", "yuv420p", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    return None if res.returncode == 0 else f"ffmpeg failed ({res.stderr.strip()[:200]}): orbit.mp4 skipped"


def _camera_entry(cams, i: int) -> dict:
    from vantage.cameras import cartesian_to_spherical

    polar, az, r = (float(v) for v in cartesian_to_spherical(cams.centers[i].double()))
    return {"c2w": cams.c2w[i].tolist(), "K": cams.K[i].tolist(), "transform_matrix": cams.to_opengl()[i].tolist(),
            "azimuth_deg": round(math.degrees(az), 6), "elevation_deg": round(90 - math.degrees(polar), 6),
            "radius": round(r, 6)}


def _psnr(a, b) -> float:
    mse = float(((a.float() - b.float()) / 2).pow(2).mean())
    return float("inf") if mse == 0 else -10 * math.log10(mse)


def _strategy(method: Any, args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]]:
    """``(strategy for autoregressive_orbit, its name, strategy options)``; user errors for what does not fit."""
    from vantage.cli.main import UserError

    composing = callable(getattr(method, "set_denoiser", None)) and method.name == "viewfusion"
    name = args.strategy or ("composed" if composing else "stochastic")
    if name == "composed" and not composing:
        raise UserError(f"--strategy composed needs a ViewFusion checkpoint; '{method.name}' conditions on one view "
                        f"at a time (use stochastic or single)")
    if args.save_weights and name != "composed":
        raise UserError(f"--save-weights shows the weights of ViewFusion's composition: it needs --strategy "
                        f"composed (got {name})")
    if args.guidance and not getattr(method, "supports_guidance", True):
        raise UserError(f"{method.name} has no classifier-free guidance (no unconditional branch): "
                        f"leave out --guidance (or give 0), got --guidance {args.guidance:g}")
    try:
        method.single_view_denoiser()
    except NotImplementedError:
        raise UserError(f"the checkpoint's method '{method.name}' has no single-view denoiser: strategies "
                        f"single/stochastic need one (this method samples with its own set conditioning)") from None
    if args.max_rows is not None:
        if args.max_rows < 1:
            raise UserError(f"--max-rows must be >= 1, got {args.max_rows}")
        if not hasattr(method.config, "max_rows"):
            raise UserError(f"--max-rows applies to ViewFusion's composed set; '{method.name}' has no such option")
        method.config.max_rows = args.max_rows
    if name != "composed":
        return name, name, {}
    from vantage.methods.viewfusion import composed_strategy

    return composed_strategy, name, {"accumulate_weights": args.save_weights == "mean"}


def _load_inputs(args: argparse.Namespace, method: Any) -> Any:
    """The :class:`SampleInput` of ``--input`` (notes printed); user errors for inputs the method cannot use."""
    from vantage.cli.main import UserError
    from vantage.sampling.inputs import load_inputs

    cfg = method.config
    default_elevation = getattr(cfg, "input_elevation_deg", 30.0) if args.elevation is None else args.elevation
    inp = load_inputs(args.input, cfg.resolution, elevation_deg=default_elevation,
                      radius=args.radius or getattr(cfg, "input_radius", 2.5),
                      fov_deg=args.fov or getattr(cfg, "input_fov_deg", 40.0), scene=args.scene,
                      input_view=args.input_view, input_views=args.input_views, num_input_views=args.num_input_views)
    for note in inp.notes:
        print(f"note: {note}")
    if not inp.posed and len(inp.input_indices) > 1 and getattr(method, "uses_input_poses", True):
        raise UserError(f"{len(inp.input_indices)} unposed input images all get the same default camera, but "
                        f"'{method.name}' conditions on the input cameras: give one image, or an object folder with "
                        f"cameras and --input-views")
    return inp


def cmd_sample(args) -> int:
    import torch
    from PIL import Image

    from vantage.cli.main import UserError
    from vantage.data.formats.nerfstudio import write_nerfstudio
    from vantage.data.views import ObjectViews
    from vantage.diffusion.samplers import get_sampler
    from vantage.outputs import prepare_output_dir
    from vantage.sampling import autoregressive_orbit
    from vantage.sampling.inputs import match_views, orbit_targets
    from vantage.sampling.weights import WeightRecorder, save_weight_maps
    from vantage.viz import contact_sheet, save_gif, to_uint8

    t_start = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.orbit is not None and args.orbit < 1:
        raise UserError(f"--orbit must be >= 1, got {args.orbit}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    out = prepare_output_dir(args.out, args.overwrite)
    try:
        method, folder = load_method(args.checkpoint, device)
    except (RuntimeError, AssertionError) as e:  # e.g. an unavailable CUDA device
        raise UserError(f"cannot load the model on {device}: {e}") from None
    strategy, strategy_name, strategy_options = _strategy(method, args)
    cfg = method.config
    res = cfg.resolution
    print(f"model: {method.name} from {folder} ({sum(p.numel() for p in method.parameters()) / 1e6:.2f}M "
          f"parameters, {res}x{res}), device {device}")
    inp = _load_inputs(args, method)
    views, k_in, in_idx = inp.views, inp.input_index, inp.input_indices
    inputs = inp.inputs
    input_cam = views.cameras[k_in:k_in + 1]
    if args.targets == "orbit":
        n = 24 if args.orbit is None else args.orbit
        # an unposed image was given the --elevation camera already: orbit through it
        targets = orbit_targets(input_cam, n, elevation_deg=args.elevation if inp.posed else None)
        truth_idx = match_views(views, targets) if inp.posed else [None] * n
    else:
        if not inp.posed:
            raise UserError("--targets dataset needs posed views; this input has no cameras")
        others = [i for i in range(len(views)) if i not in in_idx]
        if not others:
            raise UserError(f"--targets dataset: scene '{inp.scene}' has no view besides the input(s)")
        if args.orbit is not None and args.orbit < len(others):
            others = [others[round(j * len(others) / args.orbit)] for j in range(args.orbit)]
        targets, truth_idx = views.cameras[others], list(others)
    sampler = args.sampler or cfg.default_sampler
    try:
        get_sampler(sampler)
    except KeyError as e:
        raise UserError(str(e).strip("'\"")) from None
    steps = args.steps or cfg.default_steps
    guidance = cfg.default_guidance if args.guidance is None else args.guidance
    k = len(in_idx)
    mode = "autoregressive" if args.autoregressive else "fixed views"
    print(f"generating {len(targets)} views ({args.targets}, order {args.order}) from {k} input view(s) "
          f"{in_idx} with {sampler} x {steps} steps, guidance {guidance:g}, strategy {strategy_name}, {mode}, "
          f"seed {args.seed}")
    if strategy_name == "composed":
        n_new = sum(m is None for m in match_views(inputs, targets))  # targets not copied from an input
        largest = k + max(0, n_new - 1) if args.autoregressive else k
        max_views = getattr(cfg, "max_views", largest)
        if largest > max_views:
            print(f"note: the conditioning set reaches {largest} views, more than the {max_views} the model was "
                  f"trained with; ViewFusion composes any number (a softmax over the views), quality may vary")
    recorder = None
    if args.save_weights:
        files_in = inputs.meta.get("files") if inp.source == "images" else None
        labels = ([Path(files_in[j]).stem[:12] for j in in_idx] if files_in else
                  [f"view {i}" for i in in_idx] if k > 1 else ["input"])
        recorder = WeightRecorder(inputs.images, args.save_weights, input_labels=labels)
    try:
        result = autoregressive_orbit(method, inputs, targets, strategy=strategy, order=args.order,
                                      sampler=sampler, steps=steps, guidance=guidance, seed=args.seed,
                                      device=device, progress=True, autoregressive=args.autoregressive,
                                      callback=recorder, strategy_options=strategy_options)
    except (KeyError, ValueError) as e:
        raise UserError(str(e).strip("'\"")) from None
    frames = result.images[0].cpu()
    gen = result.generated[0]

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
    save_gif(frames, out / "orbit.gif", fps=args.fps)
    files += ["frames/", "orbit.gif"]
    skipped = _write_mp4(fdir, out / "orbit.mp4", args.fps, max(256, res))
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
    doc = {"convention": "c2w: camera-to-world with OpenCV camera axes (x right, y down, z forward); K in pixels, "
                         "pixel centres at +0.5; world +z up. transform_matrix: the same camera with OpenGL axes "
                         "(nerfstudio / Blender)",
           "width": cams.width, "height": cams.height,
           "input": {"file": "input.png", **_camera_entry(input_cam, 0), "posed": inp.posed},
           "inputs": [{"file": in_files[j], "view": in_idx[j], **_camera_entry(inputs.cameras, j),
                       "posed": inp.posed} for j in range(k)],
           "frames": [{"file": f"frames/{i:03d}.png", "generated": bool(gen[i]),
                       "ground_truth_view": truth_idx[i], **_camera_entry(cams, i)} for i in range(len(cams))]}
    (out / "cameras.json").write_text(json.dumps(doc, indent=1))
    with tempfile.TemporaryDirectory() as tmp:  # nerfstudio export of the frames (+ the input when not a frame)
        write_nerfstudio(ObjectViews(images=frames, cameras=cams), Path(tmp) / "ns")
        shutil.copytree(Path(tmp) / "ns", out / "nerfstudio", dirs_exist_ok=True)
    files += ["cameras.json", "nerfstudio/transforms.json"]
    if recorder is not None:
        azimuths = [doc["frames"][i]["azimuth_deg"] for i in range(len(cams))]
        written = save_weight_maps(recorder.records, out / "weights", mode=args.save_weights,
                                   fps=min(args.fps, 2.0), cameras_deg=azimuths)
        maps = [f for f in written if f[0].isdigit()]
        files.append(f"weights/ ({len(maps)} weight maps NNN.png, {', '.join(f for f in written if f not in maps)})")

    psnr = {i: _psnr(frames[i], truth[i]) for i in range(len(truth)) if truth[i] is not None and gen[i]}
    summary = {"checkpoint": str(folder), "method": method.name, "input": [str(p) for p in args.input],
               "scene": inp.scene, "input_views": in_idx, "notes": inp.notes, "targets": args.targets,
               "views": len(cams), "order": result.order[0].tolist(), "sampler": sampler, "steps": steps,
               "guidance": guidance, "strategy": strategy_name, "autoregressive": args.autoregressive,
               "set_sizes": result.set_sizes[0].tolist(), "weights": args.save_weights,
               "seed": args.seed, "device": device, "nfe": result.nfe, "seconds_sampling": round(result.seconds, 3),
               "seconds_total": round(time.perf_counter() - t_start, 3),
               "psnr": {str(k): round(v, 3) for k, v in psnr.items()},
               "psnr_mean": round(sum(psnr.values()) / len(psnr), 3) if psnr else None}
    (out / "sample.json").write_text(json.dumps(summary, indent=2))
    files.append("sample.json")
    print(f"wrote {len(cams)} views to {out}/ in {summary['seconds_total']} s "
          f"({result.seconds / max(1, int(gen.sum())):.2f} s per generated view, {result.nfe} denoiser calls):")
    for f in files:
        print(f"  {f}")
    if psnr:
        print(f"PSNR against ground truth (generated views with a known truth): {summary['psnr_mean']:.2f} dB")
    return 0
