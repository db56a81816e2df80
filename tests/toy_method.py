"""A tiny method for the training-engine tests (``toy``): a two-layer conv net that predicts the
target view from the first conditioning view with an MSE loss.

It is not registered in :data:`vantage.methods.METHODS`; tests register it with
:func:`register` (through ``monkeypatch`` or, in spawned DDP workers, directly). ``noise > 0``
adds Gaussian noise drawn from the generator the trainer passes to ``loss`` to the input, so that
tests can check per-step reseeding; ``noise = 0`` makes the loss deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vantage.data.pairs import PairBatch
from vantage.methods.base import Method, MethodConfig

METHOD = "toy"
PRESET = "toy-tiny"


@dataclass
class ToyConfig(MethodConfig):
    """Attributes:
        resolution: image side.
        channels: hidden channels.
        noise: std of the input noise drawn with the loss generator (0 = deterministic loss).
    """

    resolution: int = 16
    channels: int = 4
    noise: float = 0.0


class ToyMethod(Method):
    name = METHOD
    config_class = ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        c = config.channels
        self.net = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)

    def loss(self, batch: PairBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x = batch.cond.images[:, 0]
        if self.config.noise > 0:
            x = x + self.config.noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        self.calls += 1
        pred = self(x)
        target = batch.target.images[:, 0]
        loss = F.mse_loss(pred.float(), target.float())
        return {"loss": loss, "loss_l1": (pred.float() - target.float()).abs().mean().detach()}

    @torch.no_grad()
    def preview(self, batch: PairBatch, generator: torch.Generator | None = None) -> Tensor:
        return self(batch.cond.images[:, 0]).clamp(-1, 1)


def register(methods: dict | None = None, presets: dict | None = None) -> None:
    """Add ``toy`` / ``toy-tiny`` to the registry dicts (default: vantage's own)."""
    import vantage.methods as vm

    (vm.METHODS if methods is None else methods)[METHOD] = "toy_method:ToyMethod"
    (vm.PRESETS if presets is None else presets)[PRESET] = (METHOD, {"resolution": 16, "channels": 4},
                                                             "test-only toy method (2-layer conv net, MSE)")


# ------------------------------------------------------------------------------------ test helpers
def fast_config(**overrides):
    """A :class:`~vantage.train.TrainConfig` for tests: no workers, no bar, no TensorBoard."""
    from vantage.train import TrainConfig
    from vantage.train.config import train_config_from_dict

    base = {"duration": 4, "batch": 4, "lr": 1e-2, "warmup": 1, "log_every": 1, "ckpt_every": 2, "sample_every": 0,
            "num_workers": 0, "progress": False, "tensorboard": False, "ema_halflife": "8img", "ema_rampup": None}
    return train_config_from_dict({**base, **overrides}, TrainConfig())


def make_toy(seed: int = 0, **config) -> ToyMethod:
    torch.manual_seed(seed)
    return ToyMethod(ToyConfig(**config))


def toy_scenes():
    """Six in-memory scenes of four 16x16 views (fewer than a few global batches: epochs roll over)."""
    from vantage.data.testing import ToyDataset

    return ToyDataset(num_scenes=6, num_views=4, resolution=16, seed=3)


def ddp_worker(rank: int, world_size: int, port: int, jobs: list[tuple[str, dict, dict]]) -> None:
    """``torch.multiprocessing.spawn`` target: join a gloo group and run each ``(run_dir, train, method)`` job."""
    import os

    import torch.distributed as dist

    from vantage.train import Trainer, setup_distributed

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        register()
        for run_dir, train_kw, method_kw in jobs:
            ctx = setup_distributed("cpu")
            assert ctx.world_size == world_size and ctx.rank == rank and not ctx.owns_group
            Trainer(make_toy(**method_kw), toy_scenes(), fast_config(**train_kw), run_dir, dist=ctx).fit()
    finally:
        dist.destroy_process_group()
