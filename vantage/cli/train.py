"""``vantage train``: train a method preset on a dataset, on one CPU, one GPU or many (torchrun).

Resuming: run the same command again (or just ``vantage train --out RUN_DIR``): when RUN_DIR holds
a checkpoint the run continues from the newest one. On resume the stored configuration is the
base; options given on the command line must agree with it, except the training fields that do
not change what is computed (``--steps``, intervals, workers, micro-batch: see docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "cmd_train", "list_presets", "format_train_defaults"]

DESCRIPTION = """\
Train a method preset on the embedded synthetic data or a dataset folder, on one CPU, one GPU or many
(torchrun). Writes RUN_DIR/config.json, stats.jsonl, loss.png, samples/ and checkpoints/ (docs/training.md).

Resuming: run the same command again, or just `vantage train --out RUN_DIR`: when RUN_DIR holds a
checkpoint the run continues from the newest one. The stored configuration is the base; options on the
command line must agree with it, except the training fields that do not change what is computed
(--steps, intervals, workers, micro-batch). A non-empty folder that is not a run is never written into.
"""

EPILOG = """\
examples:
  vantage train --list
  vantage train 3dim-shapes32 --data synthetic --out runs/shapes32 --steps 20000 --batch 32
  vantage train 3dim-srn128 --data /data/srn_cars --out runs/cars --set train.lr=2e-4 --set dropout=0.1
  torchrun --nproc_per_node=8 -m vantage.cli.main train 3dim-srn128 --data /data/srn_cars --out runs/cars
  vantage train --out runs/shapes32 --steps 40000      # resume (and extend) an earlier run

--set FIELD=VALUE: a field of the method's config (see the preset's method), or of the training config
(prefix 'train.' to be explicit: train.lr, train.batch, train.duration, train.ema, train.precision, ...;
see docs/training.md). Values are JSON (1e-4, true, [1,2,2,4], null) or plain text (500kimg, cosine).

Training config of a new run: the built-in defaults, then the preset's training defaults (shown by --list;
e.g. the VIVID presets bring EDM2's inverse-sqrt decay and power-function EMA), then --batch, --steps and
--set train.*. RUN_DIR/config.json records the result ("train") and where each value came from
("train_sources"). A resumed run keeps its stored training config.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", formatter_class=HelpFormatter, help="train a method (CPU, GPU or torchrun DDP)",
                       description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("preset", nargs="?", help="preset or method name (see --list); optional when resuming --out")
    p.add_argument("--list", action="store_true", help="list the presets with their descriptions and training "
                                                       "defaults, and exit")
    p.add_argument("--data", help="'synthetic' or 'synthetic:SPLIT' (embedded dataset rendered on the fly at the "
                                  "method's resolution), a dataset path in any supported format, or a folder of "
                                  "tar shards written by `vantage data shard` (docs/data-pipeline.md)")
    p.add_argument("--format", help="dataset format of --data (detected when omitted); see docs/datasets.md")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, repeatable: reader options for a path (-o split=train), SyntheticDataset "
                        "options for synthetic (-o num_objects=1000 -o layout=hemisphere -o views=24)")
    p.add_argument("--out", type=Path, help="run folder: new or empty, or an earlier run to resume")
    p.add_argument("--steps", type=int, help="total optimizer steps (sets train.duration; default: the preset's, "
                                             "else 100000)")
    p.add_argument("--batch", type=int, help="global batch size, independent of the number of processes "
                                             "(sets train.batch; default: the preset's, else 64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (under torchrun each rank uses "
                                                    "its LOCAL_RANK GPU)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                   help="override a method config field or a training field (train.FIELD), repeatable")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, load one batch per "
                                                          "process (printing its shapes) and exit")
    p.set_defaults(func=cmd_train)


def list_presets() -> list[tuple[str, str, str, str]]:
    """``(preset, method, description, training defaults)`` rows, plus a row per method that failed to import.

    The training defaults are ``field=value`` items as ``--set train.FIELD=VALUE`` takes them ("" if none).
    """
    import vantage.methods as vm

    rows, broken = [], []
    for name in list(vm.METHODS):
        try:
            vm.method_class(name)
        except ImportError as e:
            broken.append((f"({name})", name, f"unavailable: {e}", ""))
    for preset, (method, _, description) in sorted(vm.PRESETS.items()):
        rows.append((preset, method, description, format_train_defaults(vm.PRESET_TRAIN.get(preset, {}))))
    return rows + broken


def format_train_defaults(values: dict) -> str:
    """``{"lr": 0.01, "betas": (0.9, 0.99)}`` -> ``"lr=0.01 betas=[0.9,0.99]"`` (``--set train.`` syntax)."""
    def text(v: object) -> str:
        return v if isinstance(v, str) else json.dumps(list(v) if isinstance(v, tuple) else v, separators=(",", ":"))

    return " ".join(f"{k}={text(v)}" for k, v in values.items())


def _print_table(rows: list[tuple[str, str, str, str]]) -> None:
    w0 = max([len("preset")] + [len(r[0]) for r in rows])
    w1 = max([len("method")] + [len(r[1]) for r in rows])
    print(f"{'preset':<{w0}}  {'method':<{w1}}  description")
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}")
        if r[3]:
            print(f"{'':<{w0}}  {'':<{w1}}    training defaults: {r[3]}")
    if any(r[3] for r in rows):
        print("\n(training defaults apply to new runs; --batch, --steps and --set train.FIELD=VALUE override them)")


def cmd_train(args: argparse.Namespace) -> int:
    from vantage.cli.main import UserError

    if args.list:
        _print_table(list_presets())
        return 0
    from vantage.cli.data import parse_options
    from vantage.train import CheckpointError, ResumeError, TrainingDiverged

    try:
        return _train(args, parse_options(args.option))
    except (ResumeError, CheckpointError) as e:
        raise UserError(str(e)) from None
    except TrainingDiverged as e:
        print(f"vantage train: {e}", file=sys.stderr)
        return 1


def _stored_run(out: Path | None) -> dict | None:
    """The run config of ``out`` if it holds a run with a checkpoint (a run without one starts afresh)."""
    from vantage.train.checkpoint import RUN_FORMAT, find_checkpoint

    if out is None or not (out / "config.json").is_file() or find_checkpoint(out) is None:
        return None
    try:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return cfg if isinstance(cfg, dict) and cfg.get("format") == RUN_FORMAT else None


def _train(args: argparse.Namespace, options: dict) -> int:
    import torch

    import vantage.methods as vm
    from vantage.cli.main import UserError
    from vantage.methods.base import config_from_dict
    from vantage.train import DataSpec, Trainer, open_training_data, setup_distributed, teardown_distributed
    from vantage.train.config import resolve_train_config, split_overrides

    stored = _stored_run(args.out)
    preset = args.preset
    if preset is None:
        if stored is None:
            raise UserError("name a preset (see `vantage train --list`), or give --out of an earlier run to resume")
        preset = stored.get("preset") or stored["method"]
    try:
        presets = vm.all_presets()
        method_name = presets[preset][0] if preset in presets else preset
        cls = vm.method_class(method_name)
    except ValueError as e:
        raise UserError(f"unknown preset or method '{preset}'; see `vantage train --list`") from e
    if stored is not None and args.preset is not None and args.preset != (stored.get("preset") or stored["method"]):
        raise UserError(f"{args.out} holds a run of preset '{stored.get('preset')}', not '{args.preset}'; run "
                        f"`vantage train --out {args.out}` to resume it, or use a new --out")
    if stored is not None and stored.get("method") != method_name:
        raise UserError(f"{args.out} holds a run of method '{stored.get('method')}' (preset {stored.get('preset')}), "
                        f"not '{method_name}'; use a new --out")
    import dataclasses

    try:
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        method_items, train_values = split_overrides(args.overrides, fields)
        if args.steps is not None:
            train_values["duration"] = args.steps
        if args.batch is not None:
            train_values["batch"] = args.batch
        # new run: built-in defaults < the preset's training defaults < the command line; a resumed run
        # starts from its stored training config instead (a preset changed since does not change it)
        config, sources = resolve_train_config(train_values, preset_defaults=vm.preset_train_defaults(preset),
                                               stored=stored, preset=preset if preset in presets else None)
        method_values = vm.parse_overrides(method_items, cls.config_class)
        torch.manual_seed(config.seed)
        if stored is not None:  # the stored config is the base; --set changes are checked by the trainer
            method_cfg = config_from_dict(cls.config_class, {**stored["config"], **method_values},
                                          where=f"{args.out}/config.json")
            method = cls(method_cfg)
        else:
            method = vm.build_method(preset, method_values)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None

    if args.data is None and stored is None:
        raise UserError("--data is required: 'synthetic' or a dataset path")
    sd = stored["data"] if stored is not None else {}
    data = DataSpec.parse(args.data or sd["spec"], args.format or sd.get("format"),
                          {**sd.get("options", {}), **options})
    if args.out is None and not args.dry_run:
        raise UserError("--out RUN_DIR is required (or use --dry-run)")
    try:
        ctx = setup_distributed(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        say = print if ctx.is_main else (lambda *_: None)
        scenes = open_training_data(data, method.config.resolution, log=say)
        try:
            trainer = Trainer(method, scenes, config, args.out, data=data, preset=preset, dist=ctx, log=say,
                              train_sources=sources)
        except ValueError as e:
            raise UserError(str(e)) from None
        if args.dry_run:
            trainer.dry_run()
            return 0
        result = trainer.fit()
        if ctx.is_main:
            print(f"run folder: {result.run_dir}  (stats.jsonl, loss.png, samples/, checkpoints/)")
        return 0
    finally:
        teardown_distributed(ctx)
