"""X-UNet training-step benchmark: our X-UNet vs the same configuration with naive attention.

One training step = forward + MSE loss + backward (no optimizer update) on a batch of
(conditioning view, noisy target, logSNR, two cameras). Variants, all with the *same* weights:

* ``naive fp32``: attention written naively (einsum ``q kᵀ``, explicit softmax, einsum with ``v``,
  float32) via :func:`vantage.nn.set_attention_impl`; everything else identical (baseline);
* ``sdpa fp32``: ours (``torch.nn.functional.scaled_dot_product_attention``);
* ``sdpa bf16``: ours under ``torch.autocast(device, dtype=torch.bfloat16)``;
* ``sdpa fp32, no pruning``: ablation: the conditioning frame is carried to the output layer.

Timing: the variants run interleaved (round-robin, ``--steps`` rounds after a warm-up) in one
process so that load changes on a shared machine hit all of them alike; the median step time is
reported, with images/s (targets per second) and the speed-up over the naive baseline.
Peak memory: each variant runs 2 steps in a fresh subprocess; on CPU we report the increase of
the peak resident set size (``VmHWM``, i.e. max RSS) over the RSS after building the model and
inputs, on CUDA ``torch.cuda.max_memory_allocated``.

Note: on the 2-vCPU development sandbox, 2 intra-op threads made the same step between 1x and 14x
slower than 1 thread, varying from run to run (OpenMP barriers on oversubscribed vCPUs); the
numbers in docs/networks.md were taken with ``--threads 1``.

    python bench/bench_xunet.py --threads 1                      # small 64 px config, batch 4
    python bench/bench_xunet.py --attn 8,16,32 --threads 1       # attention at 32x32 as well
    python bench/bench_xunet.py --config paper --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch

from vantage.cameras import hemisphere_cameras
from vantage.nn import XUNet, XUNetConfig, count_parameters, set_attention_impl, xunet_paper_config, xunet_small_config

VARIANTS = {  # name: (attention impl, bf16 autocast, prune the conditioning frame)
    "naive fp32": ("naive", False, True),
    "sdpa fp32": ("sdpa", False, True),
    "sdpa bf16": ("sdpa", True, True),
    "sdpa fp32, no pruning": ("sdpa", False, False),
}


def build_config(args: argparse.Namespace) -> XUNetConfig:
    cfg = {"small": xunet_small_config(args.resolution), "default": XUNetConfig(resolution=args.resolution),
           "paper": xunet_paper_config()}[args.config]
    if args.config == "paper":
        cfg.resolution = args.resolution if args.resolution != 64 else 128
    if args.attn is not None:
        cfg.attn_resolutions = tuple(int(a) for a in args.attn.split(",") if a)
    return cfg


def make_inputs(cfg: XUNetConfig, batch: int, device: torch.device) -> tuple:
    g = torch.Generator().manual_seed(0)
    cams = hemisphere_cameras(2 * batch, generator=g, resolution=cfg.resolution).to(device)
    x = torch.rand(2, batch, 3, cfg.resolution, cfg.resolution, generator=g).to(device) * 2 - 1
    return x[0], x[1], torch.linspace(-8, 8, batch, device=device), cams[:batch], cams[batch:]


def train_step(net: XUNet, inputs: tuple, variant: str, device: torch.device) -> None:
    impl, bf16, prune = VARIANTS[variant]
    set_attention_impl(net, impl)
    net.config.prune_cond_frame = prune
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with ctx:
        eps = net(*inputs)
    loss = (eps.float() - 1.0).square().mean()
    loss.backward()
    net.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rss_mib(field: str = "VmRSS") -> float:
    """Current (``VmRSS``) or peak (``VmHWM``) resident set size of this process in MiB.

    ``VmHWM`` is the peak of this process image; unlike ``ru_maxrss`` it does not inherit the
    parent's peak across fork/exec. Falls back to ``ru_maxrss`` where /proc is missing.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    """Peak memory of one variant (run in a fresh process)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = XUNet(build_config(args)).to(device).train()
    inputs = make_inputs(net.config, args.batch, device)
    sync(device)
    base = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        train_step(net, inputs, args.worker, device)
    sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = rss_mib("VmHWM") - base
    print(json.dumps({"peak_mib": peak}))


def measure_memory(args: argparse.Namespace, variant: str) -> float:
    cmd = [sys.executable, __file__, "--worker", variant] + [a for a in sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["small", "default", "paper"], default="small")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--attn", default=None, help="override attn_resolutions, e.g. 8,16,32")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed rounds (each runs every variant once)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own choice); see the note in the docstring")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args)

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = XUNet(build_config(args)).to(device).train()
    cfg = net.config
    inputs = make_inputs(cfg, args.batch, device)
    command = "python bench/bench_xunet.py " + " ".join(sys.argv[1:])
    print(f"# X-UNet train step (fwd+bwd): config={args.config} {cfg.resolution}px ch={cfg.ch} "
          f"mult={cfg.ch_mult} blocks={cfg.num_res_blocks} attn={cfg.attn_resolutions} heads={cfg.num_heads} "
          f"params={count_parameters(net) / 1e6:.2f}M batch={args.batch}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device={device}, "
          f"threads={torch.get_num_threads()}")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for v in VARIANTS:  # warm-up
        train_step(net, inputs, v, device)
    for _ in range(args.steps):
        for v in VARIANTS:
            sync(device)
            t0 = time.perf_counter()
            train_step(net, inputs, v, device)
            sync(device)
            times[v].append(time.perf_counter() - t0)
    mem = {v: float("nan") if args.no_memory else measure_memory(args, v) for v in VARIANTS}
    base = statistics.median(times["naive fp32"])
    mem_label = "peak MiB (alloc)" if device.type == "cuda" else "peak RSS +MiB"
    print(f"\n| variant | step s (median of {args.steps}) | images/s | speed-up vs naive | {mem_label} |")
    print("|---|---|---|---|---|")
    for v in VARIANTS:
        t = statistics.median(times[v])
        print(f"| {v} | {t:.3f} | {args.batch / t:.2f} | {base / t:.2f}x | {mem[v]:.0f} |")
    print(f"\nreproduce: {command}")


if __name__ == "__main__":
    main()
