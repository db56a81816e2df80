"""Checkpoints and run directories: atomic writes, finding the newest, loading a method back.

Layout (see ``docs/training.md``)::

    RUN_DIR/config.json                     resolved run config ("format": "vantage-run")
    RUN_DIR/checkpoints/step-000500/        one checkpoint per save
        config.json                         the run config + "step" and "images"
        model.safetensors                   EMA weights = the method's state dict
        training_state.pt                   raw weights, optimizer, EMA, counters, RNG states
    RUN_DIR/checkpoints/latest              text: the name of the newest checkpoint folder

Atomicity: a checkpoint is written into ``checkpoints/.tmp-step-NNNNNN-PID/`` (files flushed
and fsync'ed) and then renamed to ``step-NNNNNN`` in one ``os.replace``; ``latest`` is
replaced the same way. A process killed at any moment leaves either the old or the new
checkpoint complete; folders starting with ``.`` are never read and are cleaned up by the next
save. If ``latest`` is missing or names a folder that is gone, the complete ``step-*`` folder
with the highest step is used.

``training_state.pt`` holds only tensors and plain containers, so it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vantage.outputs import OutputExistsError
from vantage.state_dicts import state_dict_mismatch

__all__ = ["CheckpointError", "RunDir", "CHECKPOINTS", "LATEST", "RUN_FORMAT", "checkpoint_name", "save_checkpoint",
           "list_checkpoints", "find_checkpoint", "inspect_run_dir", "load_checkpoint", "load_training_state",
           "atomic_write_text", "atomic_write_json"]

CHECKPOINTS = "checkpoints"
LATEST = "latest"
RUN_FORMAT = "vantage-run"
FILES = ("config.json", "model.safetensors", "training_state.pt")
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing or corrupt file, unknown method, mismatched weights."""


def checkpoint_name(step: int) -> str:
    """``step-000123`` (at least six digits)."""
    return f"step-{int(step):06d}"


# ---------------------------------------------------------------------------------- atomic files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------------------------- saving
def _state_dict_for_safetensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, seen = {}, {}
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        key = t.untyped_storage().data_ptr() if t.numel() else None
        out[k] = t.clone() if key is not None and key in seen else t  # safetensors refuses shared storage
        if key is not None:
            seen.setdefault(key, k)
    return out


def save_checkpoint(run_dir: str | Path, step: int, *, config: dict, weights: dict[str, torch.Tensor],
                    training_state: dict, keep: int = 0) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically, point ``latest`` at it, prune to ``keep`` (0 = all)."""
    from safetensors.torch import save_file

    from vantage import __version__

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    _remove_leftovers(root)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    atomic_write_json(tmp / "config.json", config)
    save_file(_state_dict_for_safetensors(weights), str(tmp / "model.safetensors"),
              metadata={"format": "pt", "vantage": __version__, "method": str(config.get("method", "")),
                        "step": str(step)})
    _fsync_file(tmp / "model.safetensors")
    torch.save(training_state, tmp / "training_state.pt")
    _fsync_file(tmp / "training_state.pt")
    _fsync_dir(tmp)
    final = root / name
    old = None
    if final.exists():  # the same step saved again (e.g. a restarted run): swap, then drop the old one
        old = root / f".old-{name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / LATEST, name + "\n")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if keep > 0:
        for _, path in list_checkpoints(run_dir)[:-keep]:
            if path.name != name:
                trash = root / f".trash-{path.name}-{os.getpid()}"
                os.replace(path, trash)
                shutil.rmtree(trash, ignore_errors=True)
    return final


def _remove_leftovers(root: Path) -> None:
    for p in root.iterdir():
        if p.name.startswith((".tmp-", ".old-", ".trash-", f".{LATEST}.tmp-")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- finding
def _complete(path: Path, files: tuple[str, ...] = FILES) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in files)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, ``(step, folder)`` by increasing step (temp folders ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and _complete(p):
            out.append((int(m.group(1)), p))
    return sorted(out)


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run: ``latest`` if it is valid, else the highest step."""
    root = Path(run_dir) / CHECKPOINTS
    latest = root / LATEST
    if latest.is_file():
        name = latest.read_text(encoding="utf-8").strip()
        if _STEP_DIR.match(name) and _complete(root / name):
            found = list_checkpoints(run_dir)
            # `latest` is written after the rename, so a newer complete folder can exist only if the
            # process died in between: prefer the highest step.
            if found and found[-1][1].name != name and found[-1][0] > int(name[5:]):
                return found[-1][1]
            return root / name
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


@dataclass
class RunDir:
    """What :func:`inspect_run_dir` found.

    Attributes:
        path: the folder.
        is_run: it holds a vantage run (``config.json`` with ``"format": "vantage-run"``).
        config: that config (None for a new folder).
        checkpoint: the newest complete checkpoint, or None.
    """

    path: Path
    is_run: bool
    config: dict | None
    checkpoint: Path | None


def inspect_run_dir(path: str | Path) -> RunDir:
    """Classify ``path``: new/empty, a vantage run (with or without checkpoints); anything else raises
    :class:`~vantage.outputs.OutputExistsError` (a user's files are never overwritten)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"run folder {path} exists and is a file, not a folder")
    if not path.exists() or not any(path.iterdir()):
        return RunDir(path, False, None, None)
    cfg_path = path / "config.json"
    config = None
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            config = None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise OutputExistsError(f"{path} is not empty and does not hold a vantage training run (no config.json "
                                f"with \"format\": \"{RUN_FORMAT}\"); choose a new or empty --out folder")
    return RunDir(path, True, config, find_checkpoint(path))


# ---------------------------------------------------------------------------------- loading
def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path does not exist: {p}")
    if p.is_file():
        if p.name in FILES:
            p = p.parent
        else:
            raise CheckpointError(f"{p} is a file; pass a run folder or a checkpoint folder "
                                  f"(checkpoints/step-NNNNNN)")
    if (p / "model.safetensors").exists():
        return p
    is_ckpt = (p / "config.json").is_file() and not (p / CHECKPOINTS).is_dir() and _is_step_config(p / "config.json")
    if is_ckpt:
        return p  # a checkpoint folder without weights: load_checkpoint names the missing file
    if (p / CHECKPOINTS).is_dir() or (p / "config.json").is_file():
        found = find_checkpoint(p)
        if found is None:
            raise CheckpointError(f"run folder {p} has no complete checkpoint yet (nothing usable in "
                                  f"{p / CHECKPOINTS})")
        return found
    raise CheckpointError(f"{p} is neither a run folder (with {CHECKPOINTS}/) nor a checkpoint folder "
                          f"(with model.safetensors and config.json)")


def _is_step_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return True  # unreadable: treat as a checkpoint so that the error names this file
    return not (isinstance(data, dict) and data.get("format") == RUN_FORMAT and "step" not in data)


def read_checkpoint_config(ckpt: Path) -> dict:
    cfg = ckpt / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"checkpoint {ckpt} has no config.json")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg} is corrupt (not valid JSON: {e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg} does not hold a JSON object")
    return data


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the method of a checkpoint with its EMA weights, in eval mode on ``device``.

    ``path`` is a run folder (its newest checkpoint is used), a checkpoint folder, or a file inside
    one. Raises ``FileNotFoundError`` for a missing path and :class:`CheckpointError` for a corrupt
    file, an unknown method, or weights that do not match the config (naming the keys).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vantage.methods import method_from_json

    ckpt = _resolve(path)
    data = read_checkpoint_config(ckpt)
    try:
        method = method_from_json(data, where=str(ckpt / "config.json"))
    except (ValueError, TypeError, ImportError) as e:
        raise CheckpointError(f"cannot rebuild the method of {ckpt}: {e}") from e
    weights = ckpt / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {ckpt} has no model.safetensors")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights} is corrupt or truncated: {e}") from e
    check_state_dict(method, state, str(weights))
    method.load_state_dict(state)
    return method.to(device).eval()


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and wrongly shaped keys."""
    problems = state_dict_mismatch(module.state_dict(), state, given_label="saved", expected_label="config needs")
    if problems:
        raise CheckpointError(f"{where}: the weights do not match the method in config.json ({problems})")


def load_training_state(ckpt: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``training_state.pt`` of a checkpoint folder, loaded with ``weights_only=True``."""
    path = Path(ckpt) / "training_state.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {ckpt} has no training_state.pt (needed to resume)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"{path} is corrupt or not loadable with weights_only=True: {e}") from e
