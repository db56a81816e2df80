"""Preprocess a user's photo for a model: mask the object, recentre it, scale it to the training framing,
composite it on the training background and resize it (``vantage preprocess``; ``vantage sample`` does it
by default for image files). See ``docs/preprocess.md``.

* :mod:`~vantage.preprocess.core`: :func:`preprocess_image` (-> ``image (3, R, R)`` in [-1, 1] and the
  parameters used), :func:`reapply_preprocess` (repeat it from those parameters), :func:`describe`.
* :mod:`~vantage.preprocess.mask`: connected components, hole filling and the robust background threshold,
  in numpy.
* :mod:`~vantage.preprocess.matting`: optional matting backends (``rembg``, only with a local model file).
* :mod:`~vantage.preprocess.io`: framing settings from a checkpoint, writing ``<stem>.png``,
  ``<stem>_mask.png`` and ``<stem>.json``.
"""

from vantage.preprocess.core import (
    MASK_SOURCES,
    MAX_SIDE,
    SYNTHETIC_OBJECT_FRACTION,
    NoObjectError,
    PreprocessError,
    PreprocessInfo,
    describe,
    preprocess_image,
    read_image,
    reapply_preprocess,
)
from vantage.preprocess.io import framing_from_config, save_preprocessed
from vantage.preprocess.matting import MATTING_BACKENDS, MattingBackend, register_matting

__all__ = ["preprocess_image", "reapply_preprocess", "describe", "read_image", "PreprocessError", "NoObjectError",
           "PreprocessInfo", "SYNTHETIC_OBJECT_FRACTION", "MAX_SIDE", "MASK_SOURCES", "MATTING_BACKENDS",
           "MattingBackend", "register_matting", "framing_from_config", "save_preprocessed"]
