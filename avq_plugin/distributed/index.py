"""ShardedAVQIndex: an AVQ index split into shards held by the workers of a Dask cluster.

The public class; its parts are mixins by job: ``rows.py`` (sharding="rows"), ``leaves.py``
(sharding="leaves": placement, routed search, updates), ``replicas.py`` (replica bookkeeping),
``base.py`` (shared state, training of the shared quantizer). Worker-side tasks are in
``worker.py``; merging in ``merge.py``; the on-disk manifest in ``manifest.py``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .. import _validation as V
from ..index import AVQIndex
from . import worker as W
from .base import Client, ShardLostError, da
from .leaves import _LeafShards
from .manifest import _PARAM_NAMES, FORMAT_VERSION, MANIFEST_NAME, _check_manifest, _read_manifest
from .merge import merge_rows, merge_topk
from .rows import _RowShards
from .sources import _as_sources, _sources_to_dask

__all__ = ["ShardedAVQIndex", "ShardLostError", "merge_topk", "merge_rows", "MANIFEST_NAME", "FORMAT_VERSION"]

_SHARDINGS = ("leaves", "rows")


class ShardedAVQIndex(_LeafShards, _RowShards):
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
        cluster, started under :func:`serving_config`) when there is none.
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
        dims_per_block=None,
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
        return self._fit_rows(X, n, d, client, file_bounds)

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
        return self._shard_info_rows()

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

    def search(
        self, Q, k=10, leaves_to_search=None, reorder_k=None, *, num_threads=None, timeout=None, leaf_margin=None
    ):
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
        leaf_margin : float >= 0, optional
            Query-adaptive probing, as ``AVQIndex.search`` (metric 'cosine' or 'dot'; default
            None: off, the fixed count; 0 is the same). Leaf sharding: the client chooses each
            query's leaves with the margin and its budget grows as ``AVQIndex.search``'s,
            ``reorder_k`` x sqrt(its leaves / ``leaves_to_search``), before the split across
            shards; with a budget covering the probed leaves the answers equal one
            ``AVQIndex`` searched with the same margin. Row sharding: every shard searches with
            the margin.

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
        margin = V.check_leaf_margin(leaf_margin)
        if margin is not None and self.metric == "l2":
            raise ValueError(f"leaf_margin applies to metric 'cosine' or 'dot', not {self.metric!r}: leave it None")
        if margin == 0.0:
            margin = None  # the fixed count, as AVQIndex.search
        if self.sharding == "leaves":
            return self._search_routed(Q, k, min(lts, self._num_leaves), rk, nt, timeout, margin)
        return self._search_rows(Q, k, lts, rk, nt, timeout, margin)

    def search_stats(self):
        """Routing figures of the last ``search`` call (a dict), or None before any search.

        ``shards_visited_per_query`` (mean), ``shard_tasks`` (shard sub-batches searched,
        retries included), ``dask_tasks`` (calls on the workers' search actors: one per worker per round),
        ``candidates_scanned_per_query`` (vectors in the probed leaves, mean; None for row
        shards), ``reranked_per_query`` (candidates re-scored exactly over all shards, about
        ``reorder_k`` plus up to k per visited search group, the shards of one worker placed
        together; None for row shards, where it is up to n_shards x reorder_k) and ``client_seconds`` (time the client spent routing and
        merging, waiting excluded).
        """
        return None if self._stats is None else dict(self._stats)

    # ------------------------------------------------------------------ files
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
        return self._save_rows(directory)

    @classmethod
    def load(cls, path, client=None, *, mmap=False, verify=True, num_threads=None, replicas=None):
        """Open a directory written by ``save``; every shard is loaded by a worker.

        Parameters
        ----------
        path : str or PathLike
            The directory, readable at the same path from every worker (shared storage).
        client : distributed.Client, optional
            Default: the current default client, or a new local ``Client()`` (as in the
            constructor).
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
        obj._load_rows(directory, manifest, mmap, verify)
        return obj
