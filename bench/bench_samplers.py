"""Sampler benchmarks: overhead outside the network, NFE per sampler, and quality vs NFE.

(a) Overhead: a ~1M-parameter conv UNet (GroupNorm + SiLU, one down/up level, σ embedding) behind
    the EDM adapter, 64×64 RGB, batch 4, CPU. For each sampler: wall time of a sampling run, time
    inside the network (a timing wrapper around its forward) and inside the whole denoiser
    (network + EDM preconditioning); "outside" = sampler bookkeeping, noise draws and updates.
    Target: < 2 % of the run outside the network.
(b) NFE per sampler for n steps (counted with ``CountingDenoiser``).
(c) Quality vs NFE on the analytic mixture of 4 Gaussians in 8-D (the k-diffusion fixture's
    data, std 0.3): 2000 samples from x = 80·z on a Karras schedule (σ 0.002…80, ρ = 7); the
    Wasserstein-2 distance between Gaussian fits of the samples and of the true mixture (its
    exact mean and covariance). The floor row is 2000 exact draws from the mixture.

    python bench/bench_samplers.py                 # all three, 2 threads (about 1 minute)
    python bench/bench_samplers.py --only quality --samples 4000
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time

import numpy as np
import torch
from scipy import linalg
from torch import nn

from vantage.diffusion.denoisers import EDMDenoiser
from vantage.diffusion.samplers import SAMPLERS, CountingDenoiser, get_sampler
from vantage.diffusion.schedules import karras_sigmas

SECOND_ORDER = ("heun", "dpm_2")


# --------------------------------------------------------------------------- (a) overhead
class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int = 8) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.n2, self.c2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(nn.functional.silu(self.n1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.c2(nn.functional.silu(self.n2(h)))


class TinyUNet(nn.Module):
    """``net(x (B,3,H,W), c_noise (B,), cond) -> (B,3,H,W)``: 64 channels at full resolution,
    128 at half; about 1.0M parameters."""

    def __init__(self, ch: int = 64, ch2: int = 128, emb: int = 128) -> None:
        super().__init__()
        self.freqs = nn.Parameter(torch.randn(emb // 2) * 4, requires_grad=False)
        self.emb = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.enc1 = ResBlock(ch, ch, emb)
        self.down = nn.Conv2d(ch, ch2, 3, stride=2, padding=1)
        self.mid1, self.mid2 = ResBlock(ch2, ch2, emb), ResBlock(ch2, ch2, emb)
        self.up = nn.Conv2d(ch2, ch, 3, padding=1)
        self.dec1 = ResBlock(2 * ch, ch, emb)
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: object = None) -> torch.Tensor:
        f = c_noise.float()[:, None] * self.freqs[None]
        e = self.emb(torch.cat([f.cos(), f.sin()], 1))
        h1 = self.enc1(self.inp(x), e)
        h = self.mid2(self.mid1(self.down(h1), e), e)
        h = self.up(nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(self.dec1(torch.cat([h, h1], 1), e))


class Timed(nn.Module):
    """Adds the wall time of each call of ``inner`` to ``self.seconds``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def forward(self, *args: object) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.inner(*args)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def bench_overhead(steps: int, repeats: int) -> None:
    torch.manual_seed(0)
    unet = TinyUNet().eval()
    n_params = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    net = Timed(unet)
    den = Timed(EDMDenoiser(net, sigma_data=0.5))
    sigmas = karras_sigmas(steps, 0.002, 80.0)
    print(f"\n### (a) Overhead: {n_params / 1e6:.2f}M-parameter conv UNet, 4×3×64×64, {steps} Karras steps, "
          f"best of {repeats}\n")
    print("| sampler | NFE | run (s) | in network (s) | outside network | outside denoiser |")
    print("|---|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        den(torch.randn(4, 3, 64, 64), torch.ones(4), None)  # warm-up
        for name in SAMPLERS:
            best = None
            for r in range(repeats):
                net.seconds = den.seconds = 0.0
                net.calls = 0
                g = torch.Generator().manual_seed(r)
                x = torch.randn(4, 3, 64, 64, generator=g) * sigmas[0]
                t0 = time.perf_counter()
                get_sampler(name)(den, x, sigmas, generator=g)
                total = time.perf_counter() - t0
                row = (total, net.seconds, den.seconds, net.calls)
                best = row if best is None or row[0] < best[0] else best
            total, in_net, in_den, calls = best
            print(f"| {name} | {calls} | {total:.3f} | {in_net:.3f} | {100 * (total - in_net) / total:.2f} % | "
                  f"{100 * (total - in_den) / total:.2f} % |")


# --------------------------------------------------------------------------- (b) NFE
def bench_nfe(step_counts: list[int]) -> None:
    print("\n### (b) Network evaluations (NFE) for n steps (σ sequence of n + 1 values ending in 0)\n")
    print("| sampler | " + " | ".join(f"n={n}" for n in step_counts) + " |")
    print("|---|" + "---:|" * len(step_counts))
    for name in SAMPLERS:
        row = []
        for n in step_counts:
            c = CountingDenoiser(lambda x, s, cond: x * 0.5)
            get_sampler(name)(c, torch.randn(2, 4), karras_sigmas(n, 0.002, 80.0), generator=torch.Generator())
            row.append(str(c.calls))
        print(f"| {name} | " + " | ".join(row) + " |")


# --------------------------------------------------------------------------- (c) quality vs NFE
def mixture(seed: int = 123, k: int = 4, d: int = 8, std: float = 0.3):
    means = torch.randn(k, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def D(x: torch.Tensor, sigma: torch.Tensor, cond: object = None) -> torch.Tensor:
        var = std**2 + sigma.to(x.dtype).reshape(-1, 1, 1) ** 2
        diff = x[:, None, :] - means[None]
        logits = -(diff**2).sum(-1, keepdim=True) / (2 * var) - (d / 2) * torch.log(var)
        return (torch.softmax(logits, dim=1) * (means[None] + (std**2 / var) * diff)).sum(1)

    mean = means.mean(0)
    cov = std**2 * torch.eye(d, dtype=torch.float64) + (means - mean).T @ (means - mean) / k
    return D, means, mean.numpy(), cov.numpy(), std


def w2_gaussian(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """W2 between N(mean(x), cov(x)) and N(mean, cov)."""
    m, c = x.mean(0), np.cov(x, rowvar=False)
    rc = linalg.sqrtm(cov)
    cross = linalg.sqrtm(rc @ c @ rc).real
    return float(math.sqrt(max(((m - mean) ** 2).sum() + np.trace(c + cov - 2 * cross), 0.0)))


def bench_quality(nfes: list[int], n: int) -> None:
    D, means, mean, cov, std = mixture()
    g = torch.Generator().manual_seed(0)
    exact = means[torch.randint(0, 4, (n,), generator=g)] + std * torch.randn(n, 8, generator=g, dtype=torch.float64)
    x_T = torch.randn(n, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 80.0
    print(f"\n### (c) W2 between Gaussian fits of {n} samples and the true mixture (4 Gaussians in 8-D), "
          "Karras σ 0.002…80, ρ = 7\n")
    print("| sampler | " + " | ".join(f"NFE≈{k}" for k in nfes) + " |")
    print("|---|" + "---:|" * len(nfes))
    for name in SAMPLERS:
        cells = []
        for nfe in nfes:
            steps = (nfe + 1) // 2 if name in SECOND_ORDER else nfe
            c = CountingDenoiser(D)
            out = get_sampler(name)(c, x_T.clone(), karras_sigmas(steps, 0.002, 80.0, dtype=torch.float64),
                                    generator=torch.Generator().manual_seed(2))  # fmt: skip
            w2 = w2_gaussian(out.numpy(), mean, cov)
            cells.append(f"{w2:.4f}" + (f" ({c.calls})" if c.calls != nfe else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"| *{n} exact draws* | " + " | ".join([f"{w2_gaussian(exact.numpy(), mean, cov):.4f}"] * len(nfes)) + " |")
    print("\nNFE in parentheses where it differs from the column (second-order samplers: 2n − 1 for n steps). "
          "ddim (η = 0) is Euler on the same σ's; ddpm is euler_ancestral (η = 1).")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=["overhead", "nfe", "quality"], default=None)
    p.add_argument("--steps", type=int, default=10, help="steps for the overhead runs")
    p.add_argument("--repeats", type=int, default=3, help="overhead: best of this many runs")
    p.add_argument("--samples", type=int, default=2000, help="quality: number of samples")
    p.add_argument("--nfe", type=int, nargs="+", default=[8, 16, 32, 64, 256, 1000])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"Command: python bench/bench_samplers.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    t0 = time.perf_counter()
    if args.only in (None, "overhead"):
        bench_overhead(args.steps, args.repeats)
    if args.only in (None, "nfe"):
        bench_nfe([1, 2, 10, 50])
    if args.only in (None, "quality"):
        bench_quality(args.nfe, args.samples)
    print(f"\nTotal time: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
