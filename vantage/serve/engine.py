"""The model-running side of ``vantage serve``, as plain Python: no gradio import, so the tests drive it
without a browser (and without the ``web`` extra).

:class:`ServeEngine` holds the server's settings (default checkpoint, device, default number of views and
steps), one loaded model at a time (loaded again when another checkpoint is asked for, or when the
checkpoint's weights change) and a :class:`~vantage.serve.results.ResultStore`. Its methods are what the
page calls:

* :meth:`ServeEngine.model_info` reads a checkpoint's ``config.json`` without building the network
  (:func:`~vantage.serve.models.read_model_info`).
* :meth:`ServeEngine.preview` shows the input the model will see: an uploaded file preprocessed as
  ``vantage sample`` does, or a benchmark object's input view (:mod:`vantage.serve.inputs`), with notes that
  say what was done.
* :meth:`ServeEngine.generate` runs one :class:`GenerateRequest`: one view at a target azimuth and
  elevation, or an orbit of N views, with any sampler, number of steps, guidance weight, seed and strategy.
  It reports progress through ``progress(fraction, message)`` (hooked to the samplers' per-step callback),
  writes the frames, the orbit GIF and (ViewFusion, composed strategy) the weight maps into a new result
  folder (:func:`~vantage.serve.results.write_result`), and returns a
  :class:`~vantage.serve.results.GenerateResult`.

Every problem that the person using the page can fix is a :class:`~vantage.serve.models.ServeError`: no
input, a file that is not an image, a checkpoint that does not load, a strategy the model does not have, a
value out of range. The engine stays usable after one.

Targets: the azimuth is counted from the input view, in degrees, counter-clockwise seen from above (about
world +z); an orbit spans the full circle from the input. The elevation is absolute, in degrees above the
horizon (None: the input's, so that an orbit runs through the input). An uploaded photo has no pose: it gets
the model's default camera (``input_elevation_deg``: 30° for the synthetic data).
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vantage.serve.inputs import benchmark_names, prepare_input
from vantage.serve.models import ModelInfo, ServeError, choose_strategy, read_model_info
from vantage.serve.results import GenerateResult, ResultStore, write_result

__all__ = ["ServeEngine", "GenerateRequest", "MODES", "MAX_VIEWS", "MAX_STEPS", "Progress"]

MODES = ("view", "orbit")
MAX_VIEWS = 72
MAX_STEPS = 1000
Progress = Callable[[float, str], None]


@dataclass
class GenerateRequest:
    """One generation.

    Attributes:
        image: an uploaded image file, or ``benchmark``: a name from :func:`~vantage.serve.inputs.benchmark_names`.
        checkpoint: a run or checkpoint folder (None or empty: the server's).
        mode: ``"view"``: one view at ``azimuth`` (degrees from the input) and ``elevation``; ``"orbit"``:
            ``views`` views evenly spaced over the full circle at ``elevation``.
        elevation: degrees above the horizon (None: the input's).
        views: orbit views (None: the server's default).
        sampler, steps, guidance: None: the model's defaults (``steps``: the server's default first).
        seed: random seed. strategy: ``auto`` (composed for ViewFusion, stochastic otherwise), ``stochastic``,
            ``single``, ``interpolated`` or ``composed``.
    """

    image: str | Path | None = None
    benchmark: str | None = None
    checkpoint: str | Path | None = None
    mode: str = "orbit"
    azimuth: float = 90.0
    elevation: float | None = None
    views: int | None = None
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    strategy: str = "auto"


class ServeEngine:
    """The server's state and the functions the page calls (module docstring).

    Args:
        checkpoint: the checkpoint served by default (a run or checkpoint folder); None: every request names one.
        device: ``cpu``, ``cuda``, ... (default: cuda when available, else cpu).
        views: default number of orbit views. steps: default sampling steps (None: the model's).
        store: where results go (default: a new temporary folder, made on first use).
        benchmark_objects: how many held-out benchmark objects the page offers.
    """

    def __init__(self, checkpoint: str | Path | None = None, *, device: str | None = None, views: int = 8,
                 steps: int | None = None, store: ResultStore | None = None, benchmark_objects: int = 12) -> None:
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint is not None else None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"views must be in [1, {MAX_VIEWS}], got {views}")
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be in [1, {MAX_STEPS}], got {steps}")
        self.views, self.steps = views, steps
        self._store = store
        self.benchmark = benchmark_names(benchmark_objects)
        self._lock = threading.RLock()
        self._model: Any = None
        self._key: tuple | None = None

    @property
    def store(self) -> ResultStore:
        """Where results go; the default temporary folder is made when it is first needed."""
        if self._store is None:
            self._store = ResultStore()
        return self._store

    def _path(self, checkpoint: str | Path | None) -> Path:
        if checkpoint is not None and str(checkpoint).strip():
            return Path(str(checkpoint).strip()).expanduser()
        if self.checkpoint is None:
            raise ServeError("no checkpoint: type a run folder in the Checkpoint box (or start the server with "
                             "--checkpoint RUN_DIR)")
        return self.checkpoint

    def model_info(self, checkpoint: str | Path | None = None) -> ModelInfo:
        """:class:`~vantage.serve.models.ModelInfo` of ``checkpoint`` (default: the server's), from its config."""
        return read_model_info(self._path(checkpoint))

    def load(self, checkpoint: str | Path | None = None) -> tuple[Any, ModelInfo]:
        """``(method in eval mode on the device, info)``. The last model is kept and reused while its folder and
        weights are unchanged; :class:`ServeError` when it does not load (the previous model is dropped)."""
        from vantage.train.checkpoint import CheckpointError, load_checkpoint

        info = self.model_info(checkpoint)
        weights = (info.folder / "model.safetensors").stat()
        key = (str(info.folder.resolve()), weights.st_mtime_ns, weights.st_size, self.device)
        with self._lock:
            if self._key != key:
                self._model, self._key = None, None  # free the old one first
                try:
                    self._model = load_checkpoint(info.folder, device=self.device)
                except (CheckpointError, OSError, RuntimeError, AssertionError, ValueError) as e:
                    raise ServeError(f"cannot load the checkpoint {info.folder} on {self.device}: {e}") from None
                self._key = key
            return self._model, info

    def preview(self, checkpoint: str | Path | None = None, *, image: str | Path | None = None,
                benchmark: str | None = None) -> tuple[np.ndarray, list[str]]:
        """``(the input the model sees, (R, R, 3) uint8; notes)``; only the checkpoint's config is read."""
        from vantage.viz import to_uint8

        inp = prepare_input(self.model_info(checkpoint), image, benchmark)
        return to_uint8(inp.inputs.images[0]), list(inp.notes)

    def _check(self, req: GenerateRequest) -> int:
        """The number of target views of ``req``; :class:`ServeError` for values out of range."""
        if req.mode not in MODES:
            raise ServeError(f"unknown mode {req.mode!r}; choose one of {', '.join(MODES)}")
        n = int(req.views or self.views) if req.mode == "orbit" else 1
        if not 1 <= n <= MAX_VIEWS:
            raise ServeError(f"the number of views must be in [1, {MAX_VIEWS}], got {n}")
        if req.steps is not None and not 1 <= int(req.steps) <= MAX_STEPS:
            raise ServeError(f"the number of steps must be in [1, {MAX_STEPS}], got {req.steps}")
        if req.elevation is not None and not -90 < float(req.elevation) < 90:
            raise ServeError(f"the elevation must be in (-90, 90) degrees, got {req.elevation:g}")
        for what, v in (("azimuth", req.azimuth), ("guidance weight", req.guidance), ("seed", req.seed)):
            if v is not None and not math.isfinite(float(v)):
                raise ServeError(f"the {what} must be a number, got {v}")
        return n

    def generate(self, req: GenerateRequest, progress: Progress | None = None) -> GenerateResult:
        """Run ``req``; ``progress(fraction in [0, 1], message)`` is called as it goes (after every denoising
        step). One generation runs at a time (a lock; the page also queues its requests)."""
        from vantage.diffusion.samplers import get_sampler
        from vantage.sampling import WeightRecorder, autoregressive_orbit
        from vantage.sampling.inputs import match_views
        from vantage.sampling.targets import arc_targets

        t0 = time.perf_counter()
        report = progress or (lambda fraction, message: None)
        n = self._check(req)
        report(0.0, "loading the model")
        with self._lock:
            method, info = self.load(req.checkpoint)
            cfg = method.config
            report(0.0, "preparing the input")
            inp = prepare_input(info, req.image, req.benchmark)
            guidance = float(cfg.default_guidance if req.guidance is None else req.guidance)
            strategy, strategy_name, options, order = choose_strategy(info, method, req.strategy, guidance)
            sampler = (req.sampler or "").strip() or cfg.default_sampler
            try:
                get_sampler(sampler)
            except KeyError as e:
                raise ServeError(str(e).strip("'\"")) from None
            steps = int(req.steps or self.steps or cfg.default_steps)

            input_cam = inp.views.cameras[inp.input_index:inp.input_index + 1]
            in_el = 90.0 - math.degrees(float(input_cam.spherical()[0, 0]))
            el = None if req.elevation is None or abs(float(req.elevation) - in_el) < 1e-6 else float(req.elevation)
            az = float(req.azimuth) if req.mode == "view" else 0.0
            targets = arc_targets(input_cam, n, start_deg=az, end_deg=az if n == 1 else az + 360.0, elevation_deg=el)
            truth = match_views(inp.views, targets) if inp.posed else [None] * n
            n_gen = sum(m is None for m in match_views(inp.inputs, targets))
            notes = list(inp.notes)
            if n_gen == 0:
                notes.append("the target camera is the input camera: the input is shown, nothing was generated")
            recorder = WeightRecorder(inp.inputs.images, "mean", input_labels=["input"]) \
                if strategy_name == "composed" else None

            def on_step(step: dict[str, Any]) -> None:
                j, i = int(step["view_step"]), int(step["i"])
                report(min(1.0, (j + (i + 1) / steps) / max(1, n_gen)),
                       f"view {j + 1} of {n_gen}: step {min(i + 1, steps)} of {steps}")

            report(0.0, f"generating {n_gen} view(s)")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result = autoregressive_orbit(method, inp.inputs, targets, strategy=strategy, order=order,
                                                  sampler=sampler, steps=steps, guidance=guidance, seed=int(req.seed),
                                                  device=self.device, callback=recorder, step_callback=on_step,
                                                  strategy_options=options)
            except (KeyError, ValueError) as e:
                raise ServeError(str(e).strip("'\"")) from None
            notes += list(dict.fromkeys(str(w.message) for w in caught))
        report(1.0, "writing the results")
        summary = {"method": info.method, "checkpoint": str(info.folder), "input": str(req.image or req.benchmark),
                   "mode": req.mode, "views": n, "sampler": sampler, "steps": steps, "guidance": guidance,
                   "strategy": strategy_name, "order": order, "seed": int(req.seed), "device": self.device,
                   "nfe": result.nfe, "seconds_sampling": round(result.seconds, 3),
                   "seconds": round(time.perf_counter() - t0, 3),
                   "request": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(req).items()}}
        return write_result(self.store.new(), inp=inp, result=result, truth=truth, recorder=recorder, notes=notes,
                            summary=summary)
