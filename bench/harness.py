"""Benchmark harness: every method trained with the same budget, evaluated on one protocol, in one table.

For each preset in ``--methods`` (default: the six ``*-shapes32`` presets), with ``RUNS/<preset>/`` as its
run folder:

1. **train or load**: a folder without a checkpoint is trained for ``--kimg`` thousand images on the
   embedded synthetic data, with the same training recipe for every method (global batch, AdamW lr,
   constant schedule after a fixed warm-up, bf16 autocast, seed; a preset's own training defaults, such as
   VIVID's EDM2 schedule and power EMA, are reset to the trainer's built-in values): ``vantage train`` run in this
   process (the exact command is printed). A run that exists is evaluated as it is, and resumed /
   extended to ``--kimg`` only with ``--train``. Training images/s = images / training time from
   its ``stats.jsonl`` (file writing excluded);
2. **evaluate**: ``vantage evaluate`` on ``--protocol`` (synthetic-v1), at the model's resolution: when
   it differs from the protocol's (the ``*-shapes32`` models work at 32 px, synthetic-v1 at 64) a copy of
   the protocol with only ``resolution`` changed is written to ``RUNS/protocols/`` (and with the 3D
   consistency score switched on for ``--consistency``). ``--objects`` / ``--steps`` override the protocol
   for quick looks. Evaluations go to ``RUNS/evaluations/<preset>/<protocol>-step<N>[-objects<K>][-steps<S>]``
   and are reused when they exist (``--reevaluate`` runs them again; an interrupted one, which left generated
   views but no ``metrics.json``, is moved aside to ``<name>.interrupted`` and started again);
3. **report**: a Markdown table (parameters, training kimg and images/s, PSNR, SSIM, LPIPS when its
   weights are present, 3D consistency with ``--consistency``, sampler, NFE and seconds per generated
   view; the copy-the-input baseline scored by ``vantage evaluate`` as the last row) on stdout and in
   ``RUNS/harness.md`` / ``RUNS/harness.json``, and with ``--write-benchmarks`` between the markers
   ``<!-- harness:begin -->`` / ``<!-- harness:end -->`` of BENCHMARKS.md (only that block is replaced;
   it is appended when absent), with the hardware and the exact command; ``RUNS/harness_views.png`` (with
   ``--write-benchmarks`` also ``docs/images/harness-views.png`` beside that file, linked from the block) shows
   each method's generated views of the first two objects under the input and the ground truth.

The deterministic ``regression`` baseline makes one network forward per view whatever the sampler: it is
evaluated with its own setting (one Euler step; ``--steps`` does not apply) and its NFE is reported as 1.

    python bench/harness.py --runs runs/harness --kimg 100                   # train what is missing, evaluate
    python bench/harness.py --runs runs/harness --kimg 200 --train           # extend every run to 200 kimg
    python bench/harness.py --runs runs/harness --objects 10 --steps 16      # quick look at existing runs
    python bench/harness.py --runs runs/harness --consistency --write-benchmarks
    python bench/harness.py --runs /tmp/h --quick --tiny --methods regression-shapes32,3dim-shapes32
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness_report beside this file

from harness_report import hardware, render_block, replace_block, views_sheet  # noqa: E402

DEFAULT_METHODS = ("3dim-shapes32", "relpose-shapes32", "viewfusion-shapes32", "genvs-shapes32", "vivid-shapes32",
                   "regression-shapes32")
BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
TOOL = "vantage bench/harness.py"
WARMUP_STEPS = 200  # fixed (not a fraction of the run) so that a run can be extended with --train

#: --tiny: every method shrunk to a minimal CPU-test size (16 px), by method name
TINY: dict[str, dict[str, Any]] = {
    "3dim": {"resolution": 16, "ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
             "norm_groups": 8, "emb_ch": 32, "preview_steps": 2, "preview_count": 2},
    "relpose": {"resolution": 16, "ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                "norm_groups": 8, "emb_ch": 32, "encoder_ch": 8, "image_emb_dim": 16, "pose_emb_dim": 16,
                "preview_steps": 2, "preview_count": 2},
    "regression": {"resolution": 16, "ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                   "norm_groups": 8, "emb_ch": 32, "encoder_ch": 8, "image_emb_dim": 16, "pose_emb_dim": 16,
                   "preview_count": 2},
    "viewfusion": {"resolution": 16, "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                   "norm_groups": 4, "preview_steps": 2, "preview_count": 2},
    "genvs": {"resolution": 16, "encoder_ch": 8, "encoder_ch_mult": [1, 2], "volume_channels": 4, "volume_depth": 8,
              "volume_resolution": 8, "mlp_hidden": 16, "feature_channels": 6, "samples_stratified": 6,
              "samples_importance": 6, "render_resolution": 8, "ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": [8], "num_heads": 2, "norm_groups": 4, "preview_steps": 2, "preview_count": 2},
    "vivid": {"resolution": 16, "model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [8],
              "extra_attn": None, "channels_per_head": 8, "logvar_channels": 16, "preview_steps": 2,
              "preview_count": 2},
}
#: --quick: what it sets when the option is not given
QUICK = {"kimg": 0.016, "batch": 4, "objects": 1, "steps": 2, "workers": 0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/harness.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, required=True, help="folder of run folders RUNS/<preset>/ (created)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated presets")
    p.add_argument("--kimg", type=float, default=None, help="training budget per method in thousands of images "
                                                            "(default 100; --quick: 0.016)")
    p.add_argument("--batch", type=int, default=None, help="global training batch (default 32; --quick: 4)")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate, constant after the warm-up")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"), help="training autocast")
    p.add_argument("--workers", type=int, default=None, help="data-loading workers (default: the trainer's, 2; "
                                                             "--quick: 0)")
    p.add_argument("--train", action="store_true", help="resume / extend existing runs to --kimg")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (training and evaluation)")
    p.add_argument("--protocol", default="synthetic-v1", help="evaluation protocol (name or JSON file)")
    p.add_argument("--objects", type=int, default=None, help="evaluate only the protocol's first N objects")
    p.add_argument("--steps", type=int, default=None, help="sampling steps instead of each model's default")
    p.add_argument("--consistency", action="store_true", help="also compute the 3D consistency score")
    p.add_argument("--reevaluate", action="store_true", help="evaluate again even when an evaluation exists")
    p.add_argument("--quick", action="store_true", help="tiny budget: 0.016 kimg at batch 4, 1 object, 2 steps")
    p.add_argument("--tiny", action="store_true", help="shrink every preset to a minimal 16 px network (tests)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="[PRESET:]FIELD=VALUE",
                   help="passed to `vantage train --set` (a method field or train.FIELD), for every method or, "
                        "with PRESET:, for that one; repeatable")
    p.add_argument("--write-benchmarks", nargs="?", const=str(BENCHMARKS), default=None, metavar="FILE",
                   help=f"put the table between the harness markers of FILE (default {BENCHMARKS.name})")
    args = p.parse_args(argv)
    for key, value in QUICK.items():
        if getattr(args, key) is None and args.quick:
            setattr(args, key, value)
    args.kimg = 100.0 if args.kimg is None else args.kimg
    args.batch = 32 if args.batch is None else args.batch
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or args.kimg <= 0 or args.batch < 1:
        p.error("need at least one method, --kimg > 0 and --batch >= 1")
    for name, value in (("--objects", args.objects), ("--steps", args.steps)):
        if value is not None and value < 1:
            p.error(f"{name} must be >= 1")
    return args


def say(msg: str) -> None:
    print(f"[harness] {msg}", flush=True)


def run_vantage(argv: list[str]) -> tuple[int, str]:
    """``vantage train|evaluate ARGV`` in this process -> ``(exit code, error message)``."""
    from vantage.cli import evaluate, train
    from vantage.cli.main import UserError
    from vantage.data.formats.common import DatasetError
    from vantage.outputs import OutputExistsError

    parser = argparse.ArgumentParser(prog="vantage")
    sub = parser.add_subparsers(dest="command", required=True)
    train.register(sub)
    evaluate.register(sub)
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        return code, "" if code == 0 else f"vantage {argv[0]} exited with status {code}"
    except (UserError, DatasetError, OutputExistsError, FileNotFoundError, ValueError) as e:
        return 2, str(e)


# --------------------------------------------------------------------------------------- steps
def method_overrides(preset: str, method: str, args: argparse.Namespace) -> list[str]:
    """``--set`` items of ``vantage train`` for ``preset``: the shared recipe, --tiny, then the user's."""
    train = {"lr": args.lr, "lr_schedule": "constant", "warmup": WARMUP_STEPS, "precision": args.precision,
             "seed": 0, "log_every": 50}
    # a preset's own training defaults (e.g. VIVID's EDM2 schedule, power EMA, Adam betas) are reset to the
    # trainer's built-in values, so that every method really trains with the same recipe
    from dataclasses import asdict

    from vantage.methods import preset_train_defaults
    from vantage.train import TrainConfig

    builtin = asdict(TrainConfig())
    for key in preset_train_defaults(preset):
        train.setdefault(key, builtin[key])
    if args.workers is not None:
        train["num_workers"] = args.workers
    if args.quick:
        train["preview_count"] = 2
    items = [f"train.{k}={json.dumps(v)}" for k, v in train.items()]
    if args.tiny:
        items += [f"{k}={json.dumps(v)}" for k, v in TINY.get(method, {"resolution": 16}).items()]
    for item in args.overrides:
        key, _, value = item.partition("=")
        target, colon, field = key.rpartition(":")
        if not colon:
            items.append(item)
        elif target == preset:
            items.append(f"{field}={value}")
    return items


def train_argv(preset: str, run_dir: Path, args: argparse.Namespace, device: str) -> list[str]:
    import vantage.methods as vm

    method = vm.all_presets()[preset][0]
    steps = math.ceil(args.kimg * 1000 / args.batch - 1e-9)
    argv = ["train", preset, "--data", "synthetic", "--out", str(run_dir), "--steps", str(steps),
            "--batch", str(args.batch), "--device", device]
    for item in method_overrides(preset, method, args):
        argv += ["--set", item]
    return argv


def derived_protocol(args: argparse.Namespace, resolution: int) -> tuple[str, bool]:
    """``(protocol, derived)``: the protocol to evaluate a ``resolution`` px model with: ``--protocol`` itself, or
    a copy at that resolution (and with the 3D consistency score for ``--consistency``) written to
    ``RUNS/protocols/``."""
    from vantage.eval.protocol import load_protocol, protocol_from_dict

    base = load_protocol(args.protocol)
    if base.resolution == resolution and (base.metrics.consistency is not None or not args.consistency):
        return args.protocol, False
    data = json.loads(Path(base.source).read_text())
    name, why = base.name, []
    if base.resolution != resolution:
        data["resolution"], name = resolution, f"{name}-{resolution}px"
        why.append(f"resolution {resolution} px instead of {base.resolution}")
    if args.consistency and base.metrics.consistency is None:
        data.setdefault("metrics", {})["consistency"] = {"grid": 16, "iters": 30} if args.quick else True
        name += "-3d"
        why.append("3D consistency score on")
    data["name"] = name
    data["description"] = f"{base.label} with {', '.join(why)} (written by bench/harness.py). " + base.description
    protocol_from_dict(data, f"derived from {base.label}")  # check before writing
    path = args.runs / "protocols" / f"{name}-v{base.version}.json"
    text = json.dumps(data, indent=1) + "\n"
    if path.exists() and path.read_text() != text:
        raise FileExistsError(f"{path} exists with other content; remove it or use another --runs")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path), True


def run_info(run_dir: Path) -> dict[str, Any]:
    """Parameters, resolution, whether deterministic, and the training figures of a run folder."""
    from vantage.train.checkpoint import find_checkpoint, load_checkpoint
    from vantage.train.logging import read_stats

    ckpt = find_checkpoint(run_dir)
    model = load_checkpoint(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    stats = read_stats(run_dir)
    last = stats[-1] if stats else {}
    kimg = last.get("kimg", (cfg.get("images") or 0) / 1000 or None)
    ips = kimg * 1000 / last["time_s"] if last.get("time_s") and kimg else None
    return {"method": model.name, "parameters": sum(p.numel() for p in model.parameters()),
            "resolution": model.config.resolution, "deterministic": bool(getattr(model, "deterministic", False)),
            "step": int(ckpt.name.split("-")[-1]) if ckpt is not None else None, "kimg": kimg,
            "images_per_s": ips, "precision": cfg.get("train", {}).get("precision"),
            "peak_mem_mb": max((r.get("peak_mem_mb") or 0 for r in stats), default=None)}


def interrupted_evaluation(out: Path) -> bool:
    """Whether ``out`` is what an interrupted ``vantage evaluate`` leaves: a folder holding only its generated
    view folders (``inputs``, ``gt``, ``pred``) and no ``metrics.json`` (written first when scoring ends). Such a
    folder is moved aside (``<name>.interrupted``, nothing deleted) and the evaluation started again; anything
    else in it is left to ``vantage evaluate``'s own refusal."""
    from vantage.eval.evaluate_model import GENERATED_DIRS

    if not out.is_dir() or (out / "metrics.json").exists():
        return False
    entries = list(out.iterdir())
    return bool(entries) and all(e.is_dir() and e.name in GENERATED_DIRS for e in entries)


def evaluate_row(preset: str, run_dir: Path, info: dict[str, Any], args: argparse.Namespace,
                 device: str) -> dict[str, Any]:
    """Evaluate (or reuse the evaluation of) one run -> its table row."""
    from vantage.eval.protocol import load_protocol

    protocol, derived = derived_protocol(args, info["resolution"])
    label = load_protocol(protocol).label
    steps = None if info["deterministic"] else args.steps
    name = f"{label}-step{info['step']}" + (f"-objects{args.objects}" if args.objects else "") + \
           (f"-steps{steps}" if steps else "")
    out = args.runs / "evaluations" / preset / name
    metrics = out / "metrics.json"
    if metrics.is_file() and not args.reevaluate:
        say(f"{preset}: reusing the evaluation in {out} (--reevaluate to run it again)")
    else:
        argv = ["evaluate", "--checkpoint", str(run_dir), "--protocol", protocol, "--out", str(out),
                "--device", device]
        argv += ["--objects", str(args.objects)] if args.objects else []
        argv += ["--steps", str(steps)] if steps else []
        if metrics.is_file():
            argv.append("--overwrite")
        elif interrupted_evaluation(out):
            names = (f"{out.name}.interrupted" + (f"-{k}" if k else "") for k in range(1 << 20))
            aside = next(out.with_name(n) for n in names if not out.with_name(n).exists())
            out.rename(aside)
            say(f"{preset}: {out} held an interrupted evaluation (generated views, no metrics.json): moved to "
                f"{aside.name}, starting it again")
        say(f"{preset}: vantage {shlex.join(argv)}")
        code, err = run_vantage(argv)
        if code:
            raise RuntimeError(f"evaluation failed: {err}")
    doc = json.loads(metrics.read_text())
    res, run = doc["result"], doc["run"]
    views = sum(o["targets"] for o in run["objects"])
    mean, cons = res["mean"], doc.get("consistency") or {}
    sampling = "direct prediction" if info["deterministic"] else f"{run['sampler']} × {run['steps']}, {run['strategy']}"
    per_view = views * run["samples_per_target"]
    return {**info, "preset": preset, "protocol": label, "protocol_derived": derived, "eval_dir": str(out),
            "psnr": mean.get("psnr"), "ssim": mean.get("ssim"), "lpips": mean.get("lpips"),
            "lpips_skipped": res["skipped"].get("lpips"), "consistency_psnr": cons.get("mean", {}).get("psnr"),
            "consistency_ceiling_psnr": cons.get("ceiling", {}).get("psnr"), "sampling": sampling,
            "nfe_per_view": run["nfe"] / views, "seconds_per_view": run["seconds_sampling"] / per_view,
            "views": views, "objects": len(run["objects"]), "baseline": res.get("baseline", {}).get("mean")}


class HarnessStopped(BaseException):
    """A training run stopped on request (Ctrl-C): the harness stops too, instead of evaluating a half-trained run.
    A ``BaseException`` so that the per-method error handling does not turn it into a failed row."""


def stopped_early(run_dir: Path, planned_steps: int) -> bool:
    """Whether the newest checkpoint of ``run_dir`` is before ``planned_steps`` (the trainer returns normally when
    it is stopped on request, after saving a checkpoint)."""
    from vantage.train.checkpoint import find_checkpoint

    ckpt = find_checkpoint(run_dir)
    return ckpt is None or int(ckpt.name.split("-")[-1]) < planned_steps


def process(preset: str, args: argparse.Namespace, device: str, index: str) -> dict[str, Any]:
    """Train or load, then evaluate one preset; a failure becomes a row with ``error``."""
    from vantage.train.checkpoint import find_checkpoint

    run_dir = args.runs / preset
    row: dict[str, Any] = {"preset": preset, "run_dir": str(run_dir)}
    t0 = time.perf_counter()
    try:
        exists = find_checkpoint(run_dir) is not None
        if not exists and run_dir.exists() and any(run_dir.iterdir()) and not args.train:
            raise RuntimeError(f"{run_dir} exists but holds no checkpoint; pass --train to (re)start it")
        if args.train or not exists:
            argv = train_argv(preset, run_dir, args, device)
            say(f"{index} {preset}: {'extending' if exists else 'training'} to {args.kimg:g} kimg: "
                f"vantage {shlex.join(argv)}")
            code, err = run_vantage(argv)
            if code:
                raise RuntimeError(f"training failed: {err}")
            planned = int(argv[argv.index("--steps") + 1])
            if stopped_early(run_dir, planned):
                say(f"{index} {preset}: training stopped before step {planned} (interrupted): stopping the harness; "
                    f"the same command with --train resumes it")
                raise HarnessStopped(preset)
            row["trained_s"] = round(time.perf_counter() - t0, 1)
        else:
            say(f"{index} {preset}: loading the existing run {run_dir} (--train to extend it)")
        info = run_info(run_dir)
        say(f"{index} {preset}: {info['parameters'] / 1e6:.2f}M parameters, {info['kimg']} kimg; evaluating")
        t1 = time.perf_counter()
        row.update(evaluate_row(preset, run_dir, info, args, device))
        row["evaluated_s"] = round(time.perf_counter() - t1, 1)
        say(f"{index} {preset}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f} "
            f"({time.perf_counter() - t0:.1f} s)")
    except Exception as e:  # noqa: BLE001 - one failed method must not lose the others' results
        row["error"] = f"{type(e).__name__}: {e}"
        say(f"{index} {preset}: FAILED: {row['error']}")
    return row


def notes_for(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    notes = []
    budgets = {r["preset"]: r.get("kimg") for r in rows if not r.get("error")}
    if len({round(k or 0, 3) for k in budgets.values()}) > 1:
        notes.append("training budgets differ (runs loaded as they were): "
                     + ", ".join(f"{p} {k:g} kimg" for p, k in budgets.items() if k is not None))
    if any(r.get("deterministic") for r in rows):
        notes.append("regression: the deterministic baseline (one forward per view; samplers and --steps do not "
                     "change its output, so its NFE is 1)")
    skipped = next((r["lpips_skipped"] for r in rows if r.get("lpips_skipped")), None)
    if skipped:
        notes.append(f"LPIPS not computed: {skipped.splitlines()[0].rstrip(';')} (docs/metrics.md, weight files)")
    notes += [f"{r['preset']} failed: {r['error']}" for r in rows if r.get("error")]
    if any(r.get("protocol_derived") for r in rows):
        notes.append(f"{args.protocol} was run at each model's resolution, and with the 3D consistency score when "
                     f"asked: a copy with only those fields changed, in {args.runs / 'protocols'} (the views are "
                     f"rendered at that resolution)")
    return notes


def write_views_sheet(rows: list[dict[str, Any]], args: argparse.Namespace) -> str | None:
    """``RUNS/harness_views.png`` (:func:`harness_report.views_sheet`), also written to
    ``docs/images/harness-views.png`` beside the ``--write-benchmarks`` file; returns that path relative to the
    file (for the block's link), or ``None`` without ``--write-benchmarks`` or without any evaluation."""
    try:
        sheet = views_sheet(rows)
    except (OSError, ValueError) as e:  # a picture must not lose the table
        say(f"no views sheet: {e}")
        return None
    if sheet is None:
        return None
    sheet.save(args.runs / "harness_views.png")
    say(f"views sheet: {args.runs / 'harness_views.png'}")
    if not args.write_benchmarks:
        return None
    rel = "docs/images/harness-views.png"
    path = Path(args.write_benchmarks).resolve().parent / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return rel


def write_summary(runs: Path, doc: dict[str, Any], markdown: str) -> None:
    """``RUNS/harness.json`` and ``RUNS/harness.md``; an earlier summary is replaced only if the harness wrote it."""
    path = runs / "harness.json"
    if path.exists():
        try:
            ours = json.loads(path.read_text()).get("tool") == TOOL
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise FileExistsError(f"{path} exists and was not written by the harness; not overwriting it")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    (runs / "harness.md").write_text(markdown)


def interruptible() -> None:
    """Make SIGINT raise KeyboardInterrupt even when the harness was started with it ignored: a shell starts a
    background job (``nohup python bench/harness.py ... &``) with SIGINT ignored, so ``kill -INT`` did nothing
    while an evaluation ran (training installs its own handler: checkpoint, then stop)."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    """Run the harness (see the module docstring); returns 0 when every method was evaluated, else 1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    interruptible()
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    command = "python bench/harness.py " + shlex.join(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say(f"{len(args.methods)} method(s) into {args.runs}, device {device}: {', '.join(args.methods)}")
    try:
        rows = [process(p, args, device, f"({i}/{len(args.methods)})") for i, p in enumerate(args.methods, 1)]
    except HarnessStopped as e:
        say(f"stopped while training {e}: no table or summary written this time; the same command with --train "
            f"continues (finished runs and evaluations are reused)")
        return 130
    hw = hardware(device)
    settings = {"kimg": args.kimg, "batch": args.batch, "lr": args.lr, "warmup": WARMUP_STEPS,
                "precision": args.precision, "objects": args.objects, "steps": args.steps,
                "consistency": args.consistency, "quick": args.quick, "tiny": args.tiny}
    figure = write_views_sheet(rows, args)
    block = render_block(rows, hw=hw, command=command, settings=settings, notes=notes_for(rows, args),
                         figure=figure)
    print(block, flush=True)
    write_summary(args.runs, {"tool": TOOL, "command": command, "hardware": hw, "settings": settings, "rows": rows,
                              "seconds": round(time.perf_counter() - t0, 1)}, block)
    if args.write_benchmarks:
        how = replace_block(args.write_benchmarks, block)
        say(f"{how} the harness block in {args.write_benchmarks}")
    say(f"done in {time.perf_counter() - t0:.1f} s; summary in {args.runs / 'harness.md'}")
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
