"""ShardedAVQIndex: the client side of a sharded index (build, routing, replicas, updates, files)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import threading
import time
import uuid
import warnings

import numpy as np

from .. import _params
from .. import _validation as V
from ..index import AVQIndex
from . import worker as W
from .manifest import (
    _FORMAT_NAME,
    _PARAM_NAMES,
    _QUANTIZER_FILE,
    FORMAT_VERSION,
    MANIFEST_NAME,
    _atomic_write_bytes,
    _check_file,
    _check_manifest,
    _file_sha256,
    _package_version,
    _prepare_directory,
    _read_manifest,
    _write_manifest,
)
from .merge import merge_rows, merge_topk
from .placement import balanced_leaf_groups, refine_leaf_groups, route_queries
from .sources import _allocate, _as_sources, _sources_to_dask, _take_rows

try:
    import dask
    import dask.array as da
    from dask.sizeof import sizeof as _dask_sizeof
    from distributed import Client, default_client, wait
    from distributed.scheduler import KilledWorker
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "avq_plugin.distributed needs Dask's distributed scheduler: "
        'pip install "avq-plugin[distributed]" (or pip install "dask[distributed]")'
    ) from exc

__all__ = ["ShardedAVQIndex", "ShardLostError", "merge_topk", "merge_rows", "MANIFEST_NAME", "FORMAT_VERSION"]

_SHARDINGS = ("leaves", "rows")
# Sample queries (indexed vectors) whose probed leaves guide the leaf placement.
_PLACEMENT_SAMPLE = 20000
# Seconds between liveness checks of the workers while waiting for routed tasks.
_POLL_S = 0.2


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


# Dask estimates transfer costs with sizeof(); without this an index would look like a few
# bytes and the scheduler could move whole shards between workers to balance search tasks.
@_dask_sizeof.register(AVQIndex)
def _sizeof_avq_index(index):
    return int(index.memory_usage()) + 64


# ---------------------------------------------------------------------------------- worker tasks
# Module-level functions so that workers import them by name (pickled by reference).
def _quantizer_fingerprint(index):
    """sha256 of what makes scores comparable across shards: centres, codebooks, parameters."""
    h = index._quantizer_digest()
    h.update(json.dumps(_index_params(index), sort_keys=True).encode())
    return h.hexdigest()


def _index_params(index):
    return {name: getattr(index, name) for name in _PARAM_NAMES}


def _train_template(params, num_threads, *parts):
    """Trains the shared quantizer on the sample parts; returns (bytes, fingerprint, warnings)."""
    X = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = AVQIndex(**params, num_threads=num_threads).train(X)
    messages = [(str(w.message), w.category.__name__) for w in caught]
    return index.to_bytes(), _quantizer_fingerprint(index), messages


def _build_shard(template, start, num_threads, *blocks):
    """One shard: the shared quantizer plus rows [start, start + n) with their row ids."""
    index = AVQIndex.from_bytes(template[0])
    index.num_threads = num_threads
    X = np.concatenate(blocks, axis=0) if len(blocks) > 1 else np.asarray(blocks[0])
    X = np.ascontiguousarray(X, dtype=np.float32)
    index.add(X, np.arange(start, start + X.shape[0], dtype=np.int64))
    return index


def _search_shard(index, Q, k, leaves_to_search, reorder_k, num_threads):
    return index.search(Q, k, leaves_to_search=leaves_to_search, reorder_k=reorder_k, num_threads=num_threads)


def _shard_info(index):
    ids = index.get_ids() if index.ntotal else np.zeros(0, np.int64)
    return {
        "ntotal": int(index.ntotal),
        "id_min": int(ids.min()) if ids.size else None,
        "id_max": int(ids.max()) if ids.size else None,
        "memory_usage": int(index.memory_usage()),
        "code_size": int(index.code_size),
        "is_mapped": bool(index.is_mapped),
        "pid": os.getpid(),
    }


def _save_shard(index, directory, name, ready):
    path = os.path.join(directory, name)
    index.save(path)  # native: temporary file + rename
    return {"file": name, "bytes": os.path.getsize(path), "sha256": _file_sha256(path)}


def _save_template(template, directory, ready):
    path = os.path.join(directory, _QUANTIZER_FILE)
    _atomic_write_bytes(path, template[0])
    return {"file": _QUANTIZER_FILE, "bytes": os.path.getsize(path), "sha256": _file_sha256(path)}


def _load_template(directory, entry, verify):
    path = _check_file(directory, entry, "the quantizer file", verify)
    with open(path, "rb") as f:
        data = f.read()
    try:
        index = AVQIndex.from_bytes(data)
    except ValueError as exc:
        raise ValueError(f"the quantizer file {path} is corrupt: {exc}") from None
    return data, _quantizer_fingerprint(index), []


def _load_shard(directory, j, entry, fingerprint, mmap, verify, num_threads):
    what = f"shard {j}"
    path = _check_file(directory, entry, what, verify)
    try:
        index = AVQIndex.load(path, mmap=mmap)
    except ValueError as exc:
        raise ValueError(f"{what} is corrupt ({path}): {exc}") from None
    index.num_threads = num_threads
    if index.ntotal != entry["ntotal"]:
        raise ValueError(f"{what} ({path}) holds {index.ntotal} vectors, the manifest says {entry['ntotal']}")
    if _quantizer_fingerprint(index) != fingerprint:
        raise ValueError(f"{what} ({path}) was not built with this index's quantizer")
    return index


def _is_loss(exc):
    """True for the exceptions Dask raises when a task or its data went away with a worker."""
    return isinstance(exc, (KilledWorker, asyncio.CancelledError, concurrent.futures.CancelledError))


# ---------------------------------------------------------------------------------- the index
class ShardedAVQIndex:
    """An AVQ index split into shards held by the workers of a Dask cluster.

    Parameters
    ----------
    metric, num_leaves, dims_per_block, anisotropic_threshold, eta, eta_formula, reorder,
    leaves_to_search, reorder_k, training_iterations, kmeans_iterations, seed
        As for :class:`~avq_plugin.AVQIndex`; every shard shares one quantizer trained with
        them. ``num_leaves=None`` picks round(sqrt(n)) for the *total* n.
    n_shards : int or None
        Number of shards. sharding="leaves": None gives one per worker. sharding="rows": each
        shard a contiguous range of rows; None gives one per row chunk of a dask array, or per
        file of a list of files.
    training_sample_size : int or None
        Rows sampled across all chunks to train the quantizer; None: as many as ``AVQIndex``
        samples from n vectors (``avq_plugin._params.training_sample_rows``). The sample is
        gathered in one worker.
    num_threads : int
        Native threads per shard task (encoding and search). Dask already runs one task per
        worker thread, so 1 (the default) keeps every core busy without oversubscription.
        Training, a single task, uses every core of its worker.
    client : distributed.Client or None
        The cluster to use. None: the current default client, or a new ``Client()`` (a local
        cluster) when there is none.
    sharding : {"leaves", "rows"}
        "leaves": whole leaves per shard, each query sent only to the shards owning its probed
        leaves, with one ``reorder_k`` budget per query split across them (see the package
        docstring and docs/dask.md); supports replicas and ``add``/``remove``. "rows": row
        ranges, every query to every shard with the full budget each (the former design).
    replicas : int
        sharding="leaves": copies of each shard, on distinct workers. A search uses one live
        copy per shard (the least busy); a lost copy is re-created from a survivor in the
        background; a shard is lost (``ShardLostError``) only when every copy is gone and it
        has no saved file that is up to date.

    Attributes
    ----------
    ntotal : int
        Number of indexed vectors.
    shard_bounds_ : list of (int, int)
        sharding="rows": global row (= id) range [start, stop) of each shard.
    leaf_to_shard_ : int32 (num_leaves,)
        sharding="leaves": the shard owning each leaf.

    Examples
    --------
    >>> from dask.distributed import Client, LocalCluster            # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2))                     # doctest: +SKIP
    >>> index = ShardedAVQIndex(metric="dot", n_shards=4).fit(X)       # doctest: +SKIP
    >>> D, I = index.search(Q, k=10)                                   # doctest: +SKIP
    >>> index.save("/shared/glove.avqs")                               # doctest: +SKIP
    >>> index = ShardedAVQIndex.load("/shared/glove.avqs", mmap=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        metric="dot",
        n_shards=None,
        num_leaves=None,
        dims_per_block=2,
        anisotropic_threshold="auto",
        *,
        eta=None,
        eta_formula="exact",
        reorder="float32",
        leaves_to_search=None,
        reorder_k=None,
        training_iterations=3,
        kmeans_iterations=10,
        training_sample_size=None,
        num_threads=1,
        seed=0,
        client=None,
        sharding="leaves",
        replicas=1,
    ):
        # AVQIndex validates every shared parameter (and warns as it would).
        probe = AVQIndex(
            metric,
            num_leaves,
            dims_per_block,
            anisotropic_threshold,
            eta=eta,
            eta_formula=eta_formula,
            reorder=reorder,
            leaves_to_search=leaves_to_search,
            reorder_k=reorder_k,
            training_iterations=training_iterations,
            kmeans_iterations=kmeans_iterations,
            training_sample_size=training_sample_size,
            seed=seed,
            num_threads=1,
        )
        for name in _PARAM_NAMES:
            setattr(self, name, getattr(probe, name))
        self.n_shards = V.check_int("n_shards", n_shards, minimum=1, allow_none=True)
        self.sharding = V.check_choice("sharding", sharding, _SHARDINGS)
        self.replicas = V.check_int("replicas", replicas, minimum=1, maximum=16)
        if self.sharding == "rows" and self.replicas != 1:
            raise ValueError("replicas > 1 needs sharding='leaves' (row shards are recomputed by Dask instead)")
        self.num_threads = V.resolve_threads(num_threads)
        if client is not None and not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        self._client = client
        self._reset_state()

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
        self._n_shards = 0
        self._next_id = 0
        self._rebuilding = {}  # shard -> future of the replica being rebuilt
        self._dirty = set()  # shards changed since the last save
        self._lock = threading.RLock()  # the tables above
        self._update_lock = threading.Lock()  # one add/remove at a time; no rebuild meanwhile
        self._stats = None

    # ------------------------------------------------------------------ state
    @property
    def client(self):
        """The Dask client in use (resolved on first use)."""
        if self._client is None:
            try:
                self._client = default_client()
            except ValueError:
                self._client = Client()
        return self._client

    @property
    def is_fitted(self):
        return bool(self._shards) or self._router is not None

    @property
    def ntotal(self):
        """Number of indexed vectors."""
        return self._ntotal

    def __len__(self):
        return self._ntotal

    @property
    def d(self):
        """Dimension (None before fit or load)."""
        return self._d

    @property
    def num_leaves_(self):
        """Number of leaves of the shared quantizer."""
        self._require_fitted()
        return self._num_leaves

    @property
    def shard_bounds_(self):
        """Global row (= id) range [start, stop) of each shard (sharding="rows" only)."""
        self._require_fitted()
        if self.sharding != "rows":
            raise AttributeError("shard_bounds_ exists with sharding='rows' only (leaf shards hold whole leaves)")
        return list(self._bounds)

    @property
    def leaf_to_shard_(self):
        """The shard that owns each leaf, int32 (num_leaves,) (sharding="leaves" only)."""
        self._require_fitted()
        if self.sharding != "leaves":
            raise AttributeError("leaf_to_shard_ exists with sharding='leaves' only")
        return self._leaf_to_shard.copy()

    @property
    def saved_path(self):
        """Directory the index was last saved to or loaded from (None otherwise)."""
        return None if self._saved is None else self._saved[0]

    def __repr__(self):
        n = self._n_shards if self._router is not None else len(self._shards)
        state = f"{n} shards, ntotal={self._ntotal}" if self.is_fitted else "not fitted"
        return (
            f"ShardedAVQIndex(metric={self.metric!r}, sharding={self.sharding!r}, replicas={self.replicas}, "
            f"reorder={self.reorder!r}; {state})"
        )

    def __reduce__(self):
        raise TypeError("a ShardedAVQIndex holds live Dask futures and cannot be pickled: use save() and load()")

    def _require_fitted(self):
        if not self.is_fitted:
            raise ValueError("the sharded index is not fitted yet: call fit(X) or load(path) first")

    def _params(self):
        return {name: getattr(self, name) for name in _PARAM_NAMES}

    # ------------------------------------------------------------------ build
    def fit(self, X):
        """Train the shared quantizer on a sample of X, then encode every shard in the workers.

        Parameters
        ----------
        X : dask.array (n, d), a list of .npy / HDF5 paths, or a NumPy array
            A dask array is split by rows (shards follow its row chunks when ``n_shards`` is
            None). Files are read lazily in the workers, 262,144 rows at a time:
            .npy files whole, .h5/.hdf5 files through their "train" dataset (or pass
            ``(path, dataset)``); they must be readable at the same path from every worker.
            A NumPy array is embedded in the task graph: convenient on one machine only.

        Ids are global row numbers: row i of the concatenated input gets id i. Fitting again
        replaces the shards (and forgets any saved files: save again to enable reloading).

        Returns self.
        """
        client = self.client
        self._reset_state()
        specs = _as_sources(X)
        file_bounds = None
        if specs is not None:
            X, file_bounds = _sources_to_dask(specs, client)
        elif isinstance(X, np.ndarray):
            X = V.as_float_matrix(X, "X")
            n_chunks = self.n_shards or 1
            X = da.from_array(X, chunks=(max(1, -(-X.shape[0] // n_chunks)), X.shape[1]))
        elif not isinstance(X, da.Array):
            raise TypeError(
                f"X must be a dask.array, a list of .npy/.hdf5 paths or a NumPy array, got {type(X).__name__}"
            )
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array of vectors, got {X.ndim}D array of shape {X.shape}")
        if any(math.isnan(s) for s in X.shape):
            raise ValueError("X has unknown chunk sizes: call X.compute_chunk_sizes() first")
        n, d = (int(s) for s in X.shape)
        if n < 1 or d < 1:
            raise ValueError(f"X is empty (shape {X.shape})")
        if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
            raise TypeError(f"X must hold numbers, got dtype {X.dtype}")
        if len(X.chunks[1]) != 1:
            X = X.rechunk({1: -1})

        if self.sharding == "leaves":
            return self._fit_leaves(X, n, d, client)
        # Shards: contiguous row ranges.
        if self.n_shards is None:
            edges = list(file_bounds) if file_bounds is not None else [0, *np.cumsum(X.chunks[0]).tolist()]
        else:
            if self.n_shards > n:
                raise ValueError(f"n_shards={self.n_shards} exceeds the number of vectors ({n})")
            edges = [(n * j) // self.n_shards for j in range(self.n_shards + 1)]
        bounds = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

        template, L = self._template_task(X, n)
        tok = self._token

        workers = list(client.scheduler_info(n_workers=-1)["workers"]) or [None]
        shard_tasks = []
        for j, (a, b) in enumerate(bounds):
            pieces = X[a:b].to_delayed().ravel().tolist()
            # Round-robin placement (a preference, not a constraint: a lost worker's shards
            # are rebuilt elsewhere).
            where = {} if workers[0] is None else {"workers": workers[j % len(workers)], "allow_other_workers": True}
            with dask.annotate(**where):
                shard_tasks.append(
                    dask.delayed(_build_shard, pure=True)(
                        template, a, self.num_threads, *pieces, dask_key_name=f"avq-shard-{tok}-{j}"
                    )
                )
        futures = client.compute([template, *shard_tasks], optimize_graph=False)
        wait(futures)
        for f in futures:
            if f.status == "error":
                f.result()  # re-raises the worker's exception (e.g. NaN in a chunk)
        self._adopt(futures[0], futures[1:], bounds, n, d, L)
        return self

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
        template = dask.delayed(_train_template, pure=True)(
            params, -1, *parts, dask_key_name=f"avq-train-{self._token}"
        )
        return template, L

    def _adopt(self, template, shards, bounds, n, d, L):
        data, fingerprint, messages = template.result()
        # The budget resolved when the quantizer was trained (stored in its file).
        self._default_budget = AVQIndex.from_bytes(data).default_search_params()
        for message, category in messages:
            cat = {"UserWarning": UserWarning, "RuntimeWarning": RuntimeWarning}.get(category, UserWarning)
            warnings.warn(f"while training the shared quantizer: {message}", cat, stacklevel=3)
        self._template = template
        self._fingerprint = fingerprint
        self._shards = list(shards)
        self._bounds = list(bounds)
        self._ntotal = int(n)
        self._d = int(d)
        self._num_leaves = int(L)

    def trained_index(self):
        """The shared quantizer as a trained, empty ``AVQIndex`` (a local copy).

        Adding all the data to it (ids = row numbers) gives the single index that the sharded
        one reproduces (see :func:`merge_topk`).
        """
        self._require_fitted()
        if self.sharding == "leaves":
            return AVQIndex.from_bytes(self._template_bytes)
        return AVQIndex.from_bytes(self._template.result()[0])

    def shard_info(self):
        """Per shard: ntotal, memory_usage, code_size, is_mapped, the workers holding it; row
        shards add their id range, leaf shards their number of leaves and the memory of all
        replicas (replica_memory_usage)."""
        self._require_fitted()
        if self.sharding == "leaves":
            return self._shard_info_leaves()
        client = self.client
        infos = client.gather([client.submit(_shard_info, s, pure=False) for s in self._shards])
        where = client.who_has(self._shards)
        for j, (info, s) in enumerate(zip(infos, self._shards)):
            info["shard"] = j
            info["start"], info["stop"] = self._bounds[j]
            info["workers"] = sorted(where.get(s.key, ()))
        return infos

    def memory_usage(self):
        """Bytes held by all shards, every replica counted (sum of ``AVQIndex.memory_usage``)."""
        return sum(i.get("replica_memory_usage", i["memory_usage"]) for i in self.shard_info())

    def release(self):
        """Drop the shards from the workers' memory (the index becomes unfitted)."""
        if self._router is not None:
            self.client.run(W.drop, self._token)
        self._reset_state()

    # ------------------------------------------------------------------ search
    def default_search_params(self):
        """(leaves_to_search, reorder_k) used when search() is not given them (as AVQIndex)."""
        self._require_fitted()
        lts, rk = self._default_budget
        return self.leaves_to_search or lts, self.reorder_k or rk

    def search(self, Q, k=10, leaves_to_search=None, reorder_k=None, *, num_threads=None, timeout=None):
        """Global top-k of every query over all shards.

        Parameters
        ----------
        Q : array (nq, d) or (d,)
            Send queries in batches: every call costs one scheduling round trip per shard.
        k, leaves_to_search, reorder_k
            As for ``AVQIndex.search``; the budget applies to *each* shard.
        num_threads : int, optional
            Native threads per shard task (default: the index's ``num_threads``).
        timeout : float, optional
            Seconds to wait for the shards; raises TimeoutError beyond.

        Returns
        -------
        D : float32 (nq, k)
        I : int64 (nq, k)
            Global ids, best first (ties by smaller id), padded with -1 as ``AVQIndex.search``.

        Raises
        ------
        ShardLostError
            When a shard was lost with its worker and could be neither recomputed by Dask nor
            reloaded from its saved file. Results are never returned with a shard missing.
        """
        self._require_fitted()
        k = V.check_k(k)
        Q = V.as_float_matrix(Q, "Q", d=self._d, allow_1d=True, nonzero_rows=self.metric == "cosine")
        V.check_result_size(Q.shape[0], k)
        lts, rk = self.default_search_params()
        if leaves_to_search is not None:
            lts = V.check_int("leaves_to_search", leaves_to_search, minimum=1)
        if reorder_k is not None:
            rk = V.check_int("reorder_k", reorder_k, minimum=1)
        nt = self.num_threads if num_threads is None else V.resolve_threads(num_threads)
        if self.sharding == "leaves":
            return self._search_routed(Q, k, min(lts, self._num_leaves), rk, nt, timeout)
        t0 = time.perf_counter()
        client = self.client
        qf = client.scatter(Q, broadcast=True, hash=False)
        try:
            parts = self._run_on_shards(
                lambda j, key: client.submit(_search_shard, self._shards[j], qf, k, lts, rk, nt, key=key),
                "search",
                timeout,
            )
        finally:
            qf.release()
        t1 = time.perf_counter()
        out = merge_topk([p[0] for p in parts], [p[1] for p in parts], k, self.metric)
        self._stats = {
            "queries": int(Q.shape[0]),
            "shards_visited_per_query": float(len(self._shards)),
            "shard_tasks": len(self._shards),
            "dask_tasks": len(self._shards),
            "candidates_scanned_per_query": None,
            "reranked_per_query": None,
            "client_seconds": time.perf_counter() - t1,
        }
        del t0
        return out

    def _run_on_shards(self, submit, what, timeout):
        """Runs submit(j, key) for every shard; recovers lost shards once from saved files."""
        client = self.client
        call = uuid.uuid4().hex[:12]
        futures = {j: submit(j, f"avq-{what}-{call}-{j}") for j in range(len(self._shards))}
        for attempt in range(2):
            try:
                wait(list(futures.values()), timeout=timeout)
            except concurrent.futures.CancelledError:
                # Recent distributed raises FuturesCancelledError from wait() when the scheduler
                # dropped tasks with a dead worker ("already forgotten"); the per-future status
                # below tells which shards were lost.
                pass
            lost = {}
            for j, f in futures.items():
                if f.status == "finished":
                    continue
                exc = f.exception() if f.status == "error" else concurrent.futures.CancelledError(f.status)
                shard_ok = self._shards[j].status == "finished"
                if shard_ok and not _is_loss(exc):
                    raise exc  # a genuine error of the task itself
                lost[j] = exc
            if not lost:
                return client.gather([futures[j] for j in range(len(self._shards))])
            if attempt == 0 and self._saved is not None:
                self._reload_shards(sorted(lost))
                for j in lost:
                    futures[j] = submit(j, f"avq-{what}-{call}-{j}-retry")
                continue
            detail = "; ".join(f"shard {j}: {type(e).__name__}: {e}" for j, e in sorted(lost.items()))
            hint = (
                ""
                if self._saved is not None
                else " (save() the index, or load it from files, so that lost shards can be reloaded)"
            )
            raise ShardLostError(
                f"shard(s) {', '.join(map(str, sorted(lost)))} lost (a worker died) and could not be "
                f"recovered{hint}: {detail}",
                sorted(lost),
            )

    def _reload_shards(self, shard_ids):
        directory, manifest = self._saved
        client = self.client
        for j in shard_ids:
            self._shards[j] = client.submit(
                _load_shard,
                directory,
                j,
                manifest["shards"][j],
                manifest["quantizer_fingerprint"],
                self._mmap,
                True,
                self.num_threads,
                key=f"avq-shard-{self._token}-{j}-reload-{uuid.uuid4().hex[:8]}",
            )
        wait([self._shards[j] for j in shard_ids])

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Write one native index file per shard, the quantizer and a JSON manifest.

        ``path`` is a directory (created if needed; an existing saved index there is
        replaced) that the *workers* write to, so on a multi-machine cluster it must be on
        storage shared by every worker (NFS, a cluster file system...). Each worker writes the
        shards it holds (atomically, temporary file + rename) and their sha256; the manifest
        is written last, atomically, so a directory with a manifest is complete.

        Returns the manifest (a dict).
        """
        self._require_fitted()
        directory = os.path.abspath(os.fspath(path))
        if self.sharding == "leaves":
            return self._save_leaves(directory)
        client = self.client
        ready = client.submit(_prepare_directory, directory, pure=False)
        tfile = client.submit(_save_template, self._template, directory, ready, pure=False)
        names = [f"shard-{j:05d}.avq" for j in range(len(self._shards))]
        entries = self._run_on_shards(
            lambda j, key: client.submit(_save_shard, self._shards[j], directory, names[j], ready, key=key),
            "save",
            None,
        )
        infos = self.shard_info()
        for j, (entry, info) in enumerate(zip(entries, infos)):
            entry.update(shard=j, ntotal=info["ntotal"], id_start=self._bounds[j][0], id_stop=self._bounds[j][1])
        manifest = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "avq_plugin_version": _package_version(),
            "sharding": "rows",
            "params": self._params(),
            "d": self._d,
            "num_leaves": self._num_leaves,
            "ntotal": self._ntotal,
            "n_shards": len(self._shards),
            "num_threads": self.num_threads,
            "quantizer": tfile.result(),
            "quantizer_fingerprint": self._fingerprint,
            "shards": entries,
        }
        client.submit(_write_manifest, directory, manifest, ready, pure=False).result()
        self._saved = (directory, manifest)
        return manifest

    @classmethod
    def load(cls, path, client=None, *, mmap=False, verify=True, num_threads=None, replicas=None):
        """Open a directory written by ``save``; every shard is loaded by a worker.

        Parameters
        ----------
        path : str or PathLike
            The directory, readable at the same path from every worker (shared storage).
        client : distributed.Client, optional
            Default: the current default client, or a new local ``Client()``.
        mmap : bool
            Memory-map the shards' codes and reorder vectors in the workers
            (``AVQIndex.load(mmap=True)``) instead of reading them into memory.
        verify : bool
            Check every file's sha256 against the manifest before loading it (reads every
            byte once). Sizes, the native format's structure and the shared quantizer are
            checked even without it.
        num_threads : int, optional
            Native threads per shard task (default: as saved).
        replicas : int, optional
            Copies of each leaf shard to keep on distinct workers (default: as saved).

        Raises
        ------
        ValueError
            Naming the shard, when a file is missing, truncated or corrupted, or the
            manifest is malformed or of a newer format version.
        """
        directory = os.path.abspath(os.fspath(path))
        if client is not None and not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        obj = cls.__new__(cls)
        obj._client = client
        obj._reset_state()
        client = obj.client
        manifest = client.submit(_read_manifest, directory, pure=False).result()
        _check_manifest(manifest, directory)
        for name in _PARAM_NAMES:
            setattr(obj, name, manifest["params"][name])
        obj.n_shards = manifest["n_shards"]
        obj.num_threads = V.resolve_threads(manifest["num_threads"] if num_threads is None else num_threads)
        obj.sharding = manifest.get("sharding", "rows")
        obj.replicas = V.check_int("replicas", manifest.get("replicas", 1) if replicas is None else replicas, minimum=1)
        if obj.sharding == "leaves":
            obj._load_leaves(directory, manifest, mmap, verify)
            return obj
        obj.replicas = 1
        tok = obj._token
        template = client.submit(_load_template, directory, manifest["quantizer"], bool(verify), key=f"avq-train-{tok}")
        workers = list(client.scheduler_info(n_workers=-1)["workers"]) or [None]
        shards = []
        for j, entry in enumerate(manifest["shards"]):
            shards.append(
                client.submit(
                    _load_shard,
                    directory,
                    j,
                    entry,
                    manifest["quantizer_fingerprint"],
                    bool(mmap),
                    bool(verify),
                    obj.num_threads,
                    key=f"avq-shard-{tok}-{j}",
                    # Spread the shards over the workers present; with none yet (e.g. one restarting),
                    # let the scheduler place them.
                    **(
                        {}
                        if workers[0] is None
                        else {"workers": workers[j % len(workers)], "allow_other_workers": True}
                    ),
                )
            )
        wait([template, *shards])
        errors = [f.exception() for f in [template, *shards] if f.status == "error"]
        if errors:
            raise ValueError("; ".join(str(e) for e in errors)) from errors[0]
        if template.result()[1] != manifest["quantizer_fingerprint"]:
            raise ValueError(f"{directory}: the quantizer file does not match the manifest")
        bounds = [(e["id_start"], e["id_stop"]) for e in manifest["shards"]]
        obj._adopt(template, shards, bounds, manifest["ntotal"], manifest["d"], manifest["num_leaves"])
        obj._saved = (directory, manifest)
        obj._mmap = bool(mmap)
        return obj

    # ================================================================== leaf-routed sharding
    def _require_leaves(self, what):
        self._require_fitted()
        if self.sharding != "leaves":
            raise ValueError(f"{what} needs sharding='leaves' (row shards are immutable)")

    def _live_workers(self):
        # Asked of the scheduler directly: Client.scheduler_info() returns the client's cached
        # identity, which its periodic refresh (without per-worker entries) can overwrite.
        client = self.client
        return list(client.sync(client.scheduler.identity, n_workers=-1)["workers"])

    def _fit_leaves(self, X, n, d, client):
        template_task, L = self._template_task(X, n)
        tok = self._token
        template = client.compute(template_task, optimize_graph=False)
        wait([template])
        data, fingerprint, messages = template.result()
        router = AVQIndex.from_bytes(data)
        router.num_threads = V.resolve_threads(None)
        workers = sorted(self._live_workers())
        S = self.n_shards or max(1, len(workers))
        if S > L:
            raise ValueError(f"n_shards={S} exceeds the number of leaves ({L})")
        if self.replicas > len(workers):
            raise ValueError(
                f"replicas={self.replicas} needs at least as many workers (the cluster has {len(workers)})"
            )
        lts_place = min(L, router.default_search_params()[0])
        row_chunks = X.chunks[0]
        offsets = np.concatenate([[0], np.cumsum(row_chunks)]).astype(np.int64)
        alloc = _allocate(min(n, _PLACEMENT_SAMPLE), row_chunks)
        blocks = X.to_delayed().ravel()
        assign_tasks = []
        for i, (block, size, m) in enumerate(zip(blocks, row_chunks, alloc)):
            rows = np.sort(np.random.default_rng([self.seed, i, 1]).choice(size, size=int(m), replace=False))
            assign_tasks.append(
                dask.delayed(W.assign_chunk, pure=True)(
                    template, block, rows, lts_place, dask_key_name=f"avq-assign-{tok}-{i}"
                )
            )
        assigned = client.compute(assign_tasks, optimize_graph=False)
        counts_f = [client.submit(W.chunk_counts, a, L, pure=False) for a in assigned]
        probes_f = [client.submit(_second, a, pure=False) for a in assigned]
        wait(counts_f + probes_f)
        for f in counts_f + probes_f:
            if f.status == "error":
                f.result()  # re-raises the worker's exception (e.g. NaN in a chunk)
        counts = np.sum(client.gather(counts_f), axis=0).astype(np.int64)
        probes = [p for p in client.gather(probes_f) if p is not None and len(p)]
        probes = np.concatenate(probes) if probes else np.zeros((0, lts_place), np.int32)
        groups = balanced_leaf_groups(router._probe_centers(), counts, S)
        groups = refine_leaf_groups(groups, probes, counts, S)

        piece_tasks = [
            [
                dask.delayed(W.rows_for_shard, pure=True)(block, assigned[i], groups, j, int(offsets[i]))
                for i, block in enumerate(blocks)
            ]
            for j in range(S)
        ]
        flat = client.compute([t for tasks in piece_tasks for t in tasks], optimize_graph=False)
        pieces = [flat[j * len(blocks) : (j + 1) * len(blocks)] for j in range(S)]
        builds = [
            client.submit(
                W.build,
                tok,
                j,
                template,
                self.num_threads,
                *pieces[j],
                key=f"avq-build-{tok}-{j}",
                workers=[workers[j % len(workers)]],
                allow_other_workers=True,
                pure=False,
            )
            for j in range(S)
        ]
        wait(builds)
        for f in builds:
            if f.status == "error":
                f.result()
        infos = client.gather(builds)
        del pieces, flat, assigned, builds, template  # the client keeps the quantizer's bytes
        self._template = None
        self._template_bytes = data
        self._fingerprint = fingerprint
        self._router = router
        self._default_budget = router.default_search_params()
        self._leaf_to_shard = groups
        self._leaf_sizes = counts
        self._holders = [[info["worker"]] for info in infos]
        self._n_shards = S
        self._ntotal, self._d, self._num_leaves, self._next_id = int(n), int(d), int(L), int(n)
        for message, category in messages:
            cat = {"UserWarning": UserWarning, "RuntimeWarning": RuntimeWarning}.get(category, UserWarning)
            warnings.warn(f"while training the shared quantizer: {message}", cat, stacklevel=3)
        self._add_replicas(wait_for_them=True)
        return self

    # ------------------------------------------------------------------ replicas
    def _run_pinned(self, calls, what, deadline=None):
        """Runs fn(*args) on worker w for each (w, fn, args); a call whose worker died (or lost
        the replica) gives (False, exc) and marks the worker lost; other errors propagate.
        Returns [(ok, result or exception)] in call order."""
        client = self.client
        call = uuid.uuid4().hex[:12]
        futs = [
            client.submit(fn, *args, key=f"avq-{what}-{call}-{i}", workers=[w], allow_other_workers=False, pure=False)
            for i, (w, fn, args) in enumerate(calls)
        ]
        out = [None] * len(futs)
        pending = set(range(len(futs)))
        try:
            while pending:
                try:
                    wait([futs[i] for i in pending], timeout=_POLL_S, return_when="FIRST_COMPLETED")
                except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
                    pass
                except concurrent.futures.CancelledError:
                    pass  # per-future status below
                progressed = False
                for i in sorted(pending):
                    f = futs[i]
                    if f.status == "pending":
                        continue
                    pending.discard(i)
                    progressed = True
                    if f.status == "finished":
                        out[i] = (True, f.result())
                        continue
                    exc = f.exception() if f.status == "error" else concurrent.futures.CancelledError(f.status)
                    if isinstance(exc, W.ReplicaMissing) or _is_loss(exc):
                        out[i] = (False, exc)
                        self._mark_lost(calls[i][0])
                    else:
                        raise exc
                if pending and not progressed:
                    live = set(self._live_workers())
                    for i in sorted(pending) if live else ():
                        if calls[i][0] not in live:
                            pending.discard(i)
                            out[i] = (False, RuntimeError(f"worker {calls[i][0]} left the cluster"))
                            self._mark_lost(calls[i][0])
                if deadline is not None and pending and time.monotonic() > deadline:
                    raise TimeoutError(f"{what}: the workers did not answer in time")
        finally:
            for i in pending:
                futs[i].cancel()
        return out

    def _mark_lost(self, w):
        with self._lock:
            for hs in self._holders:
                if w in hs:
                    hs.remove(w)

    def _refresh_replicas(self):
        """Forgets replicas on workers that left; starts rebuilding missing replicas."""
        live = set(self._live_workers())
        if not live:
            return  # no worker at all: leave the table as it is (the search fails on its tasks)
        with self._lock:
            for hs in self._holders:
                hs[:] = [w for w in hs if w in live]
        self._add_replicas(live=live)

    def _add_replicas(self, wait_for_them=False, live=None):
        """Copies shards with fewer than `replicas` live replicas from a surviving one to other
        workers (Dask moves the bytes); in the background unless wait_for_them. Not while an
        update runs (the update waits for the copies instead)."""
        if self.replicas == 1 and not self._rebuilding:
            return
        if not self._update_lock.acquire(blocking=False):
            return
        try:
            client = self.client
            live = set(self._live_workers()) if live is None else live
            started = []
            with self._lock:
                for j, (target, fut) in list(self._rebuilding.items()):
                    if fut.done() or target not in live:
                        fut.cancel()
                        del self._rebuilding[j]
                load = {w: 0 for w in live}
                for hs in self._holders:
                    for w in hs:
                        load[w] = load.get(w, 0) + 1
                for j, hs in enumerate(self._holders):
                    if not hs or len(hs) >= self.replicas or j in self._rebuilding:
                        continue
                    candidates = sorted((load[w], w) for w in live if w not in hs)
                    if not candidates:
                        continue
                    target = candidates[0][1]
                    load[target] += 1
                    key = f"{self._token}-{j}-{uuid.uuid4().hex[:8]}"
                    blob = client.submit(
                        W.to_bytes, self._token, j, key=f"avq-copy-{key}", workers=[hs[0]], allow_other_workers=False
                    )
                    fut = client.submit(
                        W.put_bytes,
                        self._token,
                        j,
                        blob,
                        self.num_threads,
                        key=f"avq-replica-{key}",
                        workers=[target],
                        allow_other_workers=False,
                    )
                    self._rebuilding[j] = (target, fut)
                    fut.add_done_callback(lambda f, j=j, target=target: self._replica_done(j, target, f))
                    started.append(fut)
        finally:
            self._update_lock.release()
        if wait_for_them and started:
            self._wait_rebuilds()
            for hs in self._holders:
                if len(hs) < min(self.replicas, len(live)):
                    raise RuntimeError("could not place every replica (workers left during the build)")

    def _replica_done(self, j, target, fut):
        with self._lock:
            if self._rebuilding.get(j, (None, None))[1] is fut:
                del self._rebuilding[j]
            if fut.status == "finished" and target not in self._holders[j]:
                self._holders[j].append(target)

    def _wait_rebuilds(self):
        """Blocks until no replica copy is in flight (copies to or from dead workers are dropped)."""
        while True:
            with self._lock:
                futs = [f for _, f in self._rebuilding.values() if not f.done()]
            if not futs:
                with self._lock:  # callbacks may not have run yet
                    for j, (target, f) in list(self._rebuilding.items()):
                        self._replica_done(j, target, f)
                return
            try:
                wait(futs, timeout=_POLL_S)
            except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
                live = set(self._live_workers())
                with self._lock:
                    for j, (target, f) in list(self._rebuilding.items()):
                        if target not in live or not self._holders[j]:
                            f.cancel()
                            del self._rebuilding[j]
            except concurrent.futures.CancelledError:
                pass

    def _holders_or_recover(self, j):
        """Live replica workers of shard j; reloads the saved copy when none is left."""
        with self._lock:
            hs = list(self._holders[j])
        if hs:
            return hs
        if self._saved is not None and j not in self._dirty:
            directory, manifest = self._saved
            live = self._live_workers()
            with self._lock:
                load = {w: sum(w in h for h in self._holders) for w in live}
            for w in sorted(live, key=lambda w: (load[w], w)):
                args = (
                    self._token,
                    j,
                    directory,
                    manifest["shards"][j],
                    manifest["quantizer_fingerprint"],
                    self._mmap,
                    True,
                    self.num_threads,
                    _quantizer_fingerprint,
                )
                ((ok, _),) = self._run_pinned([(w, W.load, args)], "reload")
                if ok:
                    with self._lock:
                        self._holders[j] = [w]
                    return [w]
        hint = (
            " (its saved copy predates later updates)"
            if self._saved is not None
            else " (save() the index, or use replicas=2, so that a lost shard can be recovered)"
        )
        raise ShardLostError(f"shard(s) {j} lost (a worker died) and could not be recovered{hint}", [j])

    def _recover_all(self, shards):
        """Recovers every listed shard that has no live replica; one ShardLostError naming all
        the shards that cannot be recovered."""
        lost = []
        for j in sorted(shards):
            try:
                self._holders_or_recover(j)
            except ShardLostError:
                lost.append(j)
        if lost:
            hint = (
                " (their saved copy predates later updates)"
                if self._saved is not None
                else " (save() the index, or use replicas=2, so that a lost shard can be recovered)"
            )
            raise ShardLostError(
                f"shard(s) {', '.join(map(str, lost))} lost (a worker died) and could not be recovered{hint}", lost
            )

    # ------------------------------------------------------------------ routed search
    def _search_routed(self, Q, k, lts, rk, nt, timeout):
        t0 = time.perf_counter()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._refresh_replicas()
        nq = Q.shape[0]
        P = self._router._probe(Q, lts)
        P = self._widen_short_probes(Q, P, k)
        jobs, visited, rerank, total = route_queries(P, self._leaf_to_shard, self._leaf_sizes, self._n_shards, k, rk)
        client_s = time.perf_counter() - t0
        parts, tasks, shard_tasks = [], 0, 0
        remaining = dict(jobs)
        while remaining:
            t1 = time.perf_counter()
            # Each shard to its least busy live replica (work = candidates to scan).
            busy = {}
            plan = {}
            self._recover_all(remaining)
            for j in sorted(remaining, key=lambda j: -remaining[j][3]):
                hs = self._holders_or_recover(j)
                w = min(hs, key=lambda w: (busy.get(w, 0), w))
                busy[w] = busy.get(w, 0) + remaining[j][3]
                plan.setdefault(w, []).append(j)
            calls, rows_of_call = [], []
            for w, shards in plan.items():
                rows_w = np.unique(np.concatenate([remaining[j][0] for j in shards]))
                job_list = [
                    (j, np.searchsorted(rows_w, remaining[j][0]), remaining[j][1], remaining[j][2]) for j in shards
                ]
                calls.append((w, W.search, (self._token, Q[rows_w], k, job_list, self.metric, nt)))
                rows_of_call.append(rows_w)
            client_s += time.perf_counter() - t1
            results = self._run_pinned(calls, "search", deadline)
            tasks += len(calls)
            shard_tasks += sum(len(s) for s in plan.values())
            for shards, (ok, res), rows_w in zip(plan.values(), results, rows_of_call):
                if ok:
                    parts.append((rows_w, res[0], res[1]))
                    for j in shards:
                        remaining.pop(j)
        t2 = time.perf_counter()
        D, I = merge_rows(nq, k, parts, self.metric)
        client_s += time.perf_counter() - t2
        self._stats = {
            "queries": int(nq),
            "shards_visited_per_query": float(visited.mean()) if nq else 0.0,
            "shard_tasks": int(shard_tasks),
            "dask_tasks": int(tasks),
            "candidates_scanned_per_query": float(total.mean()) if nq else 0.0,
            "reranked_per_query": float(rerank.mean()) if nq else 0.0,
            "client_seconds": client_s,
        }
        if self.replicas > 1:
            self._add_replicas()
        return D, I

    def _widen_short_probes(self, Q, P, k):
        """As one AVQIndex does: a query whose probed leaves hold fewer than k vectors probes
        the next leaves, best first, until they hold k (or every leaf is probed)."""
        need = min(k, self._ntotal)
        short = np.flatnonzero(self._leaf_sizes[P].sum(axis=1) < need)
        if not len(short):
            return P
        full = self._router._probe(Q[short], self._num_leaves)
        cum = np.cumsum(self._leaf_sizes[full], axis=1)
        n_probe = np.minimum((cum < need).sum(axis=1) + 1, full.shape[1])
        width = max(P.shape[1], int(n_probe.max()))
        wide = np.full((P.shape[0], width), -1, np.int32)
        wide[:, : P.shape[1]] = P
        wide[short] = np.where(np.arange(width) < n_probe[:, None], full[:, :width], -1)
        return wide

    def search_stats(self):
        """Routing figures of the last ``search`` call (a dict), or None before any search.

        ``shards_visited_per_query`` (mean), ``shard_tasks`` (shard sub-batches searched,
        retries included), ``dask_tasks`` (tasks submitted: one per worker per round),
        ``candidates_scanned_per_query`` (vectors in the probed leaves, mean; None for row
        shards), ``reranked_per_query`` (candidates re-scored exactly over all shards, at most
        about ``reorder_k`` + k per visited shard; None for row shards, where it is up to
        n_shards x reorder_k) and ``client_seconds`` (time the client spent routing and
        merging, waiting excluded).
        """
        return None if self._stats is None else dict(self._stats)

    # ------------------------------------------------------------------ updates
    def add(self, X, ids=None):
        """Add vectors (sharding="leaves"): each goes to the shard owning its leaf, on every replica.

        ids : int64 (n,), optional
            Default: max id + 1 onwards. An id already in the index is a ValueError (nothing is
            added). Searches may run meanwhile (they see each shard before or after the add).

        Returns self.
        """
        self._require_leaves("add")
        X = V.as_float_matrix(X, "X", d=self._d, nonzero_rows=self.metric == "cosine")
        ids = V.as_ids(ids, X.shape[0])
        with self._update_lock:
            if ids is None:
                ids = np.arange(self._next_id, self._next_id + X.shape[0], dtype=np.int64)
            self._check_new_ids(ids)
            leaves = self._router._probe(X, 1)[:, 0]
            shard = self._leaf_to_shard[leaves]
            self._wait_rebuilds()
            calls, owner = [], []
            for j in np.unique(shard):
                sel = np.flatnonzero(shard == j)
                for w in self._holders_or_recover(int(j)):
                    calls.append((w, W.add, (self._token, int(j), X[sel], ids[sel])))
                    owner.append(int(j))
            results = self._run_pinned(calls, "add")
            applied = {j for j, (ok, _) in zip(owner, results) if ok}
            lost = sorted(set(owner) - applied)
            with self._lock:
                np.add.at(self._leaf_sizes, leaves[np.isin(shard, list(applied))], 1)
                self._ntotal += int(np.isin(shard, list(applied)).sum())
                self._next_id = max(self._next_id, int(ids.max()) + 1)
                self._dirty.update(int(j) for j in np.unique(shard))
            if lost:
                raise ShardLostError(
                    f"shard(s) {', '.join(map(str, lost))} lost every replica during add; their vectors were not added",
                    lost,
                )
        self._add_replicas()
        return self

    def _check_new_ids(self, ids):
        calls = [(self._holders_or_recover(j)[0], W.contains, (self._token, j, ids)) for j in range(self._n_shards)]
        for ok, res in self._run_pinned(calls, "contains"):
            if not ok:
                raise ShardLostError("a worker died while ids were checked; retry", [])
            if res.any():
                raise ValueError(f"id {int(ids[np.argmax(res)])} is already in the index")

    def remove(self, ids):
        """Delete vectors by id from every shard and replica (sharding="leaves"). Returns the number removed."""
        self._require_leaves("remove")
        ids = V.as_ids(ids, None, unique=False, reject_padding=False)
        with self._update_lock:
            self._wait_rebuilds()
            calls, owner = [], []
            for j in range(self._n_shards):
                for w in self._holders_or_recover(j):
                    calls.append((w, W.remove, (self._token, j, ids)))
                    owner.append(j)
            results = self._run_pinned(calls, "remove")
            removed, done = 0, set()
            with self._lock:
                for j, (ok, res) in zip(owner, results):
                    if not ok or j in done:
                        continue
                    done.add(j)
                    count, sizes = res
                    removed += count
                    mine = self._leaf_to_shard == j
                    self._leaf_sizes[mine] = sizes[mine]
                    if count:
                        self._dirty.add(j)
                self._ntotal -= removed
            lost = sorted(set(range(self._n_shards)) - done)
            if lost:
                raise ShardLostError(f"shard(s) {', '.join(map(str, lost))} lost every replica during remove", lost)
        return removed

    # ------------------------------------------------------------------ leaves: inspection, save, load
    def _shard_info_leaves(self):
        self._refresh_replicas()
        calls, owner = [], []
        for j in range(self._n_shards):
            for w in self._holders_or_recover(j):
                calls.append((w, W.info, (self._token, j)))
                owner.append(j)
        infos = {}
        for j, (ok, res) in zip(owner, self._run_pinned(calls, "info")):
            if ok:
                infos.setdefault(j, dict(res, workers=[], replica_memory_usage=0))
                infos[j]["workers"].append(res["worker"])
                infos[j]["replica_memory_usage"] += res["memory_usage"]
        out = []
        for j in range(self._n_shards):
            info = infos.get(j, {"shard": j, "workers": []})
            info.pop("worker", None)
            info["workers"] = sorted(info["workers"])
            info["num_leaves"] = int((self._leaf_to_shard == j).sum())
            out.append(info)
        return out

    def _save_leaves(self, directory):
        client = self.client
        client.submit(_prepare_directory, directory, pure=False).result()
        qentry = client.submit(
            _write_bytes_entry, directory, _QUANTIZER_FILE, self._template_bytes, pure=False
        ).result()
        names = [f"shard-{j:05d}.avq" for j in range(self._n_shards)]
        entries = {}
        todo = set(range(self._n_shards))
        while todo:
            calls = [
                (self._holders_or_recover(j)[0], W.save, (self._token, j, directory, names[j])) for j in sorted(todo)
            ]
            for j, (ok, res) in zip(sorted(todo), self._run_pinned(calls, "save")):
                if ok:
                    entries[j] = dict(res, shard=j)
                    todo.discard(j)
        manifest = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "avq_plugin_version": _package_version(),
            "sharding": "leaves",
            "params": self._params(),
            "d": self._d,
            "num_leaves": self._num_leaves,
            "ntotal": sum(e["ntotal"] for e in entries.values()),
            "n_shards": self._n_shards,
            "replicas": self.replicas,
            "num_threads": self.num_threads,
            "next_id": self._next_id,
            "leaf_to_shard": [int(s) for s in self._leaf_to_shard],
            "leaf_sizes": [int(s) for s in self._leaf_sizes],
            "quantizer": qentry,
            "quantizer_fingerprint": self._fingerprint,
            "shards": [entries[j] for j in range(self._n_shards)],
        }
        client.submit(_write_manifest_task, directory, manifest, pure=False).result()
        self._saved = (directory, manifest)
        self._dirty = set()
        return manifest

    def _load_leaves(self, directory, manifest, mmap, verify):
        client = self.client
        data, fingerprint, _ = client.submit(
            _load_template, directory, manifest["quantizer"], bool(verify), pure=False
        ).result()
        if fingerprint != manifest["quantizer_fingerprint"]:
            raise ValueError(f"{directory}: the quantizer file does not match the manifest")
        workers = sorted(self._live_workers())
        if not workers:
            raise ValueError("the cluster has no workers to load the shards")
        S = manifest["n_shards"]
        R = min(self.replicas, len(workers))
        calls, owner = [], []
        for j, entry in enumerate(manifest["shards"]):
            for r in range(R):
                w = workers[(j + r) % len(workers)]
                args = (self._token, j, directory, entry, fingerprint, bool(mmap), bool(verify), self.num_threads)
                calls.append((w, W.load, (*args, _quantizer_fingerprint)))
                owner.append(j)
        try:
            results = self._run_pinned(calls, "load")
        except ValueError:
            client.run(W.drop, self._token)
            raise
        self._holders = [[] for _ in range(S)]
        for j, (w, _, _), (ok, _) in zip(owner, calls, results):
            if ok:
                self._holders[j].append(w)
        self._router = AVQIndex.from_bytes(data)
        self._router.num_threads = V.resolve_threads(None)
        self._default_budget = self._router.default_search_params()
        self._template_bytes = data
        self._fingerprint = fingerprint
        self._leaf_to_shard = np.asarray(manifest["leaf_to_shard"], np.int32)
        self._leaf_sizes = np.asarray(manifest["leaf_sizes"], np.int64)
        self._n_shards = S
        self._ntotal, self._d, self._num_leaves = manifest["ntotal"], manifest["d"], manifest["num_leaves"]
        self._next_id = manifest["next_id"]
        self._saved = (directory, manifest)
        self._mmap = bool(mmap)
        self._add_replicas(wait_for_them=True)


def _second(pair):
    return pair[1]


def _write_bytes_entry(directory, name, data):
    path = os.path.join(directory, name)
    _atomic_write_bytes(path, data)
    return {"file": name, "bytes": os.path.getsize(path), "sha256": _file_sha256(path)}


def _write_manifest_task(directory, manifest):
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    _atomic_write_bytes(os.path.join(directory, MANIFEST_NAME), data)
    return True
