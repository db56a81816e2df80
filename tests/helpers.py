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
