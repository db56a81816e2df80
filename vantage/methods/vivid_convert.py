"""Reference VIVID weights -> a :class:`~vantage.methods.vivid.VIVID` checkpoint, or a
:class:`~vantage.methods.vivid_sr.VIVIDSR` one for the super-resolution network (``vantage convert vivid``).

The authors' network (apple/ml-vivid, ``NVPrecond`` in ``training/models.py``) has the parameters
``encoder.*`` (the source-view UNet; absent in the unconditional guide), ``unet.*`` (the denoiser),
``logvar_fourier.{freqs,phases}`` and ``logvar_linear.weight``. Our modules are built to the same structure
and block names (EDM2's Fig. 21), so the map is a prefix change:

* ``encoder.K`` -> ``net.encoder.K``, ``unet.K`` -> ``net.unet.K``;
* ``logvar_fourier.freqs``/``.phases`` -> ``logvar.freqs``/``.phases``, ``logvar_linear.weight`` -> ``logvar.weight``.

The structure (resolution, widths, blocks, attention levels, ``extra_attn``, embedding sizes, conditional or
not) is read from the tensor names and shapes (:func:`infer_vivid_fields`); the attention head width
cannot be and comes from the preset (64 for the released models) or ``--set channels_per_head=N``. The
camera statistics default to the RealEstate10K ones rescaled to the weights' resolution
(:func:`~vantage.methods.vivid_camera.reference_camera_statistics`).

**The super-resolution network** (the reference's ``NVPrecond(super_res=True)``, released as ``vivid-sr.pkl``)
has the same keys; it is told by its denoiser's input conv ``unet.enc.<R>x<R>_conv.weight``, which takes 7
channels (the scaled noisy target, the low-resolution target upsampled to ``R``, in that order, and the
constant one) instead of 4 (:func:`reference_kind`). It becomes a :class:`~vantage.methods.vivid_sr.VIVIDSR`
(``vivid-sr``, preset ``vivid-sr256`` by default), whose denoiser concatenates its low-resolution input in the
same order, with the same prefix map. What the shapes cannot tell is set to the reference code's values unless
``--set``: heads of 32 in the denoiser (hard-coded in its ``SRXAttnUNet``) and of 64 in the encoder (EDM2's
default, which its SR configuration keeps: ``encoder_channels_per_head``), ``low_resolution = R // 4`` (its
training makes the low-resolution target at a quarter of ``R``). Checked against the reference's outputs in
``tests/test_vivid_sr.py`` (``tests/data/vivid_sr_reference.*``).

Not supported (a clear error): the reference's epipolar attention bias (``epipolar_mixing``: vantage's own
``epipolar_bias`` is a different function, :mod:`vantage.nn.epipolar`, not weight-compatible), depth inputs and
warped depth coordinates.

**Getting a state dict from the released pickles.** The released ``vivid-base.pkl`` / ``vivid-uncond.pkl``
are Python pickles of the reference classes; vantage never unpickles files. With the authors' code on the
path, on a machine where you trust the file, save the network's tensors once::

    python -c "import pickle; from safetensors.torch import save_file; \\
    d = pickle.load(open('vivid-base.pkl', 'rb')); net = d.get('ema', d.get('net')); \\
    save_file({k: v.float().contiguous() for k, v in net.state_dict().items()}, 'vivid-base.safetensors')"

then ``vantage convert vivid vivid-base.safetensors --out runs/vivid-base`` (and the guide likewise, then
``--set guide_checkpoint=runs/vivid-uncond`` on the main model; ``vivid-sr.pkl`` likewise, converted to a
``vivid-sr`` run for ``vantage sample --sr-checkpoint``). Checked against the reference's outputs in
``tests/test_vivid.py`` (fixtures ``vivid_precond`` and ``vivid_precond_extra``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from vantage.state_dicts import state_dict_mismatch, unwrap_state_dict

__all__ = ["ReferenceKeyError", "unwrap_reference_state", "reference_key", "reference_kind", "infer_vivid_fields",
           "map_reference_state", "convert_vivid"]

_PREFIXES = ("module.", "state.", "ema.", "net.")
_LOGVAR = {"logvar_fourier.freqs": "logvar.freqs", "logvar_fourier.phases": "logvar.phases",
           "logvar_linear.weight": "logvar.weight"}
# the reference SR network's head widths (shapes cannot tell them): its SRXAttnUNet denoiser hard-codes 32, its
# encoder keeps EDM2's Block default of 64
SR_CHANNELS_PER_HEAD = 32
SR_ENCODER_CHANNELS_PER_HEAD = 64


class ReferenceKeyError(ValueError):
    """Reference weights that do not fit VIVID (names the keys)."""


def unwrap_reference_state(obj: object, where: str = "state dict") -> tuple[dict[str, Tensor], list[str]]:
    """``(state, ignored_keys)``: the network's tensors from a state dict (or ``{"ema"|"net"|"model"|
    "state_dict": state}``), with ``module.``/``state.``/``ema.``/``net.`` prefixes stripped."""
    return unwrap_state_dict(obj, wrappers=("ema", "net", "model", "state_dict"), prefixes=_PREFIXES, where=where,
                             error=ReferenceKeyError)


def reference_key(key: str) -> str:
    """A reference key -> ours (see the module docstring)."""
    if key in _LOGVAR:
        return _LOGVAR[key]
    if key.startswith(("encoder.", "unet.")):
        return "net." + key
    return key


def _need(state: Mapping[str, Tensor], key: str, where: str) -> Tensor:
    if key not in state:
        raise ReferenceKeyError(f"{where}: key '{key}' is missing; is this a VIVID (NVPrecond) state dict? "
                                f"(first keys: {sorted(state)[:6]})")
    return state[key]


def _input_conv(state: Mapping[str, Tensor], where: str) -> tuple[str, int]:
    """``(key, R)`` of the denoiser's input conv ``unet.enc.<R>x<R>_conv.weight``."""
    conv = [m for k in state if (m := re.fullmatch(r"unet\.enc\.(\d+)x\1_conv\.weight", k))]
    if len(conv) != 1:
        raise ReferenceKeyError(f"{where}: no single 'unet.enc.<R>x<R>_conv.weight'; is this a VIVID state dict? "
                                f"(first keys: {sorted(state)[:6]})")
    return conv[0][0], int(conv[0][1])


def reference_kind(state: Mapping[str, Tensor], where: str = "state dict") -> str:
    """``"vivid"`` (base model or unconditional guide) or ``"vivid-sr"`` (the super-resolution network), told by
    the input channels of the denoiser's first conv: 3 (the noisy target) or 6 (the noisy target and the upsampled
    low-resolution target), plus the constant one; anything else (depth or warped-coordinate inputs) is a
    :class:`ReferenceKeyError` naming the key."""
    key, _ = _input_conv(state, where)
    cin = int(state[key].shape[1]) - 1
    if cin == 3:
        return "vivid"
    if cin == 6:
        return "vivid-sr"
    raise ReferenceKeyError(f"{where}: the denoiser takes {cin} input channels ({key} of shape "
                            f"{tuple(state[key].shape)}); supported are 3 (the noisy image: base model or guide) and "
                            f"6 (noisy image and low-resolution image: the super-resolution model), not depth "
                            f"inputs or warped depth coordinates")


def infer_vivid_fields(state: Mapping[str, Tensor], where: str = "state dict") -> dict:
    """:class:`~vantage.methods.vivid.VIVIDConfig` fields the reference tensors determine (the same for the
    super-resolution network, whose extra input channels :func:`reference_kind` tells)."""
    if any("epipolar_mixing" in k for k in state):
        raise ReferenceKeyError(f"{where}: holds the reference's epipolar attention bias (epipolar_mixing keys); "
                                f"vantage has its own epipolar option (epipolar_bias, a different learned function of "
                                f"the distance), which is not weight-compatible, so these weights cannot be converted")
    _, res = _input_conv(state, where)
    if reference_kind(state, where) == "vivid-sr" and not any(k.startswith("encoder.") for k in state):
        raise ReferenceKeyError(f"{where}: a super-resolution network (6 input channels) without encoder.* keys; "
                                f"the SR stage needs its source-view encoder")
    enc_cin = state.get(f"encoder.enc.{res}x{res}_conv.weight")
    if enc_cin is not None and int(enc_cin.shape[1]) != 4:
        raise ReferenceKeyError(f"{where}: the encoder takes {int(enc_cin.shape[1]) - 1} channels; depth inputs are "
                                f"not supported (3: the source image)")
    enc_blocks = sorted({m[1] for k in state if (m := re.match(r"unet\.enc\.(\d+x\d+_\w+?)\.", k))})
    sides = sorted({int(n.split("x")[0]) for n in enc_blocks}, reverse=True)
    widths = [int(_need(state, f"unet.enc.{s}x{s}_block0.conv_res1.weight", where).shape[0]) for s in sides]
    if [res >> i for i in range(len(sides))] != sides:
        raise ReferenceKeyError(f"{where}: encoder levels {sides} are not {res}, {res // 2}, ...")
    mc = math.gcd(*widths)
    num_blocks = sum(1 for n in enc_blocks if re.fullmatch(rf"{res}x{res}_block\d+", n))

    def has_attn(path: str, name: str) -> bool:
        return f"unet.{path}.{name}.attn_qkv.weight" in state

    attn, extra = [], set()
    for level, s in enumerate(sides):
        enc = [has_attn("enc", f"{s}x{s}_block{i}") for i in range(num_blocks)]
        dec = [has_attn("dec", f"{s}x{s}_block{i}") for i in range(num_blocks + 1)]
        if all(enc) and all(dec):
            attn.append(s)
        elif level != 0:
            extra |= {i for i, a in enumerate(enc) if a} | {num_blocks - i for i, a in enumerate(dec) if a}
    if len(extra) > 1:
        raise ReferenceKeyError(f"{where}: attention at irregular blocks (extra_attn would be {sorted(extra)})")
    cnoise = int(_need(state, "unet.emb_fourier.freqs", where).numel())
    cemb = int(_need(state, "unet.emb_noise.weight", where).shape[0])
    label = state.get("unet.emb_label.weight")
    if label is None or int(label.shape[1]) != 20:
        raise ReferenceKeyError(f"{where}: expected the 20-D camera label (unet.emb_label.weight of shape (E, 20)), "
                                f"got {None if label is None else tuple(label.shape)}")
    for c, what in ((cnoise, "noise features"), (cemb, "embedding")):
        if c % mc:
            raise ReferenceKeyError(f"{where}: {what} width {c} is not a multiple of the base width {mc}")
    return {"resolution": res, "model_channels": mc, "channel_mult": tuple(w // mc for w in widths),
            "channel_mult_noise": None if cnoise == widths[0] else cnoise // mc,
            "channel_mult_emb": None if cemb == max(widths) else cemb // mc, "num_blocks": num_blocks,
            "attn_resolutions": tuple(attn), "extra_attn": next(iter(extra)) if extra else None,
            "logvar_channels": int(_need(state, "logvar_fourier.freqs", where).numel()),
            "conditional": any(k.startswith("encoder.") for k in state), "camera": "vector"}


def map_reference_state(state: Mapping[str, Tensor], expected: Mapping[str, Tensor],
                        where: str = "state dict") -> dict[str, Tensor]:
    """Reference keys renamed (:func:`reference_key`) and checked against ``expected`` (the method's
    ``state_dict()``); :class:`ReferenceKeyError` names every missing, unexpected or mis-shaped key."""
    mapped = {reference_key(k): v for k, v in state.items()}
    origin = {reference_key(k): k for k in state}
    problems = state_dict_mismatch(expected, mapped, name=lambda k: f"{origin[k]} (-> {k})", limit=12)
    if problems:
        raise ReferenceKeyError(f"{where}: the weights do not fit the VIVID network ({problems})")
    return {k: mapped[k].float() for k in expected}


def convert_vivid(path: Path, out: Path, *, preset: str | None = None, overrides: list[str] | None = None,
                  overwrite: bool = False, log=print) -> Path:
    """Convert reference VIVID weights at ``path`` into the run folder ``out``; returns the checkpoint folder."""
    import vantage.methods as vm
    from vantage.cli.convert import (
        check_out,
        explicit_fields,
        merge_inferred,
        preset_values,
        read_weights,
        write_converted_run,
    )
    from vantage.cli.main import UserError
    from vantage.methods.vivid_camera import reference_camera_statistics

    out = check_out(out, overwrite)
    state, ignored = unwrap_reference_state(read_weights(path), str(path))
    try:
        kind = reference_kind(state, str(path))
        inferred = infer_vivid_fields(state, str(path))
    except ReferenceKeyError as e:
        raise UserError(str(e)) from None
    sr = kind == "vivid-sr"
    if preset is None:
        preset = "vivid-sr256" if sr else "vivid-re10k64" if inferred["conditional"] else "vivid-uncond"
    preset_method = vm.all_presets().get(preset, (kind,))[0]
    if preset_method in ("vivid", "vivid-sr") and preset_method != kind:
        key, _ = _input_conv(state, str(path))
        what = ("the super-resolution network (6 input channels" if sr else
                "a base model or guide (3 input channels, not the super-resolution network's 6")
        raise UserError(f"--preset {preset} is a {preset_method} preset, but {path} holds {what}: {key} has shape "
                        f"{tuple(state[key].shape)}); choose a {kind} preset or leave --preset out")
    values = preset_values(preset, kind)
    explicit = explicit_fields(overrides, kind)
    merge_inferred(values, inferred, explicit, path=path, preset=preset, log=log)
    if "camera_mean" not in explicit and "camera_std" not in explicit:
        values["camera_mean"], values["camera_std"] = reference_camera_statistics(inferred["resolution"])
    if sr:  # what the reference's SR code fixes and the shapes cannot tell
        values.update(channels_per_head=SR_CHANNELS_PER_HEAD, encoder_channels_per_head=SR_ENCODER_CHANNELS_PER_HEAD,
                      low_resolution=max(1, inferred["resolution"] // 4))
    values.update(explicit)
    try:
        method = vm.build_method(kind, values)
        method.load_state_dict(map_reference_state(state, method.state_dict(), where=str(path)))
    except ReferenceKeyError as e:
        raise UserError(f"{e} (is channels_per_head right? the shapes cannot tell it; --set channels_per_head=N)"
                        ) from None
    except ValueError as e:
        raise UserError(f"cannot build a {'VIVID SR' if sr else 'VIVID'} model for {path}: {e}") from None
    ckpt = write_converted_run(method, path, out, preset=preset, ignored=ignored)
    c = method.config
    n = sum(p.numel() for p in method.parameters())
    if sr:
        what = (f"super-resolution {c.low_resolution} -> {c.resolution}, channels_per_head={c.channels_per_head}, "
                f"encoder_channels_per_head={c.encoder_channels_per_head}")
    else:
        what = (f"{c.resolution}x{c.resolution}, {'conditional' if c.conditional else 'unconditional guide'}, "
                f"channels_per_head={c.channels_per_head}")
    log(f"converted {path} -> {ckpt} ({n:,} parameters, {what})")
    return ckpt
