"""Sharded AVQ indexes on a Dask cluster: build, search and save beyond one machine.

:class:`ShardedAVQIndex` splits the vectors into shards, each an :class:`~avq_plugin.AVQIndex`
that lives in the memory of a Dask worker, and answers queries by broadcasting them to every
shard and merging the shards' top-k on the client.

Design (see docs/dask.md for the full discussion):

- **One quantizer.** The partition centres and the PQ codebooks are trained once, in a worker,
  on a sample drawn from every row chunk of the input (each chunk gives a share of the sample
  proportional to its size, chosen with a seeded generator). The trained-but-empty index is
  serialized (``AVQIndex.to_bytes``) and every shard starts from those bytes, so the leaves,
  the codes and therefore the scores of a vector are the same whichever shard holds it.
- **Shards.** Shard ``j`` holds the contiguous global rows ``[start_j, stop_j)`` of the input,
  with their row numbers as int64 ids. It is encoded by one task in a worker (the whole
  data set is never gathered in one process) and stays resident there as a Dask future.
- **Search.** The query batch is scattered once to every worker; each shard returns its local
  top-k (global ids); the client merges them by (score, id), -1 padding last. See
  :func:`merge_topk` for when the merged result is provably identical to a single index.
- **Persistence.** ``save(path)`` writes one native index file per shard (atomically, by the
  worker holding the shard), the trained quantizer, and a JSON manifest with sha256 checksums;
  ``load`` verifies them and fails with a ValueError naming the bad shard.
- **Failures.** A shard lost with its worker is recomputed by Dask from its lineage (re-read
  from its file for a loaded index, re-encoded from the source chunks for a fitted one); when
  that fails and the index has been saved, the shard is reloaded from its file; otherwise
  :class:`ShardLostError` names the shard. A search never returns results with a shard missing.

Needs the ``distributed`` extra: ``pip install "avq-plugin[distributed]"``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import math
import os
import uuid
import warnings

import numpy as np

from . import _validation as V
from .index import DEFAULT_PROBE_FRACTION, DEFAULT_REORDER_K, AVQIndex

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

__all__ = ["ShardedAVQIndex", "ShardLostError", "merge_topk", "MANIFEST_NAME", "FORMAT_VERSION"]

#: File name of the manifest inside a saved sharded index directory.
MANIFEST_NAME = "manifest.json"
#: Version of the manifest layout written by ``save``; ``load`` rejects newer ones.
FORMAT_VERSION = 1
_FORMAT_NAME = "avq-sharded-index"
_QUANTIZER_FILE = "quantizer.avq"
# Rows per chunk when a list of files is read (a chunk is the unit of reading and sampling).
_FILE_CHUNK_ROWS = 1 << 18
_FLT_MAX = float(np.finfo(np.float32).max)
# AVQIndex parameters a sharded index passes on to its shards (and stores in the manifest).
_PARAM_NAMES = (
    "metric",
    "num_leaves",
    "dims_per_block",
    "anisotropic_threshold",
    "eta",
    "eta_formula",
    "reorder",
    "leaves_to_search",
    "reorder_k",
    "training_iterations",
    "kmeans_iterations",
    "training_sample_size",
    "seed",
)


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


# ---------------------------------------------------------------------------------- merging
def merge_topk(D_parts, I_parts, k, metric):
    """Merge per-shard top-k results into the global top-k.

    Parameters
    ----------
    D_parts, I_parts : sequences of arrays (nq, k_s)
        Each shard's scores (float32) and global ids (int64, -1 for padding), as returned by
        ``AVQIndex.search``.
    k : int
        Results per query.
    metric : {"dot", "cosine", "l2"}
        Larger scores are better for dot and cosine, smaller distances for l2.

    Returns
    -------
    D : float32 (nq, k)
    I : int64 (nq, k)
        Best first; ties in score are broken by the smaller id; padding (id -1, score
        -FLT_MAX or +FLT_MAX for l2) comes last, whatever its score.

    Notes
    -----
    A single ``AVQIndex`` orders equal scores by (leaf, position in the leaf). A shard adds its
    rows in id order, so within one leaf position order is id order, and merging by
    (score, id) reproduces the single index exactly unless two *different leaves* give exactly
    equal float32 scores at the boundary. Under that proviso the merge is identical to one
    index over all the data with the same quantizer whenever the shards' candidate sets are
    identical to the restriction of the single index's: with ``reorder="none"`` (every shard
    keeps its k best quantized scores, and the global k best are among them), and with
    reordering when ``reorder_k`` is at least the number of vectors in the probed leaves. With
    a smaller ``reorder_k`` every shard re-scores its own ``reorder_k`` best candidates, a
    superset of the single index's, so with float32 reordering the sharded recall is at least
    the single index's for the same per-shard budget (and the cost is n_shards times larger).
    """
    metric = V.check_metric(metric)
    if len(D_parts) != len(I_parts) or not len(D_parts):
        raise ValueError("merge_topk needs as many score arrays as id arrays, at least one")
    D = np.concatenate([np.asarray(d, np.float32) for d in D_parts], axis=1)
    I = np.concatenate([np.asarray(i, np.int64) for i in I_parts], axis=1)
    if D.shape != I.shape:
        raise ValueError(f"score and id arrays do not match: {D.shape} vs {I.shape}")
    pad = I < 0
    # Sort keys, ascending: the primary key puts the best score first and padding last.
    primary = (D if metric == "l2" else -D).astype(np.float64)
    primary[pad] = np.inf
    secondary = np.where(pad, np.iinfo(np.int64).max, I)
    order = np.lexsort((secondary, primary), axis=1)[:, :k]
    Dm = np.take_along_axis(D, order, axis=1)
    Im = np.take_along_axis(I, order, axis=1)
    if Dm.shape[1] < k:  # fewer candidates than k in total
        extra = k - Dm.shape[1]
        Dm = np.concatenate([Dm, np.zeros((Dm.shape[0], extra), np.float32)], axis=1)
        Im = np.concatenate([Im, np.full((Im.shape[0], extra), -1, np.int64)], axis=1)
    padded = Im < 0
    Dm[padded] = _FLT_MAX if metric == "l2" else -_FLT_MAX
    Im[padded] = -1
    return np.ascontiguousarray(Dm, np.float32), np.ascontiguousarray(Im, np.int64)


# ---------------------------------------------------------------------------------- worker tasks
# Module-level functions so that workers import them by name (pickled by reference).
def _read_source_shape(spec):
    """(n, d) of a .npy file or an HDF5 dataset, read from the header only."""
    path, dataset = spec
    if dataset is None:
        arr = np.load(path, mmap_mode="r")
        shape = arr.shape
    else:
        import h5py

        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise ValueError(f"{path}: no dataset {dataset!r} (has {sorted(f.keys())})")
            shape = f[dataset].shape
    if len(shape) != 2:
        raise ValueError(f"{path}: expected a 2-D array of vectors, got shape {shape}")
    return tuple(int(s) for s in shape)


def _read_source_rows(spec, start, stop):
    """Rows [start, stop) of a .npy file or an HDF5 dataset, as float32."""
    path, dataset = spec
    if dataset is None:
        rows = np.load(path, mmap_mode="r")[start:stop]
    else:
        import h5py

        with h5py.File(path, "r") as f:
            rows = f[dataset][start:stop]
    return np.ascontiguousarray(rows, dtype=np.float32)


def _take_rows(block, rows):
    return np.ascontiguousarray(np.asarray(block)[rows], dtype=np.float32)


def _quantizer_fingerprint(index):
    """sha256 of what makes scores comparable across shards: centres, codebooks, parameters."""
    native = index._index
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(native.centers(), np.float32).tobytes())
    h.update(np.ascontiguousarray(native.codebooks(), np.float32).tobytes())
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


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_bytes(path, data):
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prepare_directory(path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, MANIFEST_NAME)):
        raise ValueError(f"{path} is a non-empty directory without a {MANIFEST_NAME}: refusing to write into it")
    os.makedirs(path, exist_ok=True)
    return True


def _save_shard(index, directory, name, ready):
    path = os.path.join(directory, name)
    index.save(path)  # native: temporary file + rename
    return {"file": name, "bytes": os.path.getsize(path), "sha256": _file_sha256(path)}


def _save_template(template, directory, ready):
    path = os.path.join(directory, _QUANTIZER_FILE)
    _atomic_write_bytes(path, template[0])
    return {"file": _QUANTIZER_FILE, "bytes": os.path.getsize(path), "sha256": _file_sha256(path)}


def _write_manifest(directory, manifest, ready):
    # Written last, atomically: a directory with a manifest always has every file it lists.
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    _atomic_write_bytes(os.path.join(directory, MANIFEST_NAME), data)
    return True


def _read_manifest(directory):
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"{directory}: not a saved sharded index (no {MANIFEST_NAME})")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: corrupted manifest ({exc})") from None


def _check_file(directory, entry, what, verify):
    path = os.path.join(directory, entry["file"])
    if not os.path.isfile(path):
        raise ValueError(f"{what} is missing: {path}")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        raise ValueError(f"{what} is corrupt: {path} has {size} bytes, the manifest says {entry['bytes']}")
    if verify and _file_sha256(path) != entry["sha256"]:
        raise ValueError(f"{what} is corrupt: sha256 of {path} does not match the manifest")
    return path


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


# ---------------------------------------------------------------------------------- input
def _as_sources(X):
    """A list of paths -> [(path, dataset or None)]; anything else -> None."""
    if isinstance(X, (str, os.PathLike)):
        X = [X]
    if not isinstance(X, (list, tuple)) or not X:
        return None
    if not all(isinstance(p, (str, os.PathLike, tuple)) for p in X):
        return None
    specs = []
    for item in X:
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise ValueError(f"an HDF5 source is (path, dataset name), got {item!r}")
            path, dataset = os.fspath(item[0]), item[1]
        else:
            path = os.fspath(item)
            dataset = None if path.endswith(".npy") else "train"
        if dataset is None and not path.endswith(".npy"):
            raise ValueError(f"{path}: only .npy files and HDF5 datasets can be read")
        if dataset is not None and not path.endswith((".h5", ".hdf5", ".hdf")):
            raise ValueError(f"{path}: expected a .npy, .h5 or .hdf5 file")
        specs.append((path, dataset))
    return specs


def _sources_to_dask(specs, client):
    shapes = client.gather(client.map(_read_source_shape, specs, pure=False))
    dims = {s[1] for s in shapes}
    if len(dims) != 1:
        raise ValueError(f"the files have different dimensions: {[s[1] for s in shapes]}")
    d = dims.pop()
    pieces, file_bounds, offset = [], [0], 0
    for spec, (n, _) in zip(specs, shapes):
        for a in range(0, n, _FILE_CHUNK_ROWS):
            b = min(n, a + _FILE_CHUNK_ROWS)
            name = f"avq-read-{dask.base.tokenize(spec, a, b)}"
            part = dask.delayed(_read_source_rows, pure=True)(spec, a, b, dask_key_name=name)
            pieces.append(da.from_delayed(part, shape=(b - a, d), dtype=np.float32))
        offset += n
        file_bounds.append(offset)
    pieces = [p for p in pieces if p.shape[0]]
    if not pieces:
        raise ValueError("the files hold no vectors")
    return da.concatenate(pieces, axis=0), file_bounds


def _allocate(total, sizes):
    """Splits `total` over chunks proportionally to `sizes` (largest remainders, deterministic)."""
    sizes = np.asarray(sizes, np.int64)
    exact = total * sizes / sizes.sum()
    alloc = np.floor(exact).astype(np.int64)
    rest = int(total - alloc.sum())
    if rest:
        order = np.lexsort((np.arange(sizes.size), -(exact - alloc)))
        alloc[order[:rest]] += 1
    return np.minimum(alloc, sizes)


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
        Number of shards, each a contiguous range of rows. None: one shard per row chunk of a
        dask array, or per file of a list of files.
    training_sample_size : int or None
        Rows sampled across all chunks to train the quantizer; None: min(n, max(100000,
        64 * num_leaves)), as for ``AVQIndex``. The sample is gathered in one worker.
    num_threads : int
        Native threads per shard task (encoding and search). Dask already runs one task per
        worker thread, so 1 (the default) keeps every core busy without oversubscription.
        Training, a single task, uses every core of its worker.
    client : distributed.Client or None
        The cluster to use. None: the current default client, or a new ``Client()`` (a local
        cluster) when there is none.

    Attributes
    ----------
    ntotal : int
        Number of indexed vectors.
    shard_bounds_ : list of (int, int)
        Global row (= id) range [start, stop) of each shard.

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
        return bool(self._shards)

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
        self._require_fitted()
        return list(self._bounds)

    @property
    def saved_path(self):
        """Directory the index was last saved to or loaded from (None otherwise)."""
        return None if self._saved is None else self._saved[0]

    def __repr__(self):
        state = f"{len(self._shards)} shards, ntotal={self._ntotal}" if self._shards else "not fitted"
        return f"ShardedAVQIndex(metric={self.metric!r}, dims_per_block={self.dims_per_block}, reorder={self.reorder!r}; {state})"

    def __reduce__(self):
        raise TypeError("a ShardedAVQIndex holds live Dask futures and cannot be pickled: use save() and load()")

    def _require_fitted(self):
        if not self._shards:
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

        # Shards: contiguous row ranges.
        if self.n_shards is None:
            edges = list(file_bounds) if file_bounds is not None else [0, *np.cumsum(X.chunks[0]).tolist()]
        else:
            if self.n_shards > n:
                raise ValueError(f"n_shards={self.n_shards} exceeds the number of vectors ({n})")
            edges = [(n * j) // self.n_shards for j in range(self.n_shards + 1)]
        bounds = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

        # Training sample, from every row chunk.
        L = self.num_leaves or max(1, int(round(math.sqrt(n))))
        S = min(n, self.training_sample_size or max(100000, 64 * L))
        if L > S:
            raise ValueError(f"num_leaves={L} exceeds the training sample ({S} vectors)")
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
        params = dict(self._params(), num_leaves=L, training_sample_size=S)
        tok = self._token
        template = dask.delayed(_train_template, pure=True)(params, -1, *parts, dask_key_name=f"avq-train-{tok}")

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

    def _adopt(self, template, shards, bounds, n, d, L):
        _, fingerprint, messages = template.result()
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
        return AVQIndex.from_bytes(self._template.result()[0])

    def shard_info(self):
        """Per shard: ntotal, id range, memory_usage, code_size, is_mapped, worker address."""
        self._require_fitted()
        client = self.client
        infos = client.gather([client.submit(_shard_info, s, pure=False) for s in self._shards])
        where = client.who_has(self._shards)
        for j, (info, s) in enumerate(zip(infos, self._shards)):
            info["shard"] = j
            info["start"], info["stop"] = self._bounds[j]
            info["workers"] = sorted(where.get(s.key, ()))
        return infos

    def memory_usage(self):
        """Bytes held by all shards (sum of ``AVQIndex.memory_usage``)."""
        return sum(i["memory_usage"] for i in self.shard_info())

    def release(self):
        """Drop the shards from the workers' memory (the index becomes unfitted)."""
        self._reset_state()

    # ------------------------------------------------------------------ search
    def default_search_params(self):
        """(leaves_to_search, reorder_k) used when search() is not given them (as AVQIndex)."""
        self._require_fitted()
        L = self._num_leaves
        lts = self.leaves_to_search or max(1, min(L, int(math.ceil(DEFAULT_PROBE_FRACTION * L))))
        return lts, self.reorder_k or DEFAULT_REORDER_K

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
        return merge_topk([p[0] for p in parts], [p[1] for p in parts], k, self.metric)

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
    def load(cls, path, client=None, *, mmap=False, verify=True, num_threads=None):
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


def _package_version():
    from . import __version__

    return __version__


def _check_manifest(m, directory):
    where = os.path.join(directory, MANIFEST_NAME)
    if not isinstance(m, dict) or m.get("format") != _FORMAT_NAME:
        raise ValueError(f"{where}: not a sharded AVQ index manifest")
    version = m.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{where}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where}: format_version {version} is newer than this avq_plugin reads "
            f"({FORMAT_VERSION}); upgrade avq_plugin"
        )
    required = (
        "params",
        "d",
        "num_leaves",
        "ntotal",
        "n_shards",
        "num_threads",
        "quantizer",
        "quantizer_fingerprint",
        "shards",
    )
    missing = [key for key in required if key not in m]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    if not isinstance(m["params"], dict) or any(p not in m["params"] for p in _PARAM_NAMES):
        raise ValueError(f"{where}: incomplete params")
    shards = m["shards"]
    if not isinstance(shards, list) or len(shards) != m["n_shards"] or not shards:
        raise ValueError(f"{where}: the shard list does not match n_shards={m['n_shards']!r}")
    expected_start = 0
    for j, e in enumerate(shards):
        keys = ("file", "bytes", "sha256", "ntotal", "id_start", "id_stop")
        if not isinstance(e, dict) or any(key not in e for key in keys):
            raise ValueError(f"{where}: shard {j} entry is incomplete")
        if os.path.basename(e["file"]) != e["file"]:
            raise ValueError(f"{where}: shard {j} file name {e['file']!r} must be relative to the directory")
        if e["id_start"] != expected_start or e["id_stop"] - e["id_start"] != e["ntotal"]:
            raise ValueError(f"{where}: shard {j} id range [{e['id_start']}, {e['id_stop']}) is inconsistent")
        expected_start = e["id_stop"]
    if expected_start != m["ntotal"]:
        raise ValueError(f"{where}: the shards hold {expected_start} vectors, the manifest says {m['ntotal']}")
