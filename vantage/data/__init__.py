"""Data: view sets, the synthetic default dataset, real formats, training pairs and shards.

Commonly used names are re-exported here; each lives in its own module:

- :mod:`vantage.data.views`: ``ObjectViews``, ``ViewSet``, ``SceneDataset``, ``collate_views``
- :mod:`vantage.data.synthetic`: ``SyntheticDataset`` (rendered on the fly)
- :mod:`vantage.data.formats`: ``open_dataset`` (SRN, NMR, Zero-1-to-3, GSO, RealEstate10K,
  nerfstudio, image folders, vantage synthetic folders)
- :mod:`vantage.data.pairs`: ``PairSampler``, ``PairDataset``, ``collate_pairs``, ``RankSampler``
- :mod:`vantage.data.shards`: ``write_shards`` (and re-exports of the other shard modules);
  :mod:`vantage.data.shard_stream`: ``ShardDataset``; :mod:`vantage.data.shard_scenes`: ``ShardScenes``,
  ``ShardPairs``; :mod:`vantage.data.shard_format`: the format, ``read_index``
"""

from vantage.data.formats import open_dataset
from vantage.data.pairs import PairBatch, PairDataset, PairSampler, RankSampler, collate_pairs
from vantage.data.shard_stream import ShardDataset
from vantage.data.shards import write_shards
from vantage.data.synthetic import SyntheticDataset
from vantage.data.views import ObjectViews, SceneDataset, ViewSet, collate_views

__all__ = ["ObjectViews", "ViewSet", "SceneDataset", "collate_views", "SyntheticDataset", "open_dataset",
           "PairSampler", "PairDataset", "PairBatch", "collate_pairs", "RankSampler", "write_shards",
           "ShardDataset"]
