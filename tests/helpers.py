"""Helpers shared by the method tests (tiny models on toy data)."""

from __future__ import annotations

import torch

from vantage.data.pairs import PairBatch, PairDataset, PairSampler, collate_pairs
from vantage.data.testing import ToyDataset


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Perturb every parameter by N(0, std²) noise (zero-initialised output layers would make a fresh
    network's output 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def pair_batch(n: int = 4, seed: int = 0, res: int = 16, sampler: PairSampler | None = None) -> PairBatch:
    """A collated batch of ``n`` training pairs from ``n`` toy scenes of 6 views at ``res`` px (default sampler:
    one random conditioning view)."""
    ds = ToyDataset(num_scenes=n, num_views=6, resolution=res, seed=seed)
    pairs = PairDataset(ds, sampler or PairSampler(min_cond=1, max_cond=1, mode="random"), seed=seed)
    return collate_pairs([pairs[i] for i in range(n)])


#: a minimal VIVID config (16 px) for fast tests
VIVID_TINY = dict(resolution=16, model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,),
                  extra_attn=None, channels_per_head=8, logvar_channels=16, default_steps=2, preview_steps=2,
                  preview_count=2, input_elevation_deg=30.0, input_radius=2.5, input_fov_deg=40.0)


#: :data:`VIVID_TINY` as ``vantage train`` arguments
VIVID_TINY_SET = [f"--set={k}={list(v) if isinstance(v, tuple) else ('null' if v is None else v)}"
                  for k, v in VIVID_TINY.items()]


def tiny_vivid(seed: int = 0, **overrides):
    """A :data:`VIVID_TINY` model in eval mode with non-zero gains (the output and embedding gains start at 0)."""
    from vantage.methods import build_method

    torch.manual_seed(seed)
    m = build_method("vivid", {**VIVID_TINY, **overrides})
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gain"):
                p.fill_(0.7)
    return m.eval()


def ring_pair(b: int = 2, res: int = 16):
    """``(source, target)`` :class:`Cameras` ``(b,)`` on a ring around the origin: a real baseline and rotation."""
    from vantage.cameras import Cameras, intrinsics_from_fov, look_at

    az = torch.linspace(0, 2.0, 2 * b).reshape(2, b)
    eyes = torch.stack([2.5 * az.cos(), 2.5 * az.sin(), torch.full_like(az, 1.2)], -1)
    K = intrinsics_from_fov(40.0, res)
    return Cameras(look_at(eyes[0]), K, res, res), Cameras(look_at(eyes[1]), K, res, res)


def load_bench_script(name: str):
    """The module ``bench/<name>.py`` (bench scripts are not a package), imported fresh."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def save_tiny_run(folder, name: str, overrides: dict, scale: float = 0.02, seed: int = 0):
    """A run folder as the trainer writes it (checkpoint ``step-000001``) holding ``build_method(name, overrides)``
    with weights perturbed by ``scale`` (not all-zero outputs; 0 keeps the initialisation). Returns ``folder``."""
    from vantage.methods import build_method
    from vantage.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    m = build_method(name, overrides)
    if scale:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * scale)
    save_checkpoint(folder, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    return folder


#: a GeNVS of about 0.1M parameters (16 px); a training step takes a few tens of ms on a CPU
GENVS_TINY = dict(resolution=16, encoder_ch=8, encoder_ch_mult=(1, 2), volume_channels=4, volume_depth=8,
                  volume_resolution=8, mlp_hidden=16, feature_channels=6, samples_stratified=6, samples_importance=6,
                  render_resolution=8, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2,
                  norm_groups=4, default_sampler="euler", default_steps=2, preview_steps=2, preview_count=2)


def tiny_genvs(**over):
    """A tiny GeNVS (:data:`GENVS_TINY` with ``over``), built after ``torch.manual_seed(0)``."""
    from vantage.methods import build_method

    torch.manual_seed(0)
    return build_method("genvs", {**GENVS_TINY, **over})


def view_set(images: torch.Tensor, cams, valid: torch.Tensor):
    """A :class:`~vantage.data.views.ViewSet` of ``images (B, N, 3, H, W)``, cameras ``(B, N)``, ``valid (B, N)``."""
    from vantage.data.views import ViewSet

    return ViewSet(images=images, cameras=cams, valid=valid, view_ids=torch.zeros_like(valid, dtype=torch.long))


def genvs_batch(n: int = 2, seed: int = 0, res: int = 16, model=None) -> PairBatch:
    """:func:`pair_batch` with the pair sampler of ``model`` (default: :func:`tiny_genvs`)."""
    return pair_batch(n, seed, res, (model or tiny_genvs()).pair_sampler())
