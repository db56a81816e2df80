"""``vantage evaluate``: score novel views against ground truth under a versioned protocol.

    vantage evaluate --checkpoint RUN_DIR --protocol P --out DIR [--data PATH] [--device D]
                     [--objects N] [--steps K] [--resolution PX]
    vantage evaluate --checkpoint RUN_DIR --protocol P --out DIR --sweep-views 1,2,3,6 | --sweep-steps 4,8,16,32
    vantage evaluate --pred DIR --gt DIR --out DIR [--protocol P] [--inputs DIR] [--device D]
    vantage evaluate --list

Checkpoint mode runs the protocol's objects through the model (input views -> target views, with
the protocol's seeds and sampler settings), saves ``inputs/``, ``gt/`` and ``pred/`` under
``--out`` and scores them, with the copy-the-input baseline next to the model. A protocol on a
dataset on disk (SRN, NMR, RealEstate10K) needs its folder with ``--data``. ``--objects`` and
``--steps`` override the protocol for quick looks, ``--resolution`` evaluates a model of another size (e.g.
a 32 px one on a 64 px protocol); the report says so.

Sweeps (checkpoint mode) run one evaluation per value into ``--out/views-K/`` or ``--out/steps-K/`` and
write ``sweep.json``, ``sweep.md`` and ``sweep.png`` (PSNR and SSIM against the number of input views, with
the copy-the-nearest-input baseline, or against the NFE per view): ``--sweep-views`` spreads K input
views evenly from the protocol's first input view and scores every K on the same targets
(docs/evaluation.md, "Sweeps").

Files mode scores an existing folder of predictions against a folder of ground truth, matched
by relative path without extension (``obj/000012.png`` <-> ``obj/000012.jpg``); ``--protocol``
takes the metric settings and background from a protocol (default: PSNR, SSIM with the 11x11
Gaussian window, LPIPS-VGG, mean over images, white background). The joint FID and the joint
FD-DINOv2 (``jfid``, ``jfd_dinov2`` in the protocol's metrics) pair each target with its source view:
give the input views with ``--inputs`` (the ``inputs/`` folder of a checkpoint-mode evaluation: one
image per object folder, or one image per target under the target's relative name).

Writes into ``--out`` (new or empty, unless ``--overwrite``): ``metrics.json`` (settings, vantage
version, means, per image, per object), ``metrics.md``, ``per_image.csv``, ``per_object.csv``
(images in object sub-folders) and ``best_worst.png``. LPIPS, FID/KID/joint FID and FD-DINOv2/joint
FD-DINOv2 need local weight files (docs/metrics.md); when one is missing only the metrics that need it
are skipped, and the report names the file.
Protocols: ``--list``, and docs/evaluation.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "cmd_evaluate"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", formatter_class=HelpFormatter, description=__doc__,
                       help="score generated views against ground truth (checkpoint + protocol, or two folders)")
    p.add_argument("--checkpoint", type=Path, default=None, help="run directory or checkpoint folder (checkpoint mode)")
    p.add_argument("--protocol", default=None,
                   help="a shipped protocol name (synthetic-v1, srn-cars-v1, nmr-v1, realestate10k-v1, "
                        "realestate10k-mid-v1, realestate10k-long-v1; a name without -vN is its newest version) or a "
                        "protocol JSON file")
    p.add_argument("--pred", type=Path, default=None, help="folder of predicted images (files mode)")
    p.add_argument("--gt", type=Path, default=None, help="folder of ground-truth images (files mode)")
    p.add_argument("--inputs", type=Path, default=None,
                   help="folder of the input (source) views, for the joint metrics (files mode, a protocol listing "
                        "jfid or jfd_dinov2): the only image of each target's object folder, or an image with the "
                        "target's relative name")
    p.add_argument("--out", type=Path, default=None, help="output folder (must be new or empty)")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset folder for a protocol on a dataset on disk (its root, e.g. the folder holding "
                        "cars_test for srn-cars-v1)")
    p.add_argument("--objects", type=int, default=None, help="evaluate only the protocol's first N objects")
    p.add_argument("--steps", type=int, default=None, help="sampling steps instead of the protocol's")
    p.add_argument("--resolution", type=int, default=None,
                   help="evaluate at this size (px) instead of the protocol's, e.g. a 32 px model")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance weight instead of the protocol's (VIVID: the guide network's weight w, 1 = none)")
    p.add_argument("--guide", type=Path, default=None,
                   help="VIVID: the guide network (run or checkpoint folder), e.g. its unconditional model")
    p.add_argument("--sr-checkpoint", type=Path, default=None,
                   help="VIVID: chain this super-resolution stage (vivid-sr); the protocol's resolution is its output")
    p.add_argument("--sweep-views", type=_int_list, default=None, metavar="K,K,...",
                   help="checkpoint mode: one evaluation per number of input views (spread evenly from the "
                        "protocol's first input view; the same targets for every count), plotted against it")
    p.add_argument("--sweep-steps", type=_int_list, default=None, metavar="K,K,...",
                   help="checkpoint mode: one evaluation per number of sampling steps, plotted against the NFE per "
                        "view")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow writing into a non-empty --out (a previous evaluation's pred/, gt/, inputs/ are "
                        "replaced; other files are replaced one by one)")
    p.add_argument("--list", action="store_true", help="list the shipped protocols and exit")
    p.set_defaults(func=cmd_evaluate)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,3,6, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,2,3,6, got '{text}'")
    return values


def _check_args(args: argparse.Namespace) -> str:
    """The mode (``"checkpoint"`` or ``"files"``) after the checks on which options go together."""
    from vantage.cli.main import UserError

    files = args.pred is not None or args.gt is not None
    if args.checkpoint is not None and files:
        raise UserError("give either --checkpoint (checkpoint mode) or --pred and --gt (files mode), not both")
    if args.checkpoint is None and not files:
        raise UserError("nothing to evaluate: give --checkpoint RUN_DIR --protocol P, or --pred DIR --gt DIR")
    if files and (args.pred is None or args.gt is None):
        raise UserError(f"files mode needs both --pred and --gt (got only {'--pred' if args.gt is None else '--gt'})")
    if args.out is None:
        raise UserError("--out DIR is required")
    if files:
        used = [o for o, v in (("--data", args.data), ("--objects", args.objects), ("--steps", args.steps),
                               ("--resolution", args.resolution),
                               ("--guidance", args.guidance), ("--guide", args.guide),
                               ("--sr-checkpoint", args.sr_checkpoint), ("--sweep-views", args.sweep_views),
                               ("--sweep-steps", args.sweep_steps)) if v is not None]
        if used:
            raise UserError(f"{', '.join(used)} only apply to checkpoint mode (--checkpoint)")
        return "files"
    if args.inputs is not None:
        raise UserError("--inputs only applies to files mode (--pred, --gt); checkpoint mode pairs each target with "
                        "the input view it generated it from")
    if args.protocol is None:
        raise UserError("checkpoint mode needs --protocol (a shipped name such as synthetic-v1, or a JSON file; "
                        "see --list)")
    if args.sweep_views is not None and args.sweep_steps is not None:
        raise UserError("give one sweep at a time: --sweep-views or --sweep-steps")
    if args.sweep_steps is not None and args.steps is not None:
        raise UserError("--steps and --sweep-steps do not go together: the sweep sets the steps")
    for name, value in (("--objects", args.objects), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    return "checkpoint"


def _list() -> int:
    from vantage.eval.protocol import load_protocol, shipped_protocols

    for name, path in shipped_protocols().items():
        p = load_protocol(path)
        data = p.dataset.spec or f"{p.dataset.format} ({p.dataset.split or 'all'})"
        print(f"{name:22s} {data}, {p.resolution} px, metrics {', '.join(p.metrics.names)}")
    return 0


def _summary_line(result: dict) -> str:
    mean = result["mean"]
    parts = [f"PSNR {mean['psnr']:.2f} dB" if mean.get("psnr") is not None else "",
             f"SSIM {mean['ssim']:.3f}" if mean.get("ssim") is not None else "",
             f"LPIPS {mean['lpips']:.3f}" if mean.get("lpips") is not None else ""]
    return ", ".join(p for p in parts if p)


def _sweep(args: argparse.Namespace, protocol, out: Path, device: str) -> int:
    from vantage.eval.sweep import sweep_checkpoint

    which, values = ("views", args.sweep_views) if args.sweep_views else ("steps", args.sweep_steps)
    doc = sweep_checkpoint(args.checkpoint, protocol, out, sweep=which, values=values, data=args.data, device=device,
                           objects=args.objects, steps=args.steps, resolution=args.resolution, guidance=args.guidance,
                           guide=args.guide, sr_checkpoint=args.sr_checkpoint, overwrite=args.overwrite)
    for r in doc["rows"]:
        scores = _summary_line({"mean": r}) or "no PSNR/SSIM/LPIPS in the protocol's metrics"
        base = "" if r["baseline_psnr"] is None else f" (copy nearest input {r['baseline_psnr']:.2f} dB)"
        print(f"{which} {r['value']}: {scores}{base}, {r['nfe_per_view']:.1f} NFE / view")
    print(f"wrote to {out}/: {', '.join(doc['files'])}")
    return 0


def _group_skipped(skipped: dict[str, str]) -> dict[str, list[str]]:
    """``{reason: [metrics]}``: metrics skipped for the same missing weight file are named together."""
    out: dict[str, list[str]] = {}
    for metric, why in skipped.items():
        out.setdefault(why, []).append(metric)
    return out


def cmd_evaluate(args) -> int:
    import torch

    from vantage.cli.main import UserError
    from vantage.eval.evaluate import EvaluationError, evaluate_folders
    from vantage.eval.protocol import ProtocolError, load_protocol
    from vantage.eval.report import prepare_evaluation_dir, write_report
    from vantage.eval.scorer import SET_METRIC_LABELS
    from vantage.train.checkpoint import CheckpointError

    if args.list:
        return _list()
    mode = _check_args(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    try:
        protocol = load_protocol(args.protocol) if args.protocol is not None else None
        out, previous = prepare_evaluation_dir(args.out, args.overwrite, create=False)
        if mode == "checkpoint" and (args.sweep_views or args.sweep_steps):
            return _sweep(args, protocol, out, device)
        if mode == "checkpoint":
            from vantage.eval.evaluate_model import evaluate_checkpoint

            run = evaluate_checkpoint(args.checkpoint, protocol, out, data=args.data, device=device,
                                      objects=args.objects, steps=args.steps, resolution=args.resolution,
                                      previous=previous,
                                      guidance=args.guidance, guide=args.guide, sr_checkpoint=args.sr_checkpoint)
            result, files = run["result"], run["files"]
        else:
            from vantage.eval.protocol import MetricSettings
            from vantage.eval.scorer import SOURCE_METRICS, describe_metrics, source_metrics

            settings = protocol.metrics if protocol is not None else MetricSettings()
            background = protocol.background if protocol is not None else (1.0, 1.0, 1.0)
            joint = source_metrics(settings.names)
            if args.inputs is not None and not joint:
                raise UserError(f"--inputs is used only by {describe_metrics(SOURCE_METRICS)}, and the metrics "
                                f"({', '.join(settings.names)}) include neither: give a --protocol whose metrics "
                                f"list one (e.g. realestate10k-mid-v1, with jfid), or leave out --inputs")
            if args.inputs is None and joint:
                raise UserError(f"protocol {protocol.label} asks for {describe_metrics(joint)}, which "
                                f"{'pairs' if len(joint) == 1 else 'pair'} each target with its source (input) view: "
                                f"give the input views with --inputs DIR (e.g. the inputs/ folder of a "
                                f"checkpoint-mode evaluation)")
            if args.inputs is not None and not args.inputs.is_dir():
                raise UserError(f"--inputs: folder not found: {args.inputs}")
            print(f"scoring {args.pred} against {args.gt}"
                  + (f" with the metric settings of protocol {protocol.label}" if protocol else ""))
            result = evaluate_folders(args.pred, args.gt, settings=settings, background=background,
                                      sources=args.inputs, device=device)
            files = write_report(out, result, settings=settings, mode="files", protocol=protocol,
                                 background=background)
    except (ProtocolError, EvaluationError, CheckpointError) as e:
        raise UserError(str(e)) from None
    except (RuntimeError, AssertionError) as e:
        if "cuda" not in str(e).lower():
            raise
        raise UserError(f"cannot run on {device}: {e}") from None
    for note in result["notes"]:
        print(f"note: {note}")
    for why, metrics in _group_skipped(result["skipped"]).items():  # the full text: where to get the weights
        print(f"note: {', '.join(SET_METRIC_LABELS.get(m, m.upper()) for m in metrics)} skipped: {why}")
    print(f"{result['images']} images: {_summary_line(result)}")
    if "baseline" in result:
        print(f"copy-the-input baseline: {_summary_line(result['baseline'])}")
    for key, value in result["set_metrics"].items():
        if key in SET_METRIC_LABELS:
            print(f"{SET_METRIC_LABELS[key]}: {value:.4g}")
    print(f"wrote to {out}/: {', '.join(files)}")
    return 0
