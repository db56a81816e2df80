"""``vantage convert``: released weights of a seed method -> a vantage checkpoint run folder.

    vantage convert viewfusion PATH --out RUN_DIR [--preset viewfusion-nmr64] [--set FIELD=VALUE ...]
    vantage convert vivid STATE_DICT --out RUN_DIR [--preset vivid-re10k64] [--set FIELD=VALUE ...]
                   [--overwrite]

``PATH`` is a ``.pt``/``.pth`` file (read with ``torch.load(weights_only=True)``: a state dict, the
reference wrapper's state dict, or its training checkpoint ``{"model": ..., "it": ...}``) or a
``.safetensors`` state dict. The UNet's structure (channels, multipliers, res blocks, attention
levels, embedding sizes, 6 or 9 input channels) is read from the tensor shapes; what shapes cannot
tell (resolution, GroupNorm groups, heads, schedules) comes from ``--preset`` and ``--set``. The
model is set to ``input_range="unit"`` (the released weights see [0, 1] images) and
``clip_x0="model"`` (the reference's clamp) unless ``--set`` says otherwise.

Writes ``RUN_DIR/config.json`` and ``RUN_DIR/checkpoints/step-000000/`` (``config.json``,
``model.safetensors``, ``training_state.pt``), which :func:`vantage.train.checkpoint.load_checkpoint`
and ``vantage sample --checkpoint RUN_DIR`` read. A non-empty RUN_DIR is refused without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from vantage.cli.formatting import HelpFormatter

__all__ = ["register", "cmd_convert", "convert_viewfusion", "read_weights", "check_out", "preset_values",
           "explicit_fields", "merge_inferred", "write_converted_run"]

EPILOG = """\
examples:
  vantage convert viewfusion best_model_all.pt --out runs/viewfusion-nmr
  vantage convert viewfusion unet.safetensors --out runs/vf --set resolution=32 --set norm_groups=8
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", formatter_class=HelpFormatter, epilog=EPILOG, description=__doc__,
                       help="turn released weights of a seed method into a vantage checkpoint")
    p.add_argument("method", choices=["viewfusion", "vivid"],
                   help="whose weights: viewfusion (Spiegl et al. 2024) or vivid (Elata et al. 2024; a state dict, "
                        "see docs/vivid.md)")
    p.add_argument("path", type=Path, help="weights file: .pt / .pth (torch.load, weights_only) or .safetensors")
    p.add_argument("--out", required=True, type=Path, help="run folder to write (new or empty)")
    p.add_argument("--preset", default=None, help="preset giving what the weights cannot tell "
                                                  "(default: viewfusion-nmr64 / vivid-re10k64, the released models'; "
                                                  "vivid-uncond or vivid-sr256 for VIVID's guide or SR weights)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                   help="a config field of the method (JSON or plain text), e.g. resolution=32, norm_groups=8")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.set_defaults(func=cmd_convert)


def read_weights(path: Path) -> object:
    """The object stored in ``path`` (a safetensors dict, or ``torch.load(weights_only=True)``)."""
    from vantage.cli.main import UserError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
        how = "safetensors" if path.suffix == ".safetensors" else "torch.load with weights_only=True"
        raise UserError(f"cannot read {path} as weights ({how}): {e}") from None


def check_out(out: Path, overwrite: bool) -> Path:
    """``out`` as a Path; OutputExistsError when it exists and is not an empty folder, unless ``overwrite``."""
    from vantage.outputs import OutputExistsError

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"--out {out} exists and is not empty; choose a new folder or pass --overwrite")
    return out


def preset_values(preset: str, method: str) -> dict:
    """A copy of the field values of ``preset``; UserError (naming the method's presets) unless it is one of
    ``method``'s."""
    import vantage.methods as vm
    from vantage.cli.main import UserError

    presets = vm.all_presets()
    if preset not in presets or presets[preset][0] != method:
        known = [p for p, v in presets.items() if v[0] == method]
        raise UserError(f"--preset {preset} is not a {method} preset; choose one of {', '.join(known)}")
    return dict(presets[preset][1])


def explicit_fields(overrides: list[str] | None, method: str) -> dict:
    """The ``--set FIELD=VALUE`` overrides of ``method``'s config as a dict; UserError for a bad one."""
    import vantage.methods as vm
    from vantage.cli.main import UserError

    try:
        return vm.parse_overrides(overrides or [], vm.method_class(method).config_class)
    except ValueError as e:
        raise UserError(str(e)) from None


def merge_inferred(values: dict, inferred: dict, explicit: dict, *, path: Path, preset: str, log=print) -> None:
    """Update ``values`` with the fields ``inferred`` from the weights' shapes: a UserError when ``--set`` says
    otherwise (``explicit``), a note when the preset's (or ``values``') field differs."""
    from vantage.cli.main import UserError

    for key, value in inferred.items():
        if key in explicit and explicit[key] != value:
            raise UserError(f"--set {key}={explicit[key]!r} contradicts the weights in {path}, which have "
                            f"{key}={value!r}")
        if key in values and values[key] != value:
            log(f"note: the weights have {key}={value!r} (preset {preset}: {values[key]!r}); using the weights'")
    values.update(inferred)


def write_converted_run(method, path: Path, out: Path, *, preset: str, ignored: list[str]) -> Path:
    """Write the run folder ``out`` (``config.json`` naming the source file, its sha256 and the ``ignored`` keys)
    and its step-0 checkpoint of ``method``; returns the checkpoint folder."""
    from vantage import __version__
    from vantage.cli.main import UserError
    from vantage.train.checkpoint import RUN_FORMAT, atomic_write_json, find_checkpoint, save_checkpoint

    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    run_cfg = {"format": RUN_FORMAT, "vantage_version": __version__, **method.to_json(), "preset": preset,
               "converted_from": {"path": str(path), "sha256": sha, "ignored_keys": ignored}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", run_cfg)
    ckpt = save_checkpoint(out, 0, config={**run_cfg, "step": 0, "images": 0},
                           weights=method.state_dict(), training_state={"step": 0, "converted": True})
    if find_checkpoint(out) != ckpt:
        raise UserError(f"{out} holds newer checkpoints than the converted one ({find_checkpoint(out)}); "
                        f"use an empty --out")
    return ckpt


def convert_viewfusion(path: Path, out: Path, *, preset: str | None = None, overrides: list[str] | None = None,
                       overwrite: bool = False, log=print) -> Path:
    """Convert reference ViewFusion weights at ``path`` into the run folder ``out``; returns the checkpoint folder."""
    import vantage.methods as vm
    from vantage.cli.main import UserError
    from vantage.methods.viewfusion_convert import ReferenceKeyError

    preset = preset or "viewfusion-nmr64"
    values = preset_values(preset, "viewfusion")
    cls = vm.method_class("viewfusion")
    out = check_out(out, overwrite)
    explicit = explicit_fields(overrides, "viewfusion")
    values = {**values, "input_range": "unit", "clip_x0": "model", "prediction": "eps", **explicit}  # released: ε
    obj = read_weights(path)
    try:
        inferred = cls.reference_config_fields(obj, int(values.get("resolution", 64)), where=str(path))
        merge_inferred(values, inferred, explicit, path=path, preset=preset, log=log)
        method = vm.build_method("viewfusion", values)
        ignored = method.load_reference_state(obj, where=str(path))
    except ReferenceKeyError as e:
        raise UserError(str(e)) from None
    except ValueError as e:
        raise UserError(f"cannot build a ViewFusion model for {path}: {e}") from None
    if ignored:
        log(f"ignored {path.name} entries that are not UNet weights: {', '.join(ignored[:8])}"
            + (" ..." if len(ignored) > 8 else ""))
    if method.config.angle_mode == "relative":
        log("note: 9 input channels, converted as angle_mode='relative' with channels [reference, view, noisy "
            "target]; our relative angle is wrap(target − reference azimuth) (see docs/viewfusion.md)")
    ckpt = write_converted_run(method, path, out, preset=preset, ignored=ignored)
    n = sum(p.numel() for p in method.parameters())
    log(f"converted {path} -> {ckpt} ({n:,} parameters, {method.config.resolution}x{method.config.resolution}, "
        f"input_range={method.config.input_range}, angle_mode={method.config.angle_mode})")
    return ckpt


def cmd_convert(args: argparse.Namespace) -> int:
    if args.method == "vivid":
        from vantage.methods.vivid_convert import convert_vivid

        convert_vivid(args.path, args.out, preset=args.preset, overrides=args.overrides, overwrite=args.overwrite)
        return 0
    convert_viewfusion(args.path, args.out, preset=args.preset, overrides=args.overrides, overwrite=args.overwrite)
    return 0
