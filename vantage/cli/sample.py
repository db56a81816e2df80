"""``vantage sample``: an orbit of novel views from one or more input views, with a trained checkpoint.

    vantage sample --checkpoint RUN_DIR --input IMAGE(S)_OR_OBJECT_DIR --orbit N --out DIR
                   [--input-views 0,6,12 | --num-input-views K] [--no-autoregressive]
                   [--sampler S [--sampler-option KEY=VALUE ...] --steps K --guidance W [--guide G]
                    [--sr-checkpoint SR] --strategy S
                    --order sequential|alternating --save-weights [mean|final] --save-intermediates --seed S]
                   [--elevation DEG --arc START:END | --cameras FILE | --targets dataset] [--device D]
                   [--t-in T --t-auto T --window DEG --distance azimuth|azimuth+elevation --separate-noise]
                   [--walk-step DEG [--save-walks]] [--max-context K] [--max-cond-views K]

Several input views: an object folder with ``--input-views`` (positions) or ``--num-input-views``
(evenly spaced), or several image files. The orbit runs through the first input. By default every
generated view joins the conditioning set (autoregressive); ``--no-autoregressive`` conditions
every target on the input views only (fixed views). Strategies: ``composed`` (ViewFusion's
composition of the whole set; the default for ViewFusion checkpoints), ``stochastic`` (3DiM: one
random view of the set per denoising step; the default otherwise), ``single`` (the first input),
``interpolated`` (ViewFusion's interpolated denoising, Yang et al. 2024: every view within
``--window`` degrees of the target, and the input, in one batched call per step, fused with the
weights w_0 = exp(-(Δ_0/π)/T_in) for the input and (1 - w_0)·softmax(-Δ_i/max Δ/T_auto) for the
others; its default order is alternating). ``--walk-step DEG`` (interpolated only) is the paper's single-target
mode: every target is generated on its own, by a walk from the input in steps of at most DEG degrees (each pose
conditioned on the input and the walk's earlier poses), instead of one autoregressive orbit. ``--max-context K``
(composed and interpolated) conditions on the inputs and only the K generated views nearest in pose to the target,
which bounds the cost of a view. ``--max-cond-views K`` (GeNVS's ``genvs-pooled``) pools at most K views of the set
per step: the inputs (at most K-1), the latest generated view and random earlier ones.

Targets: the orbit through the (first) input at its elevation (``--elevation`` any other), over the
full circle or a partial arc ``--arc START:END`` (degrees from the input's azimuth, e.g.
``--arc=-90:90``: write the ``=`` when START is negative);
the cameras of a file (``--cameras``: a ``vantage sample`` cameras.json or a nerfstudio
transforms.json); or the object's own cameras (``--targets dataset``). Targets that coincide with
an input are the input itself.

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
* ``intermediates/NNN/SSS.png`` (``--save-intermediates``): the x̂0 estimate of every denoising step
  ``SSS`` of every generated frame ``NNN``;
* ``field/`` (GeNVS): the input views' feature field rendered at every frame (``rgb/``, ``depth/``,
  ``field.gif``); ``field_pooled/`` (GeNVS, ``genvs-pooled``, autoregressive): the field of the pooled set that
  conditioned each frame, whose members ``sample.json`` lists in ``field_pooled_sets``;
* ``walks/NNN/SSS.png`` and ``walks/NNN/cameras.json`` (``--walk-step`` with ``--save-walks``): the poses ``SSS``
  of the walk to frame ``NNN`` (the last is the frame) and their cameras;
* ``sample.json``: the settings, timings, NFE and the PSNR against ground truth where known.

See ``docs/sampling.md`` for the input rules (default camera of an unposed image, resizing), the
strategies and the orbit options, and ``docs/viewfusion.md`` for ViewFusion.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
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


def _arc(text: str) -> tuple[float, float]:
    from vantage.sampling.targets import parse_arc

    try:
        return parse_arc(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


EPILOG = """examples:
  vantage sample --checkpoint runs/3dim --input photo.png --out orbit              # 24 views around the input
  vantage sample --checkpoint runs/3dim --input obj/ --strategy interpolated --orbit 36 --out vf
  vantage sample --checkpoint runs/3dim --input obj/ --arc=-60:60 --orbit 13 --elevation 10 --out arc
  vantage sample --checkpoint runs/3dim --input obj/ --cameras path/transforms.json --out path
  vantage sample --checkpoint runs/3dim --input obj/ --strategy interpolated --walk-step 10 --orbit 8 --out walks
  vantage sample --checkpoint runs/vf --input obj/ --orbit 24 --max-context 4 --out bounded     # ViewFusion
"""


def _options_text(options: dict[str, Any]) -> str:
    """`` (s_noise=0.7, eta=0.5)`` for the progress line ("" for none)."""
    return f" ({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in options.items())})" \
        if options else ""


def register(sub: argparse._SubParsersAction) -> None:
    from vantage.cli.sample_strategy import add_strategy_arguments

    p = sub.add_parser("sample", formatter_class=HelpFormatter, description=__doc__, epilog=EPILOG,
                       help="generate an orbit of novel views from input views")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="run directory or checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--input", required=True, type=Path, nargs="+",
                   help="an image (png/jpg; no pose: the model's default camera is assumed), several images (the "
                        "views of one object, all inputs) or an object folder of any supported dataset format")
    p.add_argument("--no-preprocess", action="store_true",
                   help="use image files as they are (composited on white and resized) instead of masking, "
                        "recentring and rescaling the object as `vantage preprocess` does (docs/preprocess.md)")
    p.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
    p.add_argument("--orbit", type=int, default=None,
                   help="number of views: of the orbit (or --arc) through the input camera (default 24); with "
                        "--targets dataset or --cameras, at most this many of those cameras, evenly spaced (default: "
                        "all)")
    p.add_argument("--targets", choices=["orbit", "dataset"], default=None,
                   help="orbit (default): cameras on a circle through the (first) input camera; dataset: the "
                        "object's own cameras (those not used as inputs)")
    p.add_argument("--elevation", type=float, default=None,
                   help="orbit elevation in degrees, any value in (-90, 90) (default: the input camera's). For an "
                        "unposed image it is also the elevation assumed for the input (default: the model's "
                        "input_elevation_deg)")
    p.add_argument("--arc", type=_arc, default=None, metavar="START:END",
                   help="a partial orbit: azimuths START..END degrees from the input's (counter-clockwise about "
                        "world +z; END < START runs clockwise), both ends included, e.g. --arc=-90:90 (with '=' "
                        "when START is negative; a 360-degree span is the full circle; default 0:360)")
    p.add_argument("--cameras", type=Path, default=None, metavar="FILE",
                   help="target cameras from a file: a `vantage sample` cameras.json or a nerfstudio transforms.json "
                        "(or a folder with one), in the order listed; --orbit N keeps N of them, evenly spaced")
    p.add_argument("--radius", type=float, default=None, help="camera distance assumed for an unposed image")
    p.add_argument("--fov", type=float, default=None, help="horizontal FOV (degrees) assumed for an unposed image")
    p.add_argument("--sampler", default=None, help="sampler name (default: the model's)")
    p.add_argument("--sampler-option", action="append", default=[], metavar="KEY=VALUE", dest="sampler_option",
                   help="an option of the sampler, e.g. s_noise=0.7 (the ancestral samplers' noise scale: < 1 = "
                        "colder samples), eta=0.5 (ddim), s_churn=10 (euler/heun); repeatable. The model's own "
                        "options for its default sampler apply unless overridden here")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight w, ε form (1+w)ε_c − wε_u; 0 = none (default: the model's). "
                        "Not for ViewFusion (no unconditional branch). vivid: the weight w of guidance by a second "
                        "network, D_g + w·(D − D_g), 1 = none; it needs a guide (--guide or the checkpoint's)")
    p.add_argument("--guide", type=Path, default=None, metavar="CHECKPOINT",
                   help="vivid only: the guide network's run or checkpoint folder (e.g. its unconditional model)")
    p.add_argument("--sr-checkpoint", type=Path, default=None, metavar="SR",
                   help="a vivid-sr checkpoint: super-resolve every frame with it (its low resolution must be the "
                        "model's resolution); frames are written at its resolution, the model's in frames_base/")
    add_strategy_arguments(p)
    p.add_argument("--autoregressive", action=argparse.BooleanOptionalAction, default=True,
                   help="add every generated view to the conditioning set (the default, the papers' mode); "
                        "--no-autoregressive: fixed views, every target from the input views only")
    p.add_argument("--order", choices=["sequential", "alternating"], default=None,
                   help="generation order: as listed, or nearest-to-the-input first on alternating sides (default: "
                        "alternating for --strategy interpolated, as in the paper; sequential otherwise)")
    p.add_argument("--save-weights", nargs="?", const="mean", choices=["mean", "final"], default=None,
                   help="write ViewFusion's per-view weight maps (composed strategy) to weights/: the mean over "
                        "the denoising steps (default) or those of the final step")
    p.add_argument("--save-intermediates", action="store_true",
                   help="write the x̂0 estimate of every denoising step of every generated view to intermediates/")
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


def _load_inputs(args: argparse.Namespace, method: Any, resolution: int | None = None) -> Any:
    """The :class:`SampleInput` of ``--input`` (notes printed) at ``resolution`` (default: the method's); user
    errors for inputs the method cannot use."""
    from vantage.cli.main import UserError
    from vantage.sampling.inputs import load_inputs

    cfg = method.config
    default_elevation = getattr(cfg, "input_elevation_deg", 30.0) if args.elevation is None else args.elevation
    inp = load_inputs(args.input, resolution or cfg.resolution, elevation_deg=default_elevation,
                      radius=args.radius or getattr(cfg, "input_radius", 2.5),
                      fov_deg=args.fov or getattr(cfg, "input_fov_deg", 40.0), scene=args.scene,
                      input_view=args.input_view, input_views=args.input_views, num_input_views=args.num_input_views,
                      preprocess=not args.no_preprocess, object_fraction=getattr(cfg, "object_fraction", None))
    for note in inp.notes:
        print(f"note: {note}")
    if not inp.posed and len(inp.input_indices) > 1 and getattr(method, "uses_input_poses", True):
        raise UserError(f"{len(inp.input_indices)} unposed input images all get the same default camera, but "
                        f"'{method.name}' conditions on the input cameras: give one image, or an object folder with "
                        f"cameras and --input-views")
    return inp


def cmd_sample(args) -> int:
    import torch

    from vantage.cli.main import UserError
    from vantage.cli.sample_outputs import PooledSets, write_field_renders, write_sample
    from vantage.cli.sample_strategy import choose_strategy, composed_set_note
    from vantage.cli.sample_vivid import apply_guide, guidance_summary, load_sr, super_resolve
    from vantage.cli.sample_walk import intermediates_by_step, run_walks, walk_plan_text, walk_summary, write_walks
    from vantage.diffusion.sampler_options import check_sampler_options, parse_sampler_option
    from vantage.diffusion.samplers import get_sampler
    from vantage.methods.base import sampler_options_for
    from vantage.outputs import prepare_output_dir
    from vantage.sampling import autoregressive_orbit
    from vantage.sampling.inputs import match_views
    from vantage.sampling.targets import choose_targets
    from vantage.sampling.weights import WeightRecorder
    from vantage.viz import to_uint8

    t_start = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.orbit is not None and args.orbit < 1:
        raise UserError(f"--orbit must be >= 1, got {args.orbit}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.elevation is not None and not -90 < args.elevation < 90:
        raise UserError(f"--elevation must be in (-90, 90) degrees (at a pole every azimuth is the same camera), "
                        f"got {args.elevation:g}")
    out = prepare_output_dir(args.out, args.overwrite)
    try:
        method, folder = load_method(args.checkpoint, device)
    except (RuntimeError, AssertionError) as e:  # e.g. an unavailable CUDA device
        raise UserError(f"cannot load the model on {device}: {e}") from None
    apply_guide(method, args.guide)
    guidance = method.config.default_guidance if args.guidance is None else args.guidance
    guidance_text, guidance_record = guidance_summary(method, guidance)  # what actually runs
    sr, sr_folder = load_sr(args.sr_checkpoint, method, device) if args.sr_checkpoint else (None, None)
    choice = choose_strategy(method, args)
    strategy, strategy_name, strategy_options = choice.strategy, choice.name, choice.options
    cfg = method.config
    res = cfg.resolution
    print(f"model: {method.name} from {folder} ({sum(p.numel() for p in method.parameters()) / 1e6:.2f}M "
          f"parameters, {res}x{res}), device {device}")
    inp = _load_inputs(args, method)
    in_idx, inputs = inp.input_indices, inp.inputs
    if strategy_name == "genvs-pooled":  # every input view stays in the pooled set
        strategy_options["keep_first"] = len(in_idx)
    notes: list[str] = []
    try:
        targets, truth_idx, target_kind = choose_targets(
            inp, res, n=args.orbit, dataset=args.targets == "dataset", arc=args.arc, elevation_deg=args.elevation,
            cameras=args.cameras, notes=notes)
    except ValueError as e:
        raise UserError(str(e)) from None
    for note in notes:
        print(f"note: {note}")
    sampler = args.sampler or cfg.default_sampler
    try:
        get_sampler(sampler)
    except KeyError as e:
        raise UserError(str(e).strip("'\"")) from None
    try:
        sampler_options = check_sampler_options(
            sampler, {**sampler_options_for(cfg, sampler), **dict(map(parse_sampler_option, args.sampler_option))},
            "--sampler-option")
    except ValueError as e:
        raise UserError(str(e)) from None
    steps = args.steps or cfg.default_steps
    k = len(in_idx)
    walking = args.walk_step is not None
    mode = "single-target walks" if walking else "autoregressive" if args.autoregressive else "fixed views"
    order = choice.order
    how = walk_plan_text(inputs, targets, args.walk_step) if walking else f"order {order}"
    print(f"generating {len(targets)} views ({target_kind}, {how}) from {k} input view(s) "
          f"{in_idx} with {sampler}{_options_text(sampler_options)} x {steps} steps, guidance {guidance_text}, "
          f"strategy {strategy_name}, {mode}, seed {args.seed}")
    if strategy_name == "composed":
        n_new = sum(m is None for m in match_views(inputs, targets))  # targets not copied from an input
        if note := composed_set_note(cfg, k, n_new, args):
            print(f"note: {note}")
    recorder = None
    if args.save_weights:
        files_in = inputs.meta.get("files") if inp.source == "images" else None
        labels = ([Path(files_in[j]).stem[:12] for j in in_idx] if files_in else
                  [f"view {i}" for i in in_idx] if k > 1 else ["input"])
        recorder = WeightRecorder(inputs.images, args.save_weights, input_labels=labels)
    # genvs-pooled orbits: the set that conditioned each frame (field_pooled/); no composed weights to record then
    pooled = PooledSets(k) if strategy_name == "genvs-pooled" and args.autoregressive and not walking else None
    steps_x0: dict[int, list[Any]] = {}  # orbit step -> x̂0 of every denoising step (sample 0), uint8

    def keep_x0(info: dict[str, Any]) -> None:
        if 0 in info["samples"]:
            steps_x0.setdefault(info["view_step"], []).append(to_uint8(info["denoised"][info["samples"].index(0)]))

    walks, walk_x0 = None, ({} if args.save_intermediates else None)  # walks: frame -> x̂0 of its target pose
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if walking:
                walks = run_walks(method, inputs, targets, args, options=strategy_options, x0_frames=walk_x0,
                                  sampler=sampler, steps=steps, guidance=guidance, device=device,
                                  sampler_options=sampler_options)
                result = walks.orbit_result()
                steps_x0 = intermediates_by_step(walks, walk_x0 or {})
            else:
                result = autoregressive_orbit(method, inputs, targets, strategy=strategy, order=order,
                                              sampler=sampler, sampler_options=sampler_options, steps=steps,
                                              guidance=guidance, seed=args.seed, device=device, progress=True,
                                              autoregressive=args.autoregressive, callback=pooled or recorder,
                                              strategy_options=strategy_options,
                                              step_callback=keep_x0 if args.save_intermediates else None)
    except (KeyError, ValueError) as e:
        raise UserError(str(e).strip("'\"")) from None
    for text in dict.fromkeys(str(w.message) for w in caught):  # each warning once, as a note
        print(f"note: {text}")
    if sr is not None:
        print(f"super-resolving the generated views with {sr_folder} to {sr.config.resolution} px")
        inp = _load_inputs(args, method, sr.config.resolution)
        result = super_resolve(sr, args, inp, result, out)
    gen = result.generated[0]
    files, written = write_sample(out, result=result, inp=inp, truth_idx=truth_idx, fps=args.fps, recorder=recorder,
                                  weights_mode=args.save_weights, intermediates=steps_x0)
    files += ["frames_base/ (the model's frames before super-resolution)"] if sr is not None else []
    files += write_walks(out, walks) if walks is not None and args.save_walks else []
    pooled_sets, pooled_members = pooled.frame_sets(result, inp) if pooled is not None else (None, None)
    if callable(getattr(method, "render_conditioning", None)):  # GeNVS: what the inputs' (pooled sets') field knows
        files += write_field_renders(out, method, inputs, result.cameras[0], fps=args.fps, device=device,
                                     pooled=pooled_sets)
    summary = {"checkpoint": str(folder), "method": method.name, "input": [str(p) for p in args.input],
               "scene": inp.scene, "input_views": in_idx, "notes": inp.notes + notes,
               "targets": args.targets or ("cameras" if args.cameras else "orbit"), "target_cameras": target_kind,
               "arc": list(args.arc) if args.arc else None, "cameras": str(args.cameras) if args.cameras else None,
               "sampler": sampler, "sampler_options": sampler_options, "steps": steps, **guidance_record,
               "strategy": strategy_name,
               "strategy_options": {k: v for k, v in strategy_options.items() if k != "accumulate_weights"},
               "autoregressive": args.autoregressive, "mode": mode, "weights": args.save_weights,
               "intermediates": args.save_intermediates, "seed": args.seed, "device": device, **written,
               "sr_checkpoint": str(sr_folder) if sr is not None else None,
               **(walk_summary(walks, args.walk_step) if walks is not None else {}),
               **({"field_pooled_sets": pooled_members} if pooled_members is not None else {}),
               "seconds_total": round(time.perf_counter() - t_start, 3)}
    if args.max_context is not None:  # the views in each frame's bounded context (interpolated: before its window)
        summary["context_sizes"] = [min(n, k + args.max_context) for n in summary["set_sizes"]]
    (out / "sample.json").write_text(json.dumps(summary, indent=2))
    files.append("sample.json")
    print(f"wrote {summary['views']} views to {out}/ in {summary['seconds_total']} s "
          f"({result.seconds / max(1, int(gen.sum())):.2f} s per generated view, {result.nfe} denoiser calls):")
    for f in files:
        print(f"  {f}")
    if summary["psnr"]:
        print(f"PSNR against ground truth (generated views with a known truth): {summary['psnr_mean']:.2f} dB")
    return 0
