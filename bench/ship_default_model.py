"""Ship a trained run as vantage's default model (``vantage/assets/default-3dim/``).

    python bench/ship_default_model.py RUN_DIR [--hardware "1x H200, bf16"] [--overwrite]
        [--sampling FIELD=VALUE ...]

Copies the run's newest checkpoint (``model.safetensors`` = EMA weights, ``config.json``), its
``stats.jsonl`` and ``loss.png`` into the assets folder and writes ``TRAINING.md`` with the exact
``vantage train`` command that reproduces the run, rebuilt from the run's stored configuration
(preset, data, every training field that differs from :class:`~vantage.train.TrainConfig`'s
defaults, every method field that differs from the preset), the images seen, the last logged
losses and the hardware. Refuses weights over 20 MB, a run that is not a 3DiM run, and an
existing default model unless ``--overwrite``. ``--sampling`` sets the shipped model's sampling defaults
(``default_sampler``, ``default_sampler_options``, ``default_steps``, ``default_guidance``; they do not
change the weights) and ``TRAINING.md`` says which were set there. It does not judge quality: that is
``tests/test_default_model.py`` (which must pass before the model is committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from vantage.methods import all_presets, method_class, preset_train_defaults
from vantage.train import TrainConfig, find_checkpoint

ASSETS = Path(__file__).resolve().parents[1] / "vantage" / "assets" / "default-3dim"
LIMIT_BYTES = 20 * 2**20


def _value(v: Any) -> str:
    """A ``--set`` value as the CLI parses it (JSON; plain text for strings without spaces)."""
    if isinstance(v, str) and v and " " not in v and v not in ("null", "true", "false"):
        try:
            json.loads(v)
        except json.JSONDecodeError:
            return v
    return json.dumps(list(v) if isinstance(v, tuple) else v, separators=(",", ":"))


def train_command(config: dict, out: str = "RUN_DIR") -> str:
    """The ``vantage train`` command that reproduces a run from its stored ``config.json``."""
    preset, method = config.get("preset"), config["method"]
    presets = all_presets()  # the registry fills as method modules are imported: import them all
    base = presets.get(preset, (method, {}, ""))[1] if preset else {}
    cls = method_class(method)
    preset_cfg = dataclasses.asdict(cls.config_class(**base)) if preset in presets else {}
    parts = ["vantage", "train", preset or method, "--data", config["data"]["spec"]]
    if config["data"].get("format"):
        parts += ["--format", config["data"]["format"]]
    for k, v in sorted((config["data"].get("options") or {}).items()):
        parts += ["-o", f"{k}={_value(v)}"]
    train = config["train"]
    parts += ["--out", out, "--steps", str(train["duration"]), "--batch", str(train["batch"])]
    for k, v in sorted(config["config"].items()):
        if k not in preset_cfg or _norm(preset_cfg[k]) != _norm(v):
            parts += ["--set", f"{k}={_value(v)}"]
    defaults = dataclasses.asdict(TrainConfig())
    if preset in presets:  # the preset's training defaults apply unless the command overrides them
        defaults.update(preset_train_defaults(preset))
    for k, v in sorted(train.items()):
        if k in ("duration", "batch"):
            continue
        if k not in defaults or _norm(defaults[k]) != _norm(v):
            parts += ["--set", f"train.{k}={_value(v)}"]
    return " ".join(parts)


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


SAMPLING_FIELDS = ("default_sampler", "default_sampler_options", "default_steps", "default_guidance")


def sampling_overrides(items: list[str], config: dict) -> dict[str, Any]:
    """``["FIELD=VALUE", ...]`` (sampling fields only) checked by building the method's config with them."""
    from vantage.methods import parse_overrides

    cls = method_class(config["method"]).config_class
    out = parse_overrides(items, cls)
    if bad := sorted(set(out) - set(SAMPLING_FIELDS)):
        raise SystemExit(f"--sampling sets only {', '.join(SAMPLING_FIELDS)}; got {', '.join(bad)}")
    try:
        cls(**{**config["config"], **out})
    except (TypeError, ValueError) as e:
        raise SystemExit(f"--sampling: {e}") from None
    return out


def ship(run: Path, hardware: str, overwrite: bool = False, assets: Path = ASSETS,
         sampling: list[str] | None = None) -> Path:
    ckpt = find_checkpoint(run)
    if ckpt is None:
        raise SystemExit(f"{run}: no checkpoint")
    cfg = json.loads((run / "config.json").read_text())
    if cfg.get("method") != "3dim":
        raise SystemExit(f"{run}: the default model is a 3DiM run, this one is '{cfg.get('method')}'")
    weights = ckpt / "model.safetensors"
    if weights.stat().st_size > LIMIT_BYTES:
        raise SystemExit(f"{weights} is {weights.stat().st_size / 2**20:.1f} MB; the limit is 20 MB")
    if assets.exists() and any(assets.iterdir()) and not overwrite:
        raise SystemExit(f"{assets} already holds a default model; pass --overwrite to replace it")
    shipped = json.loads((ckpt / "config.json").read_text())
    changed = sampling_overrides(sampling or [], shipped)
    shipped["config"].update(changed)
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copy2(weights, assets / "model.safetensors")
    (assets / "config.json").write_text(json.dumps(shipped, indent=2))
    for name in ("stats.jsonl", "loss.png"):
        if (run / name).is_file():
            shutil.copy2(run / name, assets / name)
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines() if line.strip()]
    step = json.loads((ckpt / "config.json").read_text()).get("step")
    last = stats[-5:]
    loss = sum(r["loss"] for r in last) / max(1, len(last))
    ips = sorted(r["images_per_s"] for r in stats if r.get("images_per_s"))
    sampling_text = ", ".join(f"{k} = {json.dumps(shipped['config'].get(k))}" for k in SAMPLING_FIELDS)
    if changed:
        sampling_text += (f" (set at shipping with `--sampling`: {', '.join(sorted(changed))}; the run's own "
                          "were used for its training previews)")
    text = f"""# The default 3DiM model

Trained with vantage {cfg.get('vantage_version')} on the embedded synthetic data (train split; the
demo and `tests/test_default_model.py` use the disjoint benchmark split), shipped
{datetime.date.today().isoformat()} by `bench/ship_default_model.py`.

Command (rebuilt from the run's `config.json`; run it again with the same `--out` to resume):

```
{train_command(cfg)}
```

* checkpoint: `{ckpt.name}` (step {step}, {(step or 0) * cfg['train']['batch'] / 1000:g} kimg), EMA weights
* loss (mean of the last {len(last)} log intervals): {loss:.4f}
* training images/s (median over log intervals): {ips[len(ips) // 2] if ips else float('nan'):.0f}
* hardware: {hardware}; torch {torch.__version__}
* training curve: `loss.png`, every log interval: `stats.jsonl`
* sampling defaults: {sampling_text}
"""
    (assets / "TRAINING.md").write_text(text)
    return assets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--hardware", default="not stated")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--sampling", action="append", default=[], metavar="FIELD=VALUE",
                   help="a sampling default of the shipped model: " + ", ".join(SAMPLING_FIELDS))
    p.add_argument("--assets", type=Path, default=ASSETS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    out = ship(a.run, a.hardware, a.overwrite, a.assets, a.sampling)
    print(f"shipped {a.run} to {out}; now run `python -m pytest tests/test_default_model.py` before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
