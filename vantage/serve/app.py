"""The ``vantage serve`` page: Gradio components wired to a :class:`~vantage.serve.engine.ServeEngine`.

This module only builds the page (:func:`build_app`) and starts the server (:func:`launch`); everything that
runs the model is in :mod:`vantage.serve.engine`. It needs gradio (the ``web`` extra:
``pip install -e ".[web]"``). What each control does is in ``docs/serve.md``.

* Errors a person can fix (:class:`~vantage.serve.models.ServeError`: a file that is not an image, a
  checkpoint that does not load, ...) are shown on the page (``gr.Error``). Any other exception is printed on
  the console with its traceback and shown on the page as an internal error. The server keeps running either
  way.
* Requests are queued: one model runs at a time (``queue(default_concurrency_limit=1)``, and loading a
  checkpoint shares the generation's queue).
* The progress bar follows the samplers' steps (``gr.Progress`` fed by the engine's progress callback).
* The server binds 127.0.0.1 by default. It never creates a public share link, and it loads no web fonts
  (the theme uses the system fonts): the page works on a machine without internet access.
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Callable
from typing import Any

import gradio as gr

from vantage.serve.engine import MAX_STEPS, MAX_VIEWS, GenerateRequest, ServeEngine
from vantage.serve.models import STRATEGY_CHOICES, ServeError

__all__ = ["build_app", "launch"]

CSS = """
#vantage-preview img, #vantage-gif img { width: 100%; height: 100%; object-fit: contain; }
#vantage-preview img, #vantage-gallery img, #vantage-gif img { image-rendering: pixelated; }
"""
INTRO = """# vantage: novel views of an object
Upload a photo of one object (a plain background or a cut-out PNG works best), or pick a held-out benchmark
object. The page shows the input as the model sees it (masked, recentred, scaled to the training framing).
Choose one target view or an orbit, then press **Generate**. Device: {device}."""


def _supported(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``fn`` accepts by name (gradio's signatures differ between versions 4, 5 and 6)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def _style() -> tuple[dict[str, Any], dict[str, Any]]:
    """``(Blocks keyword arguments, launch keyword arguments)`` for the CSS and a theme with system fonts
    (gradio 6 takes them in ``launch``, older versions in ``Blocks``)."""
    fonts = {"font": ["ui-sans-serif", "system-ui", "sans-serif"], "font_mono": ["ui-monospace", "monospace"]}
    style = {"css": CSS, "theme": gr.themes.Default(**_supported(gr.themes.Default.__init__, fonts))}
    if "css" in inspect.signature(gr.Blocks.__init__).parameters:
        return style, {}
    return {}, style


def _c(cls: type, *args: Any, **kwargs: Any) -> Any:
    """``cls(*args, **kwargs)`` without the keyword arguments this gradio version does not have."""
    return cls(*args, **_supported(cls.__init__, kwargs))


def _pick(source: str, upload: Any, bench: str | None) -> tuple[str | None, str | None]:
    """``(image, benchmark)`` of the selected input source."""
    if source == "upload":
        path = upload if isinstance(upload, str) or upload is None else getattr(upload, "name", None)
        return path, None
    return None, bench or None


def _notes(notes: list[str]) -> str:
    return "\n".join(f"- {n}" for n in notes)


def _page_error(e: Exception) -> gr.Error:
    """The page's error for ``e``: its message for a :class:`ServeError`; for anything else (a bug) the traceback
    goes to the console and the page says "internal error"."""
    if isinstance(e, ServeError):
        return gr.Error(str(e))
    traceback.print_exc()
    return gr.Error(f"internal error ({type(e).__name__}: {e}); see the server's console")


def build_app(engine: ServeEngine) -> gr.Blocks:
    """The page (module docstring), queued; :func:`launch` starts it."""
    from vantage.diffusion.samplers import SAMPLERS
    from vantage.methods.base import MethodConfig

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        info = engine.model_info()
        cfg, model_text = info.config, f"Model: {info.describe()}"
    except ServeError as e:
        cfg, model_text = MethodConfig(), f"**No model loaded.** {e}"
    blocks_style, _ = _style()
    with gr.Blocks(**_supported(gr.Blocks.__init__, {"title": "vantage serve", "analytics_enabled": False,
                                                       "delete_cache": (3600, 3600), **blocks_style})) as app:
        gr.Markdown(INTRO.format(device=engine.device))
        with gr.Row():
            with gr.Column():
                ckpt = gr.Textbox(label="Checkpoint: a run folder or a checkpoint folder (Enter or Load to use it)",
                                  value=str(engine.checkpoint or ""), placeholder="runs/my-3dim",
                                  elem_id="vantage-checkpoint")
                load = gr.Button("Load checkpoint", size="sm")
                model_md = gr.Markdown(model_text, elem_id="vantage-model")
                source = gr.Radio([("Upload an image", "upload"), ("Benchmark object", "benchmark")],
                                  value="benchmark" if engine.benchmark else "upload", label="Input")
                upload = _c(gr.File, label="Image (PNG, JPEG, WebP, ...)", file_types=["image"], type="filepath",
                            height=120, elem_id="vantage-upload")
                bench = gr.Dropdown(engine.benchmark, value=engine.benchmark[0] if engine.benchmark else None,
                                    label="Held-out benchmark object (24-view ring; view 0 is the input)",
                                    elem_id="vantage-benchmark")
                preview = _c(gr.Image, label="The input as the model sees it", type="numpy", interactive=False,
                             format="png", height=200, elem_id="vantage-preview")
                preview_md = gr.Markdown(elem_id="vantage-preview-notes")
            with gr.Column():
                mode = gr.Radio([("Orbit", "orbit"), ("One view", "view")], value="orbit", label="Target views")
                views = gr.Slider(2, MAX_VIEWS, value=max(2, engine.views), step=1,
                                  label="Orbit: number of views over the full circle (view 0 at the input)")
                azimuth = gr.Slider(-180, 180, value=90, step=5, visible=False,
                                    label="One view: azimuth, degrees from the input (counter-clockwise from above)")
                elevation = gr.Slider(-80, 80, value=cfg.input_elevation_deg, step=1,
                                      label="Elevation, degrees above the horizon (a photo is assumed at "
                                            f"{cfg.input_elevation_deg:g})")
                with gr.Row():
                    sampler = gr.Dropdown(sorted(SAMPLERS), value=cfg.default_sampler, label="Sampler")
                    strategy = gr.Dropdown(list(STRATEGY_CHOICES), value="auto",
                                           label="Strategy (auto: composed for ViewFusion, else stochastic)")
                with gr.Row():
                    steps = _c(gr.Number, value=engine.steps or cfg.default_steps, precision=0, minimum=1,
                               maximum=MAX_STEPS, label="Steps")
                    guidance = _c(gr.Number, value=cfg.default_guidance, minimum=0,
                                  label="Guidance weight (0: none)")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                go = gr.Button("Generate", variant="primary", elem_id="vantage-generate")
                result_md = gr.Markdown(elem_id="vantage-result")
        with gr.Row():
            gallery = _c(gr.Gallery, label="Generated views (click one to enlarge it)", columns=6,
                         object_fit="contain", height=300, elem_id="vantage-gallery", scale=3)
            gif = _c(gr.Image, label="Orbit GIF", type="filepath", interactive=False, height=300,
                     elem_id="vantage-gif", scale=1)
        weights = _c(gr.Gallery, label="ViewFusion weight maps (composed strategy): the views composed and "
                     "their per-pixel weights", columns=2, visible=False, elem_id="vantage-weights")

        def show_preview(ckpt_text: str, src: str, up: Any, name: str | None, loud: bool = True) -> tuple:
            image, benchmark = _pick(src, up, name)
            if not image and not benchmark:
                return None, "Upload an image or pick a benchmark object."
            try:
                img, notes = engine.preview(ckpt_text, image=image, benchmark=benchmark)
            except Exception as e:  # every error is shown on the page; the server keeps running
                if loud or not isinstance(e, ServeError):
                    raise _page_error(e) from None
                return None, f"**{e}**"
            return img, _notes(notes)

        def on_upload(ckpt_text: str, up: Any) -> tuple:
            return ("upload", *show_preview(ckpt_text, "upload", up, None))

        def on_bench(ckpt_text: str, name: str | None) -> tuple:
            return ("benchmark", *show_preview(ckpt_text, "benchmark", None, name))

        def on_load(ckpt_text: str, src: str, up: Any, name: str | None) -> tuple:
            try:
                _, info = engine.load(ckpt_text)
            except Exception as e:  # shown on the page (a bug: "internal error"); the server keeps running
                raise _page_error(e) from None
            c = info.config
            return (f"Model: {info.describe()}", gr.update(value=c.default_sampler),
                    gr.update(value=engine.steps or c.default_steps), gr.update(value=c.default_guidance),
                    gr.update(value=c.input_elevation_deg), *show_preview(ckpt_text, src, up, name, loud=False))

        def on_generate(ckpt_text: str, src: str, up: Any, name: str | None, mode_: str, n: float, az: float,
                        el: float, sampler_: str | None, steps_: float | None, w: float | None, seed_: float | None,
                        strategy_: str | None, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
            image, benchmark = _pick(src, up, name)
            req = GenerateRequest(image=image, benchmark=benchmark, checkpoint=ckpt_text, mode=mode_, azimuth=az,
                                  elevation=el, views=int(n), sampler=sampler_, steps=int(steps_) if steps_ else None,
                                  guidance=w, seed=int(seed_ or 0), strategy=strategy_ or "auto")
            try:
                res = engine.generate(req, progress=lambda f, message: progress(f, desc=message))
            except Exception as e:  # shown on the page (a bug: "internal error"); the server keeps running
                raise _page_error(e) from None
            maps = [str(p) for p in res.weight_maps]
            return ([(str(p), c) for p, c in zip(res.frames, res.captions)], str(res.gif) if res.gif else None,
                    gr.update(value=maps or None, visible=bool(maps)), res.describe())

        picked = [ckpt, source, upload, bench]
        upload.upload(on_upload, [ckpt, upload], [source, preview, preview_md])
        bench.input(on_bench, [ckpt, bench], [source, preview, preview_md])
        source.input(show_preview, picked, [preview, preview_md])
        mode.change(lambda m: (gr.update(visible=m == "orbit"), gr.update(visible=m == "view")), mode,
                    [views, azimuth])
        loaded = [model_md, sampler, steps, guidance, elevation, preview, preview_md]
        for event in (load.click, ckpt.submit):
            event(on_load, picked, loaded, concurrency_limit=1, concurrency_id="model")
        go.click(on_generate, [*picked, mode, views, azimuth, elevation, sampler, steps, guidance, seed, strategy],
                 [gallery, gif, weights, result_md], concurrency_limit=1, concurrency_id="model")
        app.load(lambda *a: show_preview(*a, loud=False), picked, [preview, preview_md])
    app.queue(default_concurrency_limit=1, max_size=32)
    return app


def launch(app: gr.Blocks, engine: ServeEngine, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
           quiet: bool = False, max_file_size: str = "200mb") -> Any:
    """Start the server of :func:`build_app`'s page on ``host:port`` (never a public share link). ``block``:
    wait until interrupted (else return at once; stop it with ``app.close()``). Returns gradio's
    ``launch`` result."""
    _, launch_style = _style()
    kwargs = {"server_name": host, "server_port": port, "share": False, "inbrowser": False, "show_error": True,
              "quiet": quiet, "prevent_thread_lock": not block, "allowed_paths": [str(engine.store.root)],
              "max_file_size": max_file_size, "ssr_mode": False, **launch_style}
    return app.launch(**_supported(app.launch, kwargs))
