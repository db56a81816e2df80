"""Processes and devices: single process, or DDP launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``);
:func:`setup_distributed` then joins the process group with ``nccl`` when training on CUDA and
``gloo`` on CPU. Without those variables (or with ``WORLD_SIZE=1``) everything runs in one
process. A process group that is already initialised (e.g. by a test with
``torch.multiprocessing.spawn``) is used as is and left open.

Devices: ``auto`` = CUDA when available, else CPU. Under DDP every rank uses the GPU of its
``LOCAL_RANK`` (``--device cuda``); an explicit index (``cuda:1``) is only honoured with one process.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "resolve_device", "setup_distributed", "teardown_distributed"]


@dataclass
class DistContext:
    """Where this process stands.

    Attributes:
        rank, world_size, local_rank: DDP coordinates ((0, 1, 0) for a single process).
        device: the device this process trains on.
        backend: ``"nccl"``, ``"gloo"`` or None (single process).
        owns_group: whether :func:`setup_distributed` created the process group (and so tears it down).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of ``values`` over ranks (a float64 tensor on the reduction device)."""
        t = values.detach().to(self._reduce_device(), torch.float64)
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable value)."""
        if not self.distributed:
            return obj
        data = torch.zeros(1, dtype=torch.long, device=self._reduce_device())
        payload = pickle.dumps(obj) if self.is_main else b""
        data[0] = len(payload)
        dist.broadcast(data, src=0)
        buf = torch.zeros(int(data[0]), dtype=torch.uint8, device=self._reduce_device())
        if self.is_main:
            buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        dist.broadcast(buf, src=0)
        return obj if self.is_main else pickle.loads(bytes(buf.cpu().numpy()))

    def _reduce_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def resolve_device(spec: str | torch.device = "auto", local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto|cpu|cuda|cuda:N`` -> a device (``cuda`` under DDP = ``cuda:LOCAL_RANK``)."""
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ValueError(f"--device: '{spec}' is not a device (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if world_size > 1:
            device = torch.device("cuda", local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"--device {spec}: only cpu and cuda devices are supported")
    return device


def setup_distributed(device: str | torch.device = "auto") -> DistContext:
    """Join the ``torchrun`` process group if there is one, and pick this process's device."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = resolve_device(device, local, world)
        return DistContext(rank, world, local, dev, dist.get_backend(), owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local, world)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistContext(rank, world, local, dev, backend, owns_group=True)


def teardown_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
