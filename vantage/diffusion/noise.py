"""Per-sample random draws: results that do not depend on the batch size.

Every sampler in :mod:`vantage.diffusion.samplers` draws its noise through :func:`randn` /
:func:`randn_like`, whose ``generator`` argument may be

- ``None``: the global torch RNG (not reproducible unless the caller seeds it);
- one ``torch.Generator``: a single stream for the whole batch (reproducible for a fixed batch
  size, but sample ``i`` changes when the batch grows);
- a list of ``B`` generators, one per sample: sample ``i`` draws only from ``generator[i]``, so a
  sample's noise (and hence its result) is the same whether it is run alone or in a batch of any
  size. Build such a list with :func:`per_sample_generators`.

Draws happen on each generator's own device and are then moved to the requested device, so a
list of CPU generators gives the same numbers on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["GeneratorLike", "per_sample_generators", "randn", "randn_like", "check_generator"]

GeneratorLike = torch.Generator | Sequence[torch.Generator] | None


def per_sample_generators(
    seeds: Sequence[int] | torch.Tensor, device: str | torch.device = "cpu"
) -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per sample.

    Args:
        seeds: ``B`` integer seeds (a sequence or a 1-D integer tensor).
        device: device of the generators (CPU by default, which makes draws device-independent).

    Returns:
        ``B`` generators, ``gens[i]`` seeded with ``seeds[i]``.
    """
    if isinstance(seeds, torch.Tensor):
        if seeds.ndim != 1 or seeds.is_floating_point():
            raise ValueError(f"seeds must be a 1-D integer tensor, got dtype {seeds.dtype}, shape {tuple(seeds.shape)}")
        seeds = seeds.tolist()
    gens = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"seeds must be integers, got {s!r} of type {type(s).__name__}")
        g = torch.Generator(device=device)
        g.manual_seed(s)
        gens.append(g)
    return gens


def check_generator(generator: GeneratorLike, batch: int) -> None:
    """Raise a clear error unless ``generator`` is None, a Generator, or ``batch`` Generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, Sequence) and not isinstance(generator, str | bytes):
        if len(generator) != batch:
            raise ValueError(
                f"got a list of {len(generator)} generators for a batch of {batch} samples; "
                "pass exactly one generator per sample (see per_sample_generators) or a single generator"
            )
        for g in generator:
            if not isinstance(g, torch.Generator):
                raise TypeError(f"generator list must hold torch.Generator objects, got {type(g).__name__}")
        return
    raise TypeError(
        f"generator must be None, a torch.Generator or a list of torch.Generator, got {type(generator).__name__}"
    )


def randn(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Standard normal tensor of ``shape`` ``(B, ...)``.

    With a list of generators, row ``i`` (shape ``shape[1:]``) is drawn from ``generator[i]``
    alone, so it does not depend on ``B``. Draws are made on the generator's device and moved to
    ``device``.
    """
    shape = tuple(int(s) for s in shape)
    if generator is None:
        return torch.randn(shape, dtype=dtype, device=device)
    if isinstance(generator, torch.Generator):
        out = torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)
        return out.to(device) if device is not None else out
    if len(shape) == 0:
        raise ValueError("a list of per-sample generators needs a shape with a batch dimension, got shape ()")
    check_generator(generator, shape[0])
    rows = [torch.randn(shape[1:], generator=g, dtype=dtype, device=g.device) for g in generator]
    if device is not None:
        rows = [r.to(device) for r in rows]
    if not rows:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.stack(rows)


def randn_like(x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
    """Standard normal tensor with the shape, dtype and device of ``x`` ``(B, ...)``; see :func:`randn`."""
    return randn(x.shape, generator, dtype=x.dtype, device=x.device)
