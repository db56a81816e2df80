"""The checkpoints ``vantage serve`` runs: which one, what its config says, which strategy it samples with.

* :func:`default_checkpoint`: the given one, else the shipped default model
  (:data:`vantage.cli.model_demo.DEFAULT_MODEL_DIR`), else a :class:`ServeError` saying to give ``--checkpoint``.
* :func:`checkpoint_folder`: a run folder's newest checkpoint, a checkpoint folder, or the folder of a file in it.
* :func:`read_model_info`: :class:`ModelInfo` from ``config.json`` alone (the network is not built): the method,
  its resolution, its sampling defaults and the camera assumed for a photo.
* :func:`choose_strategy`: the strategy, its options and the generation order, by the selection ``vantage sample``
  uses (:mod:`vantage.sampling.strategy_choice`; ``auto``: the method's own strategy, ViewFusion's composed
  strategy for ViewFusion, 3DiM's stochastic conditioning for most others).

:class:`ServeError` is a problem that the person using the page can fix; the page shows its message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vantage.sampling.strategy_choice import STRATEGY_NAMES, composes, default_strategy_name

__all__ = ["ServeError", "ModelInfo", "default_checkpoint", "checkpoint_folder", "read_model_info",
           "choose_strategy", "STRATEGY_CHOICES"]

STRATEGY_CHOICES = ("auto", *STRATEGY_NAMES)


class ServeError(Exception):
    """A problem the person using the page can fix; the message is shown on the page."""


def default_checkpoint(given: str | Path | None = None) -> Path:
    """The checkpoint to serve: ``given``, else the shipped default model; :class:`ServeError` for neither."""
    from vantage.cli.model_demo import DEFAULT_MODEL_DIR, default_model_available

    if given is not None and str(given).strip():
        return Path(str(given).strip()).expanduser()
    if default_model_available():
        return DEFAULT_MODEL_DIR
    raise ServeError(f"no default model ({DEFAULT_MODEL_DIR} holds none): give --checkpoint RUN_DIR, a "
                     f"run folder of `vantage train` or a checkpoint folder (config.json + model.safetensors)")


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint folder of ``path``: itself (it holds ``model.safetensors``), a file in it, or a run
    folder's newest checkpoint. :class:`ServeError` naming the path otherwise."""
    from vantage.train.checkpoint import find_checkpoint

    p = Path(path).expanduser()
    if not p.exists():
        raise ServeError(f"checkpoint path does not exist: {p}")
    if p.is_file():
        p = p.parent
    if (p / "model.safetensors").is_file():
        return p
    found = find_checkpoint(p)
    if found is None:
        raise ServeError(f"{p}: neither a run folder with a checkpoint (checkpoints/step-NNNNNN) nor a checkpoint "
                         f"folder (config.json + model.safetensors)")
    return found


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint's ``config.json`` says (read without building the network).

    Attributes:
        folder: the checkpoint folder. method: the method's name. config: its config dataclass.
        composing: ViewFusion composes its whole set (its default strategy is ``composed``).
        supports_guidance: whether classifier-free guidance applies (False for ViewFusion).
        default_strategy: the strategy ``auto`` means
            (:func:`~vantage.sampling.strategy_choice.default_strategy_name`).
    """

    folder: Path
    method: str
    config: Any
    composing: bool
    supports_guidance: bool
    default_strategy: str = "stochastic"

    @property
    def resolution(self) -> int:
        return int(self.config.resolution)

    def describe(self) -> str:
        c = self.config
        opts = "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}"
                       for k, v in (getattr(c, "default_sampler_options", None) or {}).items())
        return (f"{self.method}, {c.resolution}x{c.resolution} px, checkpoint {self.folder}; defaults: sampler "
                f"{c.default_sampler}{opts}, {c.default_steps} steps, guidance {c.default_guidance:g}, strategy "
                f"{self.default_strategy}")


def read_model_info(path: str | Path) -> ModelInfo:
    """:class:`ModelInfo` of a run or checkpoint folder; :class:`ServeError` for anything unreadable."""
    from vantage.methods import method_class
    from vantage.methods.base import config_from_dict

    folder = checkpoint_folder(path)
    cfg_file = folder / "config.json"
    try:
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
        cls = method_class(data["method"])
        config = config_from_dict(cls.config_class, data["config"], where=str(cfg_file))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, ImportError) as e:
        raise ServeError(f"{cfg_file}: not a readable vantage checkpoint config ({type(e).__name__}: {e})") from None
    return ModelInfo(folder, cls.name, config, composes(cls), bool(getattr(cls, "supports_guidance", True)),
                     default_strategy_name(cls))


def choose_strategy(info: ModelInfo, method: Any, name: str | None,
                    guidance: float | None = None) -> tuple[Any, str, dict, str]:
    """``(strategy for autoregressive_orbit, its name, its options, generation order)`` of strategy ``name``
    (``auto``: the model's own) at ``guidance``, as :func:`vantage.sampling.strategy_choice.choose_strategy`
    selects it for one input view; the composed strategy keeps its mean weight maps for the page."""
    from vantage.sampling.strategy_choice import choose_strategy as choose

    name = (name or "auto").strip().lower()
    if name not in STRATEGY_CHOICES:
        raise ServeError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_CHOICES)}")
    name = info.default_strategy if name == "auto" else name
    try:
        c = choose(method, name, guidance=guidance, weights="mean" if name == "composed" else None, input_views=1,
                   names={"strategy": "the strategy", "guidance": "the guidance"})
    except ValueError as e:
        raise ServeError(str(e)) from None
    return c.strategy, c.name, c.options, c.order
