"""Training engine: one trainer for every method, from one CPU to many GPUs (``torchrun``).

- :mod:`vantage.train.config`: :class:`TrainConfig` (every field documented), lengths in steps or
  images, ``--set`` overrides, presets' training defaults, the fields a resumed run may change.
- :mod:`vantage.train.trainer`: :class:`Trainer` (DDP, accumulation, AdamW, EMA, NaN guard,
  per-step reseeding, resume), :class:`TrainResult`.
- :mod:`vantage.train.resume`: a run folder is new, resumed or restarted; the configuration check of a
  resume (:class:`ResumeError`).
- :mod:`vantage.train.checkpoint`: atomic checkpoints, :func:`load_checkpoint` (a run or
  checkpoint folder -> the method with its EMA weights), :class:`CheckpointError`.
- :mod:`vantage.train.ema`: EDM half-life, fixed decay and EDM2 power-function EMA.
- :mod:`vantage.train.posthoc_ema`: EDM2's post-hoc EMA: power EMAs of two widths with snapshots
  (``train.ema_posthoc``) and the reconstruction of any width from them (``vantage ema``).
- :mod:`vantage.train.schedule`: warm-up + cosine / inverse-sqrt learning rates.
- :mod:`vantage.train.data`: ``--data`` specs (``synthetic[:SPLIT]`` or a dataset path), the
  batch sampler that keeps the global batch independent of the number of processes.
- :mod:`vantage.train.shard_data`: ``--data SHARD_DIR``: the per-rank shard stream and its resume position.
- :mod:`vantage.train.distributed`: process group and device selection.
- :mod:`vantage.train.logging`: ``stats.jsonl``, ``loss.png``, sample grids (previews), TensorBoard.

See ``docs/training.md``.
"""

from vantage.train.checkpoint import CheckpointError, find_checkpoint, list_checkpoints, load_checkpoint
from vantage.train.config import RESUMABLE_FIELDS, TrainConfig, TrainPlan
from vantage.train.data import DataSpec, open_training_data
from vantage.train.distributed import DistContext, setup_distributed, teardown_distributed
from vantage.train.ema import EMA
from vantage.train.logging import read_stats
from vantage.train.resume import ResumeError
from vantage.train.trainer import Trainer, TrainingDiverged, TrainResult

__all__ = ["TrainConfig", "TrainPlan", "RESUMABLE_FIELDS", "Trainer", "TrainResult", "TrainingDiverged", "ResumeError",
           "CheckpointError", "load_checkpoint", "find_checkpoint", "list_checkpoints", "DataSpec",
           "open_training_data", "DistContext", "setup_distributed", "teardown_distributed", "EMA", "read_stats"]
