"""Sharded AVQ indexes on a Dask cluster: build, search, update and save beyond one machine.

:class:`ShardedAVQIndex` splits the vectors into shards, each an :class:`~avq_plugin.AVQIndex`
that lives in the memory of Dask workers, and answers queries by merging the shards' top-k.

Two ways to shard (``sharding=``):

- **"leaves"** (default): one quantizer (partition centres and PQ codebooks) is trained once on
  a sample from every row chunk; whole leaves are assigned to shards, balanced by vector count,
  with co-probed leaves together (a balanced spectral bisection of the leaves' co-probe graph,
  refined so that the leaves probed by sample queries fall in few shards). The client scores the centres
  once per query (``AVQIndex._probe``) and sends each query only to the shards owning its probed
  leaves, with the list of leaves to scan (``AVQIndex._search_leaves``); ``reorder_k`` is one
  budget per query, split across the visited shards by their share of the scanned candidates.
  ``replicas=r`` keeps each shard on r workers (searches use any live one; a lost replica is
  re-created from a survivor in the background); ``add``/``remove`` update every replica.
- **"rows"**: contiguous row ranges; every query visits every shard, each with the full budget;
  lost shards are recomputed by Dask from their lineage. Kept for comparison.

Modules: ``index`` (ShardedAVQIndex, the public class), its parts by job ``base`` (shared state,
training the shared quantizer), ``rows`` (row shards), ``leaves`` (leaf placement, routed search,
updates), ``replicas`` (replica bookkeeping); ``worker`` (the worker-side tasks and replica
registry), ``placement`` (leaf placement, budget split), ``merge`` (top-k merging), ``manifest``
(saved directories), ``sources`` (input reading), ``serving`` (Dask settings for a cluster that
serves searches: :func:`serving_config`); the benchmark is
``avq_plugin.bench.distributed``. See docs/dask.md.

Needs the ``distributed`` extra: ``pip install "avq-plugin[distributed]"``.
"""

from .index import ShardedAVQIndex, ShardLostError
from .manifest import FORMAT_VERSION, MANIFEST_NAME
from .merge import merge_rows, merge_topk
from .serving import serving_config

__all__ = [
    "ShardedAVQIndex",
    "ShardLostError",
    "merge_topk",
    "merge_rows",
    "serving_config",
    "MANIFEST_NAME",
    "FORMAT_VERSION",
]
