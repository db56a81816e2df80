"""Training configuration: :class:`TrainConfig`, lengths in steps or images, ``--set`` overrides.

Lengths and intervals (``duration``, ``warmup``, ``log_every``, ...) are an ``int`` (optimizer
steps) or a string with a unit: ``"200steps"``, ``"5000img"``, ``"500kimg"``, ``"2.5mimg"``.
The global batch is fixed by the config, so images and steps convert exactly
(``steps = ceil(images / batch)``); :meth:`TrainConfig.plan` resolves everything to steps for a
given number of processes.

Layers (:func:`resolve_train_config`): the built-in defaults of :class:`TrainConfig`, then the
preset's training defaults (``register_preset(..., train={...})``, checked by
:func:`check_train_defaults`), then the user's values (``--steps``, ``--batch``, ``--set train.*``);
the user wins. A resumed run starts from the training config stored in its ``config.json`` instead
(a preset changed after the run started does not change it; fields the stored config lacks take the
built-in defaults), and only the fields in :data:`RESUMABLE_FIELDS` may change (they do not change
what is computed: the length of the run, how often things are written, the micro-batch split, data
loading). See ``docs/training.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["TrainConfig", "TrainPlan", "RESUMABLE_FIELDS", "parse_length", "parse_images", "parse_value",
           "split_overrides", "train_config_from_dict", "check_train_defaults", "resolve_train_config",
           "diff_configs"]

LR_SCHEDULES = ("constant", "cosine", "inv_sqrt")
EMA_MODES = ("halflife", "decay", "power", "none")
PRECISIONS = ("fp32", "bf16")

#: ``TrainConfig`` fields a resumed run may change (``--steps``, ``--set train.FIELD=...``).
RESUMABLE_FIELDS = frozenset({
    "duration", "log_every", "ckpt_every", "sample_every", "keep_checkpoints", "num_workers", "micro_batch",
    "compile", "tensorboard", "progress", "preview_count", "max_bad_steps", "find_unused_parameters",
    "ema_posthoc_every",
})

_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(steps?|img|kimg|mimg)?\s*$", re.IGNORECASE)
_IMAGES_PER_UNIT = {"img": 1, "kimg": 1_000, "mimg": 1_000_000}


def _parse(value: int | float | str, field: str) -> tuple[float, str]:
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a length like 1000, '1000steps' or '500kimg', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{field} must be >= 0, got {value}")
        return float(value), "steps"
    m = _LENGTH.match(str(value))
    if not m:
        raise ValueError(f"{field}: expected a length like 1000, '1000steps', '5000img', '500kimg' or '2mimg', "
                         f"got {value!r}")
    unit = (m.group(2) or "steps").lower()
    return float(m.group(1)), ("steps" if unit.startswith("step") else unit)


def parse_length(value: int | float | str, batch: int, field: str = "length") -> int:
    """A length (``int`` steps or ``"<n>steps|img|kimg|mimg"``) in optimizer steps of ``batch`` images."""
    n, unit = _parse(value, field)
    if unit == "steps":
        if n != int(n):
            raise ValueError(f"{field}: a number of steps must be whole, got {value!r}")
        return int(n)
    return math.ceil(n * _IMAGES_PER_UNIT[unit] / batch - 1e-9)


def parse_images(value: int | float | str, batch: int, field: str = "length") -> float:
    """A length in images (``int`` = steps of ``batch`` images)."""
    n, unit = _parse(value, field)
    return n * batch if unit == "steps" else n * _IMAGES_PER_UNIT[unit]


@dataclass
class TrainConfig:
    """Everything the trainer needs besides the method and the data.

    Attributes:
        duration: length of the run: ``int`` optimizer steps or ``"<n>kimg"`` (also ``img``, ``mimg``,
            ``steps``). ``--steps N`` sets it.
        batch: global batch size: images per optimizer step over all processes. It never depends on the
            number of processes (``--batch B``).
        micro_batch: largest batch one process runs through the network at once (memory bound); None =
            ``batch // world_size``. When ``batch > world_size * micro_batch`` gradients are accumulated
            over ``batch / (world_size * micro_batch)`` micro-steps. If it does not divide
            ``batch // world_size``, the largest divisor below it is used.
        lr: peak learning rate of AdamW.
        betas: AdamW ``(beta1, beta2)``.
        eps: AdamW epsilon.
        weight_decay: AdamW decoupled weight decay (applied to every parameter).
        lr_schedule: ``"cosine"`` (decay to ``lr * lr_min_ratio`` at the end of ``duration``),
            ``"inv_sqrt"`` (EDM2: ``lr / sqrt(max(step / lr_decay_ref, 1))``) or ``"constant"``;
            each after the linear warm-up.
        warmup: linear warm-up length (steps or images, see ``duration``); 0 = none.
        lr_min_ratio: ``"cosine"`` only: final learning rate as a fraction of ``lr``.
        lr_decay_ref: ``"inv_sqrt"`` only: the step (or image count) where the decay starts.
        grad_clip: clip the global gradient norm to this value; None or 0 = no clipping (the norm is
            still logged).
        ema: ``"halflife"`` (EDM: ``beta = 0.5 ** (batch / halflife_images)``), ``"decay"`` (a fixed
            ``ema_decay`` per step), ``"power"`` (EDM2 power-function EMA with relative width
            ``ema_std``) or ``"none"`` (the checkpoint's weights are the raw ones).
        ema_halflife: ``"halflife"``: half-life of the EMA (an ``int`` = steps, or images: ``"500kimg"``).
        ema_rampup: ``"halflife"``: the half-life is at most ``ema_rampup`` x images seen so far (EDM's
            ramp-up; None = off).
        ema_decay: ``"decay"``: per-step decay ``beta``.
        ema_std: ``"power"``: relative standard deviation sigma_rel of the power-function profile
            (EDM2; 0.05 <=> gamma ~ 17, 0.10 <=> gamma ~ 6.9).
        ema_posthoc: also keep power-function EMAs of the widths ``ema_posthoc_stds`` and store snapshots of them
            in ``RUN_DIR/ema_snapshots/``, from which ``vantage ema`` reconstructs the EMA of any width after
            training (EDM2's post-hoc EMA, :mod:`vantage.train.posthoc_ema`). Off by default; it does not change
            the training or the checkpoints' weights (``model.safetensors`` stays the ``ema`` above).
        ema_posthoc_stds: ``ema_posthoc``: the widths sigma_rel kept (EDM2: 0.05 and 0.10). A width equal to a
            ``"power"`` ``ema_std`` shares the trainer's EMA instead of keeping a second copy.
        ema_posthoc_every: ``ema_posthoc``: snapshot interval (steps or images, like ``ckpt_every``); a snapshot
            is also written at the end of the run and when it is stopped (0 = only then).
        precision: ``"fp32"`` or ``"bf16"`` (autocast on CPU and CUDA; parameters, optimizer and EMA
            stay fp32).
        compile: wrap the loss computation in ``torch.compile`` (CUDA only; ignored with a note on CPU).
        num_workers: DataLoader worker processes per rank (0 = load in the training process).
        seed: seeds the data order, the pairs, the per-step loss generators and the initial weights
            (the CLI seeds ``torch`` with it before building the method).
        log_every: write a ``stats.jsonl`` line (averages over the interval) every this many steps (or
            images); 0 = only at the end.
        ckpt_every: write a checkpoint every this many steps (or images); a final one is always written.
        sample_every: write a preview grid ``samples/step-NNNNNN.png`` every this many steps (or images);
            0 = only at the end.
        keep_checkpoints: keep the newest N checkpoints (0 = keep all).
        preview_count: pairs shown in each preview grid.
        max_bad_steps: abort after this many consecutive steps with a non-finite loss or gradient (each
            one is skipped: no optimizer or EMA update).
        tensorboard: also write TensorBoard events to ``RUN_DIR/tensorboard`` (only if the
            ``tensorboard`` package is installed).
        progress: show a progress bar (rank 0).
        find_unused_parameters: passed to DDP (needed by methods that skip some parameters in a step).
    """

    duration: int | str = 100_000
    batch: int = 64
    micro_batch: int | None = None
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    warmup: int | str = 0
    lr_min_ratio: float = 0.0
    lr_decay_ref: int | str = 70_000
    grad_clip: float | None = 1.0
    ema: str = "halflife"
    ema_halflife: int | str = "500kimg"
    ema_rampup: float | None = 0.05
    ema_decay: float = 0.9999
    ema_std: float = 0.05
    ema_posthoc: bool = False
    ema_posthoc_stds: tuple[float, ...] = (0.05, 0.10)
    ema_posthoc_every: int | str = 5000
    precision: str = "fp32"
    compile: bool = False
    num_workers: int = 2
    seed: int = 0
    log_every: int | str = 100
    ckpt_every: int | str = 5000
    sample_every: int | str = 5000
    keep_checkpoints: int = 3
    preview_count: int = 8
    max_bad_steps: int = 10
    tensorboard: bool = True
    progress: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        stds = self.ema_posthoc_stds
        if not isinstance(stds, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                      for v in stds):
            raise ValueError(f"train.ema_posthoc_stds must be a list of widths like [0.05, 0.1], got {stds!r}")
        self.ema_posthoc_stds = tuple(float(v) for v in stds)
        for name in ("lr", "eps", "weight_decay", "lr_min_ratio", "ema_decay", "ema_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"train.{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        for name in ("batch", "num_workers", "seed", "keep_checkpoints", "preview_count", "max_bad_steps"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"train.{name} must be an integer, "
                                                                         f"got {value!r}")
        need(self.batch >= 1, f"train.batch must be >= 1, got {self.batch}")
        need(self.micro_batch is None or (isinstance(self.micro_batch, int) and self.micro_batch >= 1),
             f"train.micro_batch must be None or >= 1, got {self.micro_batch!r}")
        need(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"train.betas must be two numbers in [0, 1), got {self.betas}")
        need(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        need(self.lr_schedule in LR_SCHEDULES, f"train.lr_schedule must be one of {LR_SCHEDULES}, "
                                               f"got {self.lr_schedule!r}")
        need(0 <= self.lr_min_ratio <= 1, f"train.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")
        need(self.grad_clip is None or self.grad_clip >= 0, f"train.grad_clip must be >= 0, got {self.grad_clip}")
        need(self.ema in EMA_MODES, f"train.ema must be one of {EMA_MODES}, got {self.ema!r}")
        need(0 <= self.ema_decay < 1, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        need(0 < self.ema_std < 0.3, f"train.ema_std must be in (0, 0.3) (sigma_rel of EDM2), got {self.ema_std}")
        need(isinstance(self.ema_posthoc, bool), f"train.ema_posthoc must be true or false, got {self.ema_posthoc!r}")
        need(len(self.ema_posthoc_stds) >= 1  # distinct as the snapshot files name them (4 decimals)
             and len({f"{v:.4f}" for v in self.ema_posthoc_stds}) == len(self.ema_posthoc_stds)
             and all(0 < v < 0.3 for v in self.ema_posthoc_stds),
             f"train.ema_posthoc_stds must be one or more widths in (0, 0.3), distinct to 4 decimals, got "
             f"{list(self.ema_posthoc_stds)}")
        need(self.ema_rampup is None or self.ema_rampup > 0, f"train.ema_rampup must be None or > 0, "
                                                             f"got {self.ema_rampup}")
        need(self.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.num_workers >= 0, f"train.num_workers must be >= 0, got {self.num_workers}")
        need(self.keep_checkpoints >= 0, f"train.keep_checkpoints must be >= 0, got {self.keep_checkpoints}")
        need(self.max_bad_steps >= 1, f"train.max_bad_steps must be >= 1, got {self.max_bad_steps}")
        for name in ("duration", "warmup", "lr_decay_ref", "ema_halflife", "log_every", "ckpt_every",
                     "sample_every", "ema_posthoc_every"):
            _parse(getattr(self, name), f"train.{name}")
        need(parse_length(self.duration, self.batch, "train.duration") >= 1, "train.duration must be >= 1 step")
        need(parse_length(self.lr_decay_ref, self.batch) >= 1, "train.lr_decay_ref must be >= 1 step")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def plan(self, world_size: int = 1) -> TrainPlan:
        """Resolve lengths to steps and split the global batch over ``world_size`` processes."""
        b = self.batch
        if b % world_size:
            raise ValueError(f"the global batch ({b}) must be divisible by the number of processes "
                             f"({world_size}); choose --batch as a multiple of {world_size}")
        per_rank = b // world_size
        want = min(self.micro_batch or per_rank, per_rank)
        micro = max(d for d in range(1, want + 1) if per_rank % d == 0)
        total = parse_length(self.duration, b, "train.duration")
        return TrainPlan(
            world_size=world_size, batch=b, micro_batch=micro, accumulation=per_rank // micro, total_steps=total,
            warmup_steps=parse_length(self.warmup, b, "train.warmup"),
            decay_ref_steps=parse_length(self.lr_decay_ref, b, "train.lr_decay_ref"),
            log_every=parse_length(self.log_every, b, "train.log_every"),
            ckpt_every=parse_length(self.ckpt_every, b, "train.ckpt_every"),
            sample_every=parse_length(self.sample_every, b, "train.sample_every"),
            ema_halflife_images=parse_images(self.ema_halflife, b, "train.ema_halflife"),
            ema_posthoc_every=parse_length(self.ema_posthoc_every, b, "train.ema_posthoc_every"),
        )


@dataclass(frozen=True)
class TrainPlan:
    """A :class:`TrainConfig` resolved for a number of processes (all lengths in steps).

    ``batch == world_size * micro_batch * accumulation`` always.
    """

    world_size: int
    batch: int
    micro_batch: int
    accumulation: int
    total_steps: int
    warmup_steps: int
    decay_ref_steps: int
    log_every: int
    ckpt_every: int
    sample_every: int
    ema_halflife_images: float
    ema_posthoc_every: int = 0

    def due(self, every: int, step: int) -> bool:
        """Whether an interval of ``every`` steps ends after ``step`` steps (always at the end)."""
        return step == self.total_steps or (every > 0 and step % every == 0)


# ---------------------------------------------------------------------------------- overrides
def parse_value(raw: str) -> Any:
    """Command-line text -> JSON value (``1e-4``, ``true``, ``[0.9, 0.99]``, ``null``/``none``) or the string."""
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return tuple(value) if isinstance(value, list) else value


def train_config_from_dict(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: the defaults) with ``values`` replaced; unknown fields are named in the error."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training field(s) {unknown}; training fields: {sorted(known)}")
    start = (base or TrainConfig()).to_dict()
    start.update(values)
    if isinstance(start.get("betas"), list):
        start["betas"] = tuple(start["betas"])
    return TrainConfig(**start)


def check_train_defaults(values: dict[str, Any], where: str = "preset") -> dict[str, Any]:
    """Check a preset's training defaults: every key a :class:`TrainConfig` field, every value valid
    (with the other fields at their defaults). Returns a copy (lists as tuples); errors name ``where``."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: training defaults must be a dict of TrainConfig fields, "
                         f"got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown training field(s) {unknown} in its train defaults; training fields: "
                         f"{sorted(known)}")
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        train_config_from_dict(out)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: bad train default: {e}") from None
    return out


def resolve_train_config(overrides: dict[str, Any], *, preset_defaults: dict[str, Any] | None = None,
                         stored: dict | None = None, preset: str | None = None) -> tuple[TrainConfig, dict[str, str]]:
    """The training config of a run, and where each value that is not a built-in default came from.

    * new run (``stored`` is None): :class:`TrainConfig` defaults < ``preset_defaults`` < ``overrides``;
    * resumed run (``stored``: the run's ``config.json`` content): its ``"train"`` < ``overrides``. The
      preset's current defaults are not consulted; fields the stored config lacks get the built-in defaults.

    Returns ``(config, sources)``: ``sources`` maps a field to ``"preset NAME"`` (or ``"preset"``) or
    ``"override"``; on resume it starts from the stored ``"train_sources"``. Fields not in it are built-in
    defaults (or, for runs written before vantage recorded sources, unknown).
    """
    label = f"preset {preset}" if preset else "preset"
    if stored is not None:
        base = train_config_from_dict(stored.get("train") or {})
        kept = stored.get("train_sources")
        sources = {str(k): str(v) for k, v in kept.items()} if isinstance(kept, dict) else {}
    else:
        defaults = dict(preset_defaults or {})
        base = train_config_from_dict(defaults)
        sources = {k: label for k in defaults}
    config = train_config_from_dict(overrides, base)
    sources.update({k: "override" for k in overrides})
    return config, dict(sorted(sources.items()))


def split_overrides(items: list[str], method_fields: set[str]) -> tuple[list[str], dict[str, Any]]:
    """Split ``--set`` items into method overrides (``"field=value"`` strings) and training values.

    ``train.FIELD=V`` is a training field; ``FIELD=V`` is the method config's field when the method
    has one, else a training field with that name; anything else is an error naming both field lists.
    """
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    method_items: list[str] = []
    train_values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects FIELD=VALUE (or train.FIELD=VALUE), got '{item}'")
        if key.startswith("train."):
            name = key[len("train."):]
            if name not in train_fields:
                raise ValueError(f"--set {key}: no training field '{name}'; training fields: {sorted(train_fields)}")
            train_values[name] = parse_value(raw)
        elif key in method_fields:
            method_items.append(f"{key}={raw}")
        elif key in train_fields:
            train_values[key] = parse_value(raw)
        else:
            raise ValueError(f"--set {key}: no such field; method fields: {sorted(method_fields)}; training "
                             f"fields (optionally prefixed 'train.'): {sorted(train_fields)}")
    return method_items, train_values


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(d) if isinstance(d, tuple) else d}


def diff_configs(old: dict, new: dict) -> list[str]:
    """``["train.lr: 0.0001 -> 0.0002", ...]`` for every leaf that differs (tuples equal lists)."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<missing>") != b.get(k, "<missing>")]
