"""Starting a run in its folder: new, resumed or restarted, and whether a stored run may be resumed.

:func:`prepare_run_dir` (rank 0, before the first step) looks at ``RUN_DIR``
(:func:`~vantage.train.checkpoint.inspect_run_dir`) and decides:

* a folder holding a run with a checkpoint: **resume** from the newest checkpoint, after checking that the
  requested configuration agrees with the stored one (:func:`comparable`: method, method config, data and the
  training fields outside :data:`~vantage.train.config.RESUMABLE_FIELDS`); otherwise :class:`ResumeError`
  listing the differences;
* a run without a checkpoint (killed before its first save): **restart** it from step 0 with the requested
  configuration (its ``stats.jsonl`` is emptied);
* a new or empty folder: a **new** run. A non-empty folder that is not a run raises
  :class:`~vantage.outputs.OutputExistsError` (from ``inspect_run_dir``) and is never written into.

In every case ``RUN_DIR/config.json`` is (re)written with the requested configuration. Fields that a stored
config lacks (added to vantage after the run was written) are compared as their built-in defaults
(:func:`with_new_defaults`), so a newer vantage resumes an older run as long as the new fields keep them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vantage.train.checkpoint import atomic_write_json, inspect_run_dir
from vantage.train.config import RESUMABLE_FIELDS, diff_configs
from vantage.train.logging import truncate_stats

__all__ = ["ResumeError", "comparable", "with_new_defaults", "prepare_run_dir"]


class ResumeError(ValueError):
    """RUN_DIR holds a run whose configuration differs from the requested one."""


def comparable(cfg: dict) -> dict:
    """The parts of a run config that must agree for a resume."""
    train = {k: v for k, v in cfg.get("train", {}).items() if k not in RESUMABLE_FIELDS}
    data = {k: cfg.get("data", {}).get(k) for k in ("spec", "format", "options")}
    return {"method": cfg.get("method"), "config": cfg.get("config"), "train": train, "data": data}


def with_new_defaults(stored: dict, method_config: Any, train_config: Any) -> dict:
    """``stored`` with the method and training fields it lacks set to the defaults of the classes of
    ``method_config`` and ``train_config`` (the built-in defaults, never a preset's)."""
    out = dict(stored)
    for key, obj in (("config", method_config), ("train", train_config)):
        part = out.get(key)
        if not isinstance(part, dict):
            continue
        try:
            defaults = dataclasses.asdict(type(obj)())
        except TypeError:  # a config class whose fields have no defaults: compare as stored
            continue
        out[key] = {**{k: v for k, v in defaults.items() if k not in part}, **part}
    return out


def prepare_run_dir(run_dir: Path, new: dict, *, method_config: Any, train_config: Any,
                    say: Callable[[str], None]) -> dict[str, Any]:
    """Rank 0: decide new / resume / restart, check the config, write ``config.json``.

    Returns ``{"checkpoint": path-as-str or None}`` (the checkpoint to resume from).
    """
    found = inspect_run_dir(run_dir)
    decision: dict[str, Any] = {"checkpoint": None}
    if found.is_run and found.checkpoint is not None:
        stored = with_new_defaults(found.config, method_config, train_config)
        diffs = diff_configs(comparable(stored), comparable(new))
        if diffs:
            raise ResumeError(
                f"{run_dir} holds a run with another configuration, so it cannot be resumed with this "
                f"one. Differences (stored -> requested): {'; '.join(diffs)}. On resume only these training "
                f"fields may change: {', '.join(sorted(RESUMABLE_FIELDS))}. Use a new --out for a new run.")
        changed = diff_configs(stored.get("train", {}), new["train"])  # fields added since: as their defaults
        say(f"resuming {run_dir} from {found.checkpoint.name}"
            + (f" (changed: {'; '.join(changed)})" if changed else ""))
        decision["checkpoint"] = str(found.checkpoint)
    elif found.is_run:
        say(f"{run_dir} holds a run without a checkpoint; starting it again from step 0")
        truncate_stats(run_dir, 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", new)
    return decision
