"""The inputs of ``vantage serve``: an uploaded file or a held-out benchmark object, as the model sees them.

* :func:`upload_input`: a file from the page. It must open as an image (anything Pillow reads; a format
  other than PNG, JPEG or WebP is converted to PNG first). It is then preprocessed like the training views,
  as ``vantage sample`` does (:func:`vantage.sampling.inputs.load_input` with :mod:`vantage.preprocess`): the
  object is masked, recentred, scaled to the training framing and composited on white. A photo larger than
  1024 px is downscaled first. It has no pose: it gets the model's default camera (``input_elevation_deg``,
  ``input_radius``, ``input_fov_deg``).
* :func:`benchmark_input`: object ``benchmark-NNNNNN`` of the fixed held-out split
  (:data:`vantage.data.synthetic.BENCHMARK`), rendered at the model's resolution: all 24 views of its ring
  at 30° elevation, view 0 being the input and the others ground truth.
* :func:`prepare_input`: one of the two. Problems are :class:`~vantage.serve.models.ServeError`\\ s.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from vantage.serve.models import ModelInfo, ServeError

__all__ = ["benchmark_names", "upload_input", "benchmark_input", "prepare_input"]

_PREFIX = "benchmark-"


def benchmark_names(n: int = 12) -> list[str]:
    """The names of the first ``n`` held-out benchmark objects (``benchmark-000000``, ...)."""
    from vantage.data.synthetic import BENCHMARK

    return [f"{_PREFIX}{i:06d}" for i in range(max(0, min(int(n), BENCHMARK["num_objects"])))]


def upload_input(path: str | Path, info: ModelInfo) -> Any:
    """The :class:`~vantage.sampling.inputs.SampleInput` of an uploaded image file (module docstring)."""
    from PIL import Image

    from vantage.data.formats.common import IMAGE_EXTENSIONS
    from vantage.sampling.inputs import load_input

    path = Path(path)
    if not path.is_file():
        raise ServeError(f"the uploaded file {path.name} is not there any more: upload it again")
    try:
        with Image.open(path) as im:
            fmt = im.format
    except Image.DecompressionBombError as e:
        raise ServeError(f"{path.name}: the image is too large to open ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL's message names the server's temporary path: not shown
        why = str(e).replace(f" '{path}'", "").replace(str(path), path.name)
        raise ServeError(f"{path.name}: not an image ({why}); upload a photo (PNG, JPEG, WebP, ...)") from None
    c = info.config
    opts = {"elevation_deg": c.input_elevation_deg, "radius": c.input_radius, "fov_deg": c.input_fov_deg,
            "object_fraction": getattr(c, "object_fraction", None)}
    with tempfile.TemporaryDirectory(prefix="vantage-serve-upload-") as tmp:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:  # a .bmp, .gif, ... or no extension: as a PNG
            converted = Path(tmp) / f"{path.stem or 'upload'}.png"
            try:
                with Image.open(path) as im:
                    alpha = "A" in im.getbands() or "transparency" in im.info
                    im.convert("RGBA" if alpha else "RGB").save(converted)
            except (OSError, ValueError, SyntaxError) as e:
                raise ServeError(f"{path.name}: cannot read the {fmt} image ({e})") from None
            path = converted
        try:
            return load_input(path, info.resolution, **opts)
        except (ValueError, OSError) as e:  # PreprocessError and DatasetError are ValueErrors
            raise ServeError(str(e)) from None


def benchmark_input(name: str, info: ModelInfo) -> Any:
    """The :class:`~vantage.sampling.inputs.SampleInput` of benchmark object ``name`` (module docstring)."""
    from vantage.data.synthetic import BENCHMARK, SyntheticDataset
    from vantage.sampling.inputs import SampleInput

    digits = name[len(_PREFIX):] if name.startswith(_PREFIX) else ""
    if not digits.isdigit() or not 0 <= int(digits) < BENCHMARK["num_objects"]:
        raise ServeError(f"unknown benchmark object {name!r}; they are {_PREFIX}000000 ... "
                         f"{_PREFIX}{BENCHMARK['num_objects'] - 1:06d}")
    ds = SyntheticDataset(split="benchmark", num_objects=int(digits) + 1, resolution=info.resolution)
    views = ds.load(int(digits))
    note = (f"held-out benchmark object {name}: view 0 of its 24-view ring (elevation 30°, a view every 15°) is "
            f"the input; targets on the ring have ground truth")
    return SampleInput(views, 0, True, "synthetic", views.name, [note])


def prepare_input(info: ModelInfo, image: str | Path | None = None, benchmark: str | None = None) -> Any:
    """The :class:`~vantage.sampling.inputs.SampleInput` of an uploaded file or a benchmark object (one of them)."""
    if image and benchmark:
        raise ServeError("give an image or a benchmark object, not both")
    if image:
        return upload_input(image, info)
    if benchmark:
        return benchmark_input(benchmark, info)
    raise ServeError("no input: upload an image or pick a benchmark object")
