"""Optional matting backends: a learned model that cuts the object out of a cluttered photo.

A backend is a function ``photo (H, W, 3) uint8 -> alpha (H, W) float in [0, 1]`` registered under a
name with :func:`register_matting`, plus an availability check that says why it cannot run. vantage
ships one, ``rembg`` (U^2-Net and friends, https://github.com/danielgatis/rembg), which is used only
when the ``rembg`` package is installed **and** its model file is already on this machine: vantage
never downloads anything. rembg looks for ``<model>.onnx`` in ``$U2NET_HOME`` (default ``~/.u2net``);
the model is ``$VANTAGE_REMBG_MODEL`` (default ``u2net``). A backend that is not available is an
error that says what is missing (``--matting rembg``), or is skipped with a note (``--matting auto``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MattingBackend", "MATTING_BACKENDS", "register_matting", "get_matting", "rembg_model_file"]


@dataclass(frozen=True)
class MattingBackend:
    """A named matting function and its availability check.

    Attributes:
        name: the ``--matting`` name.
        run: ``photo (H, W, 3) uint8 -> alpha (H, W)`` float in [0, 1].
        unavailable: ``() -> None`` when it can run, else a one-line reason (what to install / where to
            put the model file).
        describe: ``() -> str``: the model used, recorded in the parameters JSON.
    """

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    unavailable: Callable[[], str | None]
    describe: Callable[[], str]


MATTING_BACKENDS: dict[str, MattingBackend] = {}


def register_matting(backend: MattingBackend) -> None:
    """Make ``backend`` available as ``--matting NAME`` (replaces one of the same name)."""
    if backend.name in ("auto", "threshold", "alpha"):
        raise ValueError(f"'{backend.name}' is a built-in mask source, not a matting backend name")
    MATTING_BACKENDS[backend.name] = backend


def get_matting(name: str) -> MattingBackend:
    """The registered backend ``name``; a ``ValueError`` naming the known ones otherwise."""
    if name not in MATTING_BACKENDS:
        raise ValueError(f"unknown matting backend '{name}'; known: {', '.join(MATTING_BACKENDS) or 'none'}")
    return MATTING_BACKENDS[name]


# ------------------------------------------------------------------------------------------------ rembg
def _rembg_model() -> str:
    return os.environ.get("VANTAGE_REMBG_MODEL", "u2net")


def rembg_model_file() -> Path:
    """Where rembg looks for its model: ``$U2NET_HOME/<model>.onnx`` (default ``~/.u2net``)."""
    home = os.environ.get("U2NET_HOME") or os.path.join(os.environ.get("XDG_DATA_HOME", "~"), ".u2net")
    return Path(home).expanduser() / f"{_rembg_model()}.onnx"


def _rembg_unavailable() -> str | None:
    if importlib.util.find_spec("rembg") is None:
        return "the rembg package is not installed (pip install rembg)"
    model = rembg_model_file()
    if not model.is_file():
        return (f"rembg's model file {model} is missing; vantage never downloads: put {model.name} there "
                f"(or set U2NET_HOME to its folder, VANTAGE_REMBG_MODEL to another model name)")
    return None


_SESSIONS: dict[str, object] = {}


def _rembg_run(photo: np.ndarray) -> np.ndarray:
    reason = _rembg_unavailable()
    if reason:
        raise RuntimeError(reason)
    from PIL import Image
    from rembg import new_session, remove

    model = rembg_model_file()
    if str(model) not in _SESSIONS:
        # The file exists (checked above), so rembg loads it instead of fetching it; disabling its checksum
        # test keeps a locally provided file from being replaced by a download.
        os.environ["U2NET_HOME"] = str(model.parent)
        os.environ.setdefault("MODEL_CHECKSUM_DISABLED", "1")
        _SESSIONS[str(model)] = new_session(_rembg_model())
    out = remove(Image.fromarray(photo), session=_SESSIONS[str(model)], only_mask=True)
    return np.asarray(out.convert("L"), dtype=np.float32) / 255.0


register_matting(MattingBackend("rembg", _rembg_run, _rembg_unavailable, lambda: f"rembg:{_rembg_model()}"))
