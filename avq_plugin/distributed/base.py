"""State and helpers shared by the parts of ``ShardedAVQIndex`` (row shards, leaf shards, replicas).

``ShardedAVQIndex`` (index.py) is assembled from mixins, one module per job: ``rows.py`` (row
range shards, every query to every shard), ``leaves.py`` (leaf-routed shards: placement, routed
search, updates, files), ``replicas.py`` (which worker holds which shard, running pinned tasks,
re-creating lost replicas). This base holds the state they share and the training of the
shared quantizer, which both shardings use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
import warnings

import numpy as np

from .. import _params
from . import worker as W
from .manifest import _PARAM_NAMES
from .serving import serving_config
from .sources import _allocate, _take_rows

try:
    import dask
    import dask.array as da
    from distributed import Actor, Client, default_client, wait
    from distributed.scheduler import KilledWorker
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "avq_plugin.distributed needs Dask's distributed scheduler: "
        'pip install "avq-plugin[distributed]" (or pip install "dask[distributed]")'
    ) from exc


# Dask's names, imported once here (with the message above when it is missing) for the other modules.
__all__ = ["Actor", "Client", "KilledWorker", "ShardLostError", "da", "dask", "default_client", "wait"]

# Seconds between liveness checks of the workers while waiting for pinned tasks.
_POLL_S = 0.2
# How long a search trusts the last list of live workers it asked the scheduler for (seconds).
# Asking costs a round trip (about 0.8 ms on a LocalCluster, 10 % of a one-query search); a
# worker that left within this time is found by its failed call, as one that dies mid-search.
_LIVE_WORKERS_TTL_S = 1.0


class ShardLostError(RuntimeError):
    """A shard's data was lost with its worker and could not be recovered.

    Attributes
    ----------
    shards : list of int
        The lost shard numbers.
    """

    def __init__(self, message, shards):
        super().__init__(message)
        self.shards = list(shards)


def _is_loss(exc):
    """True for the exceptions Dask raises when a task or its data went away with a worker."""
    return isinstance(exc, (KilledWorker, asyncio.CancelledError, concurrent.futures.CancelledError))


def _reemit(messages, stacklevel):
    """Warnings raised while the shared quantizer was trained in a worker, raised again here."""
    for message, category in messages:
        cat = {"UserWarning": UserWarning, "RuntimeWarning": RuntimeWarning}.get(category, UserWarning)
        warnings.warn(f"while training the shared quantizer: {message}", cat, stacklevel=stacklevel + 1)


class _ShardedBase:
    """The state of a sharded index and what both shardings share."""

    def _reset_state(self):
        self._template = None  # future of (bytes, fingerprint, warnings)
        self._fingerprint = None
        self._shards = []  # futures of AVQIndex
        self._bounds = []
        self._ntotal = 0
        self._d = None
        self._num_leaves = None
        self._saved = None  # (directory, manifest) once saved or loaded
        self._mmap = False
        self._token = uuid.uuid4().hex[:12]
        # Leaf-routed sharding (see _fit_leaves): the router (trained, empty AVQIndex), the
        # shard of every leaf, vectors per leaf, and the workers holding each shard's replicas.
        self._router = None
        self._default_budget = (0, 0)  # (leaves_to_search, reorder_k) of the trained quantizer
        self._leaf_to_shard = None
        self._leaf_sizes = None
        self._holders = []  # per shard: list of worker addresses (live replicas)
        # Per shard its search group (the worker it was placed on at fit): a worker searches a
        # query's shards of one group as one index (one top-N, the summed budget). Groups are
        # kept whole on every worker holding them, so the answers do not depend on which
        # replicas serve a search.
        self._shard_group = None
        self._n_shards = 0
        self._next_id = 0
        self._rebuilding = {}  # shard -> future of the replica being rebuilt
        self._searchers = {}  # worker -> (future, handle) of its search actor (W.Searcher)
        self._live_seen = (float("-inf"), [])  # (time.monotonic(), workers) of the last _live_workers
        self._dirty = set()  # shards changed since the last save
        self._lock = threading.RLock()  # the tables above
        self._update_lock = threading.Lock()  # one add/remove at a time; no rebuild meanwhile
        self._stats = None

    @property
    def client(self):
        """The Dask client in use (resolved on first use)."""
        if self._client is None:
            try:
                self._client = default_client()
            except ValueError:  # none: a local cluster of our own, set up to serve
                with dask.config.set(serving_config()):
                    self._client = Client()
        return self._client

    @property
    def is_fitted(self):
        return bool(self._shards) or self._router is not None

    def _require_fitted(self):
        if not self.is_fitted:
            raise ValueError("the sharded index is not fitted yet: call fit(X) or load(path) first")

    def _require_leaves(self, what):
        self._require_fitted()
        if self.sharding != "leaves":
            raise ValueError(f"{what} needs sharding='leaves' (row shards are immutable)")

    def _params(self):
        return {name: getattr(self, name) for name in _PARAM_NAMES}

    def _live_workers(self, recent=False):
        """The scheduler's workers. recent: the list asked for within _LIVE_WORKERS_TTL_S, if any
        (searches); a worker marked lost since (_forget_live_workers) makes the next call ask."""
        seen, workers = self._live_seen
        if recent and time.monotonic() - seen < _LIVE_WORKERS_TTL_S:
            return list(workers)
        # Asked of the scheduler directly: Client.scheduler_info() returns the client's cached
        # identity, which its periodic refresh (without per-worker entries) can overwrite.
        client = self.client
        now = time.monotonic()
        workers = list(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
        self._live_seen = (now, workers)
        return list(workers)

    def _forget_live_workers(self):
        self._live_seen = (float("-inf"), [])

    def _template_task(self, X, n):
        """The delayed training of the shared quantizer on a sample from every row chunk."""
        L = _params.resolve_budget(n, int(X.shape[1]), num_leaves=self.num_leaves).num_leaves
        if L > n:
            raise ValueError(f"num_leaves={L} exceeds the number of vectors ({n})")
        # As many rows as one AVQIndex samples from n vectors; the template trains on all of them
        # with the user's training_sample_size, so it splits them (partitioner / codebooks) as
        # one AVQIndex does.
        S = _params.training_sample_rows(n, L, self.training_sample_size)
        row_chunks = X.chunks[0]
        alloc = _allocate(S, row_chunks)
        blocks = X.to_delayed().ravel()
        parts = []
        for i, (block, size, m) in enumerate(zip(blocks, row_chunks, alloc)):
            if m == 0:
                continue
            rng = np.random.default_rng([self.seed, i])
            rows = np.sort(rng.choice(size, size=int(m), replace=False))
            parts.append(dask.delayed(_take_rows, pure=True)(block, rows))
        params = dict(self._params(), num_leaves=L)
        template = dask.delayed(W.train_template, pure=True)(
            params, -1, *parts, dask_key_name=f"avq-train-{self._token}"
        )
        return template, L
