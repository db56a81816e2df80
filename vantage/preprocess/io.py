"""Framing settings from a checkpoint, and the files ``vantage preprocess`` writes per image.

:func:`framing_from_config` reads a run's (or checkpoint's) ``config.json`` without building the model:
``resolution`` from the method config, ``object_fraction`` and ``background`` from fields of that name when
the config has them, else the synthetic data's framing (:data:`~vantage.preprocess.core.SYNTHETIC_OBJECT_FRACTION`)
and white. :func:`save_preprocessed` writes ``<stem>.png`` (RGB), ``<stem>_mask.png`` (8-bit mask) and
``<stem>.json`` (the parameters; :func:`~vantage.preprocess.core.reapply_preprocess` repeats the step).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from vantage.preprocess.core import SYNTHETIC_OBJECT_FRACTION, PreprocessError, PreprocessInfo

__all__ = ["framing_from_config", "save_preprocessed", "output_names"]

WHITE = (1.0, 1.0, 1.0)


def _config_file(path: Path) -> Path:
    from vantage.train.checkpoint import find_checkpoint

    if not path.exists():
        raise FileNotFoundError(f"checkpoint path does not exist: {path}")
    if path.is_file():
        return path
    if (path / "config.json").is_file():
        return path / "config.json"
    found = find_checkpoint(path)
    if found is None or not (found / "config.json").is_file():
        raise PreprocessError(f"{path}: no config.json (expected a run folder or a checkpoint folder)")
    return found / "config.json"


def framing_from_config(path: str | Path) -> dict:
    """``{"resolution", "object_fraction", "background", "notes"}`` of the model in ``path`` (a run folder,
    a checkpoint folder or its ``config.json``); ``notes`` say which values are assumed."""
    cfg_file = _config_file(Path(path))
    try:
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise PreprocessError(f"{cfg_file}: cannot read the model config ({e})") from None
    cfg = data.get("config") if isinstance(data, dict) else None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("resolution"), int):
        raise PreprocessError(f"{cfg_file}: not a vantage model config (expected 'config' with an integer "
                              f"'resolution')")
    notes = []
    fraction = cfg.get("object_fraction")
    if fraction is None:
        fraction = SYNTHETIC_OBJECT_FRACTION
        spec = (data.get("data") or {}).get("spec") if isinstance(data.get("data"), dict) else None
        trained = f" (the model was trained on '{spec}': give --object-fraction for its framing)" \
            if spec not in (None, "synthetic") else ""
        notes.append(f"object fraction {fraction:g}: the synthetic training data's framing{trained}")
    background = cfg.get("background")
    if background is None:
        background = WHITE
    return {"resolution": int(cfg["resolution"]), "object_fraction": float(fraction),
            "background": tuple(float(v) for v in background), "notes": notes, "config": str(cfg_file)}


def output_names(stem: str) -> tuple[str, str, str]:
    """The three file names written for an input named ``stem``: image, mask, parameters."""
    return f"{stem}.png", f"{stem}_mask.png", f"{stem}.json"


def save_preprocessed(image: Tensor, info: PreprocessInfo, out_dir: str | Path, stem: str) -> list[str]:
    """Write ``image (3, R, R)`` in [-1, 1], ``info.mask`` and ``info`` into ``out_dir``; returns the names."""
    out_dir = Path(out_dir)
    names = output_names(stem)
    rgb = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(rgb)).save(out_dir / names[0])
    mask = (info.mask[0].float().clamp(0, 1) * 255).round().byte().numpy()
    Image.fromarray(mask, "L").save(out_dir / names[1])
    (out_dir / names[2]).write_text(json.dumps({**info, "files": {"image": names[0], "mask": names[1]}}, indent=1))
    return list(names)
