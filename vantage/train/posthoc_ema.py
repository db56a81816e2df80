"""Post-hoc power-function EMA: keep power EMAs of a few widths during training, store snapshots of them, and
afterwards reconstruct the EMA of any other width (EDM2: Karras et al. 2024, "Analyzing and Improving the Training
Dynamics of Diffusion Models", arXiv 2312.02696, Sec. 3.1-3.2 and Appendix C.1-C.2; written from the paper's
equations).

**Profiles** (EDM2 Sec. 3.1, Eqs. 1-3). A power-function EMA with exponent ``γ`` read at training time ``t`` is the
average of the weights ``θ(τ)`` over ``0 < τ <= t`` with the density

    p_{t,γ}(τ) = (γ + 1) τ^γ / t^(γ+1)        (0 < τ <= t; 0 after t)

whose relative standard deviation ``σ_rel = sqrt((γ+1) / ((γ+2)² (γ+3)))`` (Eq. 3) does not depend on ``t``
(:func:`~vantage.train.ema.power_std`; the inverse :func:`~vantage.train.ema.power_gamma` takes the largest real
root of the cubic ``σ_rel² (γ+2)² (γ+3) − (γ+1) = 0``). The trainer's discrete update
``β_t = (1 − 1/t)^(γ+1)`` gives step ``τ``'s weights ``θ_τ`` exactly ``∫_{τ−1}^{τ} p_{t,γ}``, so with ``θ`` piecewise
constant over the steps the discrete EMA *is* the continuous average ``∫ p_{t,γ}(τ) θ(τ) dτ``; time is counted in
optimizer steps (the fit below is invariant to the unit).

**Inner products** (Appendix C.2). For two profiles, with ``m = min(t_a, t_b)``,

    <p_a, p_b> = ∫ p_a p_b dτ = (γ_a + 1)(γ_b + 1) m^(γ_a+γ_b+1) / ((γ_a + γ_b + 1) t_a^(γ_a+1) t_b^(γ_b+1))

(evaluated in log space, float64).

**Reconstruction** (Appendix C.2). Given snapshots ``θ̂_i`` (profiles ``p_i``, times ``t_i <= t_r``), the EMA of the
profile ``p_r`` (``γ_r`` from the requested ``σ_rel``, time ``t_r``) is approximated by ``Σ x_i θ̂_i`` with the
coefficients minimising ``‖p_r − Σ x_i p_i‖²`` in L2: the normal equations ``A x = b``, ``A_ij = <p_i, p_j>``,
``b_i = <p_i, p_r>``, solved by least squares (:func:`posthoc_coefficients`). Because ``Σ x_i θ̂_i`` is
``∫ (Σ x_i p_i) θ``, its distance to the exact EMA is at most ``‖p_r − Σ x_i p_i‖ · ‖θ‖`` (Cauchy-Schwarz) per
weight; the relative residual ``‖p_r − Σ x_i p_i‖ / ‖p_r‖`` is reported.

**Files.** ``RUN_DIR/ema_snapshots/step-NNNNNN-sigma_rel-S.safetensors``: the EMA module's state dict of one width
at one step, with metadata ``step``, ``images``, ``sigma_rel``, ``gamma``, ``method`` and ``buffers`` (the state-dict
keys that are buffers: taken from the newest snapshot used, never averaged). Written atomically (a ``.tmp-`` file
renamed); files starting with ``.`` are ignored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vantage.train.ema import EMA, power_gamma

__all__ = ["SNAPSHOTS", "Snapshot", "PosthocEMA", "power_profile", "profile_inner_products", "posthoc_coefficients",
           "snapshot_name", "list_snapshots", "remove_snapshots_after", "PosthocResult", "reconstruct_ema",
           "write_posthoc_checkpoint"]

SNAPSHOTS = "ema_snapshots"
SNAPSHOT_FORMAT = "vantage-ema-snapshot"


# ---------------------------------------------------------------------------------- the math
def power_profile(t: float, gamma: float, tau: np.ndarray) -> np.ndarray:
    """EDM2's averaging profile ``p_{t,γ}(τ) = (γ+1) τ^γ / t^(γ+1)`` on ``0 < τ <= t`` (0 elsewhere); ``tau`` any
    shape, float64 out, same shape."""
    tau = np.asarray(tau, dtype=np.float64)
    inside = (tau > 0) & (tau <= t)
    safe = np.where(inside, tau, t)
    return np.where(inside, (gamma + 1) * np.exp(gamma * np.log(safe / t)) / t, 0.0)


def profile_inner_products(t_a: np.ndarray | float, gamma_a: np.ndarray | float, t_b: np.ndarray | float,
                           gamma_b: np.ndarray | float) -> np.ndarray:
    """``<p_{t_a,γ_a}, p_{t_b,γ_b}>`` in closed form (module docstring), broadcast over the four arguments (times
    > 0, exponents > −1/2 so that the integral exists); float64."""
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    if (t_a <= 0).any() or (t_b <= 0).any():
        raise ValueError("profile times must be > 0")
    m = np.minimum(t_a, t_b)
    g = g_a + g_b + 1
    log = (np.log(g_a + 1) + np.log(g_b + 1) + g * np.log(m) - np.log(g) - (g_a + 1) * np.log(t_a)
           - (g_b + 1) * np.log(t_b))
    return np.exp(log)


def posthoc_coefficients(times: Sequence[float], gammas: Sequence[float], target_time: float,
                         target_gamma: float) -> tuple[np.ndarray, float]:
    """Least-squares coefficients ``x (N,)`` with ``Σ x_i p_{t_i,γ_i} ≈ p_{t_r,γ_r}`` (EDM2 Appendix C.2), and the
    relative L2 residual ``‖p_r − Σ x_i p_i‖ / ‖p_r‖`` of the fit.

    Args:
        times, gammas: ``(N,)`` the snapshots' times (steps, all ``<= target_time`` for a sensible fit) and
            exponents.
        target_time, target_gamma: the requested profile.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    g = np.asarray(gammas, dtype=np.float64).reshape(-1)
    if t.shape != g.shape or t.size == 0:
        raise ValueError(f"need as many snapshot times as exponents (at least one), got {t.size} and {g.size}")
    A = profile_inner_products(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_inner_products(t, g, target_time, target_gamma)
    x = np.linalg.lstsq(A, b, rcond=None)[0]
    rr = float(profile_inner_products(target_time, target_gamma, target_time, target_gamma))
    residual = rr - 2 * float(x @ b) + float(x @ A @ x)
    return x, math.sqrt(max(residual, 0.0) / rr)


# ---------------------------------------------------------------------------------- tracking during training
class PosthocEMA:
    """Power-function EMAs of ``model`` for each width in ``stds`` (σ_rel), updated with the trainer's EMA, and their
    snapshots (:meth:`save`).

    ``shared``: the trainer's own EMA; when it is a power EMA of one of the widths it is used for that width instead
    of a second copy (it is updated by the trainer, not here, and saved with the trainer's state).
    """

    def __init__(self, model: nn.Module, stds: Sequence[float], *, shared: EMA | None = None) -> None:
        self.stds = tuple(float(s) for s in stds)
        if not self.stds or len(set(self.stds)) != len(self.stds):
            raise ValueError(f"post-hoc EMA needs one or more distinct widths, got {self.stds}")
        self.emas: list[EMA] = []
        self.shared: list[bool] = []
        for std in self.stds:
            own = shared is not None and shared.mode == "power" and math.isclose(shared.std, std, rel_tol=1e-12)
            self.emas.append(shared if own else EMA(model, "power", std=std))
            self.shared.append(own)

    def update(self, model: nn.Module, steps_done: int) -> None:
        """Average ``model``'s weights into every width this object owns (call after the optimizer step ``steps_done``,
        1-based, after the trainer's EMA update)."""
        for ema, shared in zip(self.emas, self.shared):
            if not shared:
                ema.update(model, steps_done)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and primitives only; a shared width is stored as None (it is the trainer's EMA)."""
        return {"stds": list(self.stds),
                "emas": [None if shared else ema.state_dict() for ema, shared in zip(self.emas, self.shared)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stored = tuple(float(s) for s in state.get("stds", ()))
        if stored != self.stds:
            raise ValueError(f"the saved post-hoc EMA keeps widths {stored}, this run {self.stds}")
        for ema, shared, part in zip(self.emas, self.shared, state["emas"]):
            if not shared:
                if part is None:
                    raise ValueError("the saved post-hoc EMA shared a width with the trainer's EMA, this run does not")
                ema.load_state_dict(part)

    def save(self, run_dir: str | Path, step: int, images: int, method: str = "") -> list[Path]:
        """Write one snapshot per width to ``run_dir/ema_snapshots/`` (atomically); returns their paths."""
        from safetensors.torch import save_file

        from vantage.train.checkpoint import _state_dict_for_safetensors

        root = Path(run_dir) / SNAPSHOTS
        root.mkdir(parents=True, exist_ok=True)
        out = []
        for std, ema in zip(self.stds, self.emas):
            state = ema.module.state_dict()
            buffers = sorted(set(state) - {n for n, _ in ema.module.named_parameters(remove_duplicate=False)})
            path = root / snapshot_name(step, std)
            tmp = root / f".tmp-{path.name}-{os.getpid()}"
            meta = {"format": SNAPSHOT_FORMAT, "step": str(int(step)), "images": str(int(images)),
                    "sigma_rel": repr(std), "gamma": repr(ema.gamma), "method": method, "buffers": json.dumps(buffers)}
            save_file(_state_dict_for_safetensors(state), str(tmp), metadata=meta)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            out.append(path)
        return out


def snapshot_name(step: int, std: float) -> str:
    """``step-000500-sigma_rel-0.0500.safetensors``."""
    return f"step-{int(step):06d}-sigma_rel-{std:.4f}.safetensors"


# ---------------------------------------------------------------------------------- reading snapshots
@dataclass(frozen=True)
class Snapshot:
    """One stored snapshot: its file, training step and images, width σ_rel, exponent γ, buffer keys."""

    path: Path
    step: int
    images: int
    sigma_rel: float
    gamma: float
    buffers: tuple[str, ...] = ()


def _read_snapshot(path: Path) -> Snapshot:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"EMA snapshot {path} is corrupt or truncated: {e}") from e
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{path} is not a vantage EMA snapshot (metadata format {meta.get('format')!r})")
    try:
        return Snapshot(path, int(meta["step"]), int(meta["images"]), float(meta["sigma_rel"]), float(meta["gamma"]),
                        tuple(json.loads(meta.get("buffers", "[]"))))
    except (KeyError, ValueError) as e:
        raise ValueError(f"EMA snapshot {path} has bad metadata ({e})") from e


def list_snapshots(run_dir: str | Path) -> list[Snapshot]:
    """The run's snapshots by increasing step, then width (temp files ignored); ``[]`` when there are none.
    A file that is not a readable vantage snapshot raises :class:`ValueError` naming it."""
    root = Path(run_dir) / SNAPSHOTS
    if not root.is_dir():
        return []
    found = [_read_snapshot(p) for p in root.glob("step-*.safetensors") if not p.name.startswith(".")]
    return sorted(found, key=lambda s: (s.step, s.sigma_rel))


def remove_snapshots_after(run_dir: str | Path, step: int) -> int:
    """Delete snapshots of steps after ``step`` (a resumed run writes them again); returns how many."""
    gone = 0
    for snap in list_snapshots(run_dir):
        if snap.step > step:
            snap.path.unlink(missing_ok=True)
            gone += 1
    return gone


# ---------------------------------------------------------------------------------- reconstruction
@dataclass
class PosthocResult:
    """A reconstructed EMA: ``state`` (the method's state dict, the snapshots' dtypes), the requested ``sigma_rel``
    and its ``gamma``, the target ``step`` and ``images``, the ``snapshots`` used with their ``coefficients``, and
    the profile fit's relative ``residual``."""

    state: dict[str, torch.Tensor]
    sigma_rel: float
    gamma: float
    step: int
    images: int
    snapshots: list[Snapshot] = field(default_factory=list)
    coefficients: list[float] = field(default_factory=list)
    residual: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (recorded in the written checkpoint's ``config.json``)."""
        return {"sigma_rel": self.sigma_rel, "gamma": self.gamma, "step": self.step, "images": self.images,
                "relative_residual": self.residual,
                "snapshots": [{"step": s.step, "sigma_rel": s.sigma_rel, "coefficient": c, "file": s.path.name}
                              for s, c in zip(self.snapshots, self.coefficients)]}


def reconstruct_ema(run_dir: str | Path, sigma_rel: float, step: int | None = None,
                    snapshots: list[Snapshot] | None = None) -> PosthocResult:
    """The power EMA of width ``sigma_rel`` at training step ``step`` (default: the newest snapshot's) from the run's
    snapshots at steps ``<= step`` (EDM2 Appendix C.2; module docstring). Parameters are the weighted sums
    ``Σ x_i θ̂_i`` (accumulated in float64); buffers are the newest used snapshot's. ``ValueError`` when there is
    nothing to reconstruct from or the snapshots do not match each other."""
    from safetensors.torch import load_file

    snaps = list_snapshots(run_dir) if snapshots is None else list(snapshots)
    if not snaps:
        raise ValueError(f"{run_dir} has no EMA snapshots ({Path(run_dir) / SNAPSHOTS}); train with "
                         f"--set train.ema_posthoc=true to keep them")
    gamma = power_gamma(float(sigma_rel))
    target = max(s.step for s in snaps) if step is None else int(step)
    used = [s for s in snaps if s.step <= target]
    if not used or target < 1:
        raise ValueError(f"no EMA snapshot at or before step {target} (the first is at step {snaps[0].step})")
    x, residual = posthoc_coefficients([s.step for s in used], [s.gamma for s in used], target, gamma)
    newest = max(used, key=lambda s: s.step)
    buffers = set(newest.buffers)
    acc: dict[str, torch.Tensor] = {}
    ref: dict[str, torch.Tensor] = {}
    for snap, c in zip(used, x.tolist()):
        state = load_file(str(snap.path))
        if not ref:
            ref = {k: v for k, v in state.items()}
        elif set(state) != set(ref) or any(state[k].shape != ref[k].shape for k in ref):
            raise ValueError(f"EMA snapshot {snap.path} does not hold the same tensors as {used[0].path}")
        for k, v in state.items():
            if k in buffers or not v.is_floating_point():
                continue
            acc[k] = acc[k] + c * v.double() if k in acc else c * v.double()
        if snap is newest:
            newest_state = state
    out = {k: (acc[k].to(ref[k].dtype) if k in acc else newest_state[k].clone()) for k in ref}
    images = newest.images if newest.step == target else round(newest.images / newest.step * target)
    return PosthocResult(out, float(sigma_rel), gamma, target, images, used, x.tolist(), residual)


def write_posthoc_checkpoint(run_dir: str | Path, sigma_rel: float, out: str | Path, *, step: int | None = None,
                             overwrite: bool = False) -> tuple[Path, PosthocResult]:
    """Reconstruct (:func:`reconstruct_ema`) and write a checkpoint folder ``out`` (``config.json`` = the run's
    config + ``step``, ``images`` and ``posthoc_ema``; ``model.safetensors``) that ``load_checkpoint``,
    ``vantage sample --checkpoint`` and ``vantage evaluate --checkpoint`` read.

    ``out`` must be new or empty unless ``overwrite`` (:class:`~vantage.outputs.OutputExistsError`); the run folder
    itself and its ``checkpoints/`` and ``ema_snapshots/`` are refused even then (``ValueError``), so no training
    file is ever replaced.
    """
    from safetensors.torch import save_file

    from vantage import __version__
    from vantage.outputs import prepare_output_dir
    from vantage.train.checkpoint import (
        CHECKPOINTS,
        RUN_FORMAT,
        _state_dict_for_safetensors,
        atomic_write_json,
        check_state_dict,
    )

    run_dir, out = Path(run_dir), Path(out)
    cfg_path = run_dir / "config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{run_dir} is not a readable vantage run (config.json: {e})") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise ValueError(f"{cfg_path} is not a vantage run config (\"format\": \"{RUN_FORMAT}\")")
    run_abs, out_abs = run_dir.resolve(), out.resolve()
    own = [run_abs / CHECKPOINTS, run_abs / SNAPSHOTS]
    if out_abs == run_abs or any(out_abs == d or d in out_abs.parents for d in own):
        raise ValueError(f"--out {out} is the run folder {run_dir} or inside its {CHECKPOINTS}/ or {SNAPSHOTS}/; "
                         f"write the post-hoc checkpoint elsewhere (the run's own files are never replaced)")
    result = reconstruct_ema(run_dir, sigma_rel, step)
    from vantage.methods import method_from_json

    method = method_from_json(config, where=str(cfg_path))
    check_state_dict(method, result.state, f"post-hoc EMA of {run_dir}")
    out = prepare_output_dir(out, overwrite, what="checkpoint")
    config = {**config, "step": result.step, "images": result.images, "posthoc_ema": result.summary()}
    tmp = out / f".model.safetensors.tmp-{os.getpid()}"
    save_file(_state_dict_for_safetensors(result.state), str(tmp),
              metadata={"format": "pt", "vantage": __version__, "method": str(config.get("method", "")),
                        "step": str(result.step), "posthoc_sigma_rel": repr(result.sigma_rel)})
    os.replace(tmp, out / "model.safetensors")
    atomic_write_json(out / "config.json", config)
    return out, result

