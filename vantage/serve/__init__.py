"""``vantage serve``: a local web page (Gradio) that generates novel views from an uploaded photo or a held-out
benchmark object. See ``docs/serve.md``.

Everything that runs the model is plain Python (no gradio import: testable without a browser):

* :mod:`~vantage.serve.engine`: :class:`ServeEngine` (the loaded model, previews, targets,
  :meth:`ServeEngine.generate` with a progress callback) and :class:`GenerateRequest`;
* :mod:`~vantage.serve.models`: which checkpoint, what its config says, which strategy; :class:`ServeError`
  (a problem the person using the page can fix, shown there);
* :mod:`~vantage.serve.inputs`: an uploaded file or a held-out benchmark object, as the model sees it;
* :mod:`~vantage.serve.results`: :class:`ResultStore` (the server's own temporary folder of results, never a
  user's folder), :class:`GenerateResult` and the files of one result.

The page:

* :mod:`~vantage.serve.app`: the Gradio page wired to the engine (:func:`~vantage.serve.app.build_app`,
  :func:`~vantage.serve.app.launch`); it needs the ``web`` extra (``pip install -e ".[web]"``).
"""

from vantage.serve.engine import MAX_STEPS, MAX_VIEWS, MODES, GenerateRequest, ServeEngine
from vantage.serve.inputs import benchmark_names, prepare_input
from vantage.serve.models import STRATEGY_CHOICES, ModelInfo, ServeError, default_checkpoint, read_model_info
from vantage.serve.results import GenerateResult, ResultStore

__all__ = ["ServeEngine", "ServeError", "GenerateRequest", "GenerateResult", "ModelInfo", "ResultStore",
           "benchmark_names", "default_checkpoint", "prepare_input", "read_model_info", "MODES", "STRATEGY_CHOICES",
           "MAX_VIEWS", "MAX_STEPS"]
