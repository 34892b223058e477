"""AVQIndex: the Python face of the native index (the only module that builds or touches one)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import _native, _params, tuning
from . import _validation as V
from ._progress import ProgressArg, ProgressCallback, check_progress, progress_callback
from ._wrapper import _NativeWrapper
from .exact import ExactIndex
from .tuning import TuneReport

__all__ = ["AVQIndex", "ExactIndex", "TuneReport"]

# Relative score threshold used by anisotropic_threshold="auto": T = AUTO_THRESHOLD * mean ||x||
# (for cosine, ||x|| = 1 so T = AUTO_THRESHOLD). Chosen on the shipped GloVe subset (docs/parameters.md).
AUTO_THRESHOLD = 0.2
# The default partition size and search budget are avq_plugin._params.resolve_budget's.

_T = TypeVar("_T")
PathLike = str | os.PathLike[str]
# Bounds of the search fast path (the full checks are in _validation).
_MAX_K = V.LIMITS["max_k"]
_MAX_LTS = V.LIMITS["max_leaves_to_search"]
_MAX_RK = V.LIMITS["max_reorder_k"]
_MAX_THREADS = V.LIMITS["max_threads"]


class AVQIndex(_NativeWrapper[_native.Index]):
    """Approximate nearest-neighbour index with anisotropic vector quantization.

    A k-means partition of the data into ``num_leaves`` leaves; every vector is stored as its
    leaf plus a 4-bit product-quantization code of its residual, trained with the score-aware
    (anisotropic) loss of Guo et al. (ICML 2020); a query probes ``leaves_to_search`` leaves
    with a SIMD lookup-table scan and re-scores the best ``reorder_k`` candidates exactly.

    Parameters
    ----------
    metric : {"dot", "cosine", "l2"}
        Maximum inner product, cosine similarity (vectors normalised internally) or squared
        Euclidean distance.
    num_leaves : int or None
        Number of partitions; None picks round(sqrt(n)) at training time.
        Defaults are resolved once, at training time, by one rule shared by every front-end
        (``avq_plugin._params.resolve_budget``) and the concrete values are saved with the index.
    dims_per_block : int, 1..8, or None
        Dimensions per 4-bit PQ block (the last block takes the remainder). Code size is
        ceil(d / dims_per_block) / 2 bytes per vector. None: 4 for dot and cosine data of 256 or
        more dimensions, else 2 (``avq_plugin._params.resolve_encoding``, resolved by training).
    anisotropic_threshold : float, "auto" or None
        Score threshold T of the anisotropic loss (ScaNN's ``anisotropic_quantization_threshold``).
        "auto": T = 0.2 * mean ||x|| for dot and cosine (0.2 for cosine), None for l2; resolved
        once, by the first training, after which the attribute holds that value (as saved files do).
        None: plain reconstruction-loss PQ (eta = 1).
    eta : float >= 1 or None
        Use this anisotropic weight for every vector instead of deriving it from T.
    eta_formula : {"exact", "scann"}
        eta from T by the exact closed form (default) or ScaNN's large-d limit, which falls
        below 1 (no effect) when T < ||x|| / sqrt(d).
    reorder : {"float32", "int8", "none"} or None
        Exact re-scoring of the best candidates against float32 vectors, int8 vectors with
        per-dimension scales (4x less memory), or none ("none" or None: codes only).
    leaves_to_search, reorder_k : int or None
        Default search budget; None: ceil(3.5 sqrt(num_leaves)) leaves (at most all of them) and
        200 candidates, resolved by training (the attributes then hold them, as files do);
        ``tune`` replaces them.
    spill : {"auto", "soar", "none"} or None
        "auto" (default): "soar" for dot and cosine data of 256 or more dimensions (sentence and
        image embeddings, where it is faster at every recall), else none; resolved by training.
        None or "none": no spilling. "soar": SOAR spilling (Sun et al., NeurIPS 2023). Every vector is also stored, as a
        second 4-bit code (no second reorder vector), in the leaf minimising
        ``||x - c||^2 + soar_lambda * <r, x - c>^2 / ||r||^2`` (r: the residual in its own
        leaf), so fewer leaves reach the same recall. Search drops the duplicate candidates
        before re-scoring. Costs code_size + 16 bytes per vector and about as much add time as
        the encoding itself.
    soar_lambda : float >= 0
        Orthogonality amplification of ``spill="soar"`` (0: plain second-nearest leaf).
    training_iterations : int
        Alternations of (anisotropic encoding, least-squares codebook update); 0 keeps the
        k-means codebooks and only encodes anisotropically (ScaNN's behaviour).
    kmeans_iterations : int
        Lloyd iterations of the partitioner.
    training_sample_size : int or None
        Vectors used for training; None: min(n, max(100000, 64 * num_leaves)) for the
        partition, of which at most 50000 train the codebooks.
    num_threads : int or None
        Threads for training and batched search; None or -1: all cores. Overridable per call.
    seed : int
        Seed of every random choice; the same seed and data give the same index.
    verbose : bool
        Print training progress to stderr (when ``progress`` is None).
    progress : None, bool or callable
        Progress of ``train``, ``add`` and ``fit``: None follows ``verbose``; True shows tqdm
        bars on stderr (progress lines when tqdm is not installed); False shows nothing; a
        callable is called as ``progress(stage, done, total, info)`` (stage and info are
        strings) as the work advances. A callable is not kept by pickling.

    Examples
    --------
    >>> import numpy as np, avq_plugin
    >>> X = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    >>> index = avq_plugin.AVQIndex(metric="dot", num_leaves=20, seed=0).fit(X)
    >>> D, I = index.search(X[:3], k=5, leaves_to_search=20, reorder_k=50)
    >>> I.shape, I.dtype.name, D.dtype.name
    ((3, 5), 'int64', 'float32')
    """

    # Integer parameters are checked on every assignment (constructor, setters, unpickling,
    # loading), against the limits exported by the native core (_validation.LIMITS).
    num_leaves = V.Checked(V.check_num_leaves)
    dims_per_block = V.Checked(V.check_dims_per_block)
    leaves_to_search = V.Checked(V.check_leaves_to_search)
    reorder_k = V.Checked(V.check_reorder_k)
    training_iterations = V.Checked(lambda v: V.check_iterations("training_iterations", v))
    kmeans_iterations = V.Checked(lambda v: V.check_iterations("kmeans_iterations", v, minimum=1))
    training_sample_size = V.Checked(V.check_training_sample_size)
    num_threads = V.Checked(V.resolve_threads)
    seed = V.Checked(V.check_seed)

    def __init__(
        self,
        metric: str = "dot",
        num_leaves: int | None = None,
        dims_per_block: int | None = None,
        anisotropic_threshold: float | str | None = "auto",
        *,
        eta: float | None = None,
        eta_formula: str = "exact",
        reorder: str | None = "float32",
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
        spill: str | None = "auto",
        soar_lambda: float = 1.5,
        training_iterations: int = 3,
        kmeans_iterations: int = 10,
        training_sample_size: int | None = None,
        num_threads: int | None = None,
        seed: int = 0,
        verbose: bool = False,
        progress: ProgressArg = None,
    ) -> None:
        self.metric = V.check_metric(metric)
        self.num_leaves = num_leaves
        self.dims_per_block = dims_per_block
        if anisotropic_threshold is not None and not (
            isinstance(anisotropic_threshold, str) and anisotropic_threshold == "auto"
        ):
            anisotropic_threshold = V.check_float("anisotropic_threshold", anisotropic_threshold, minimum=0.0)
        self.anisotropic_threshold: float | str | None = anisotropic_threshold
        self.eta = V.check_float("eta", eta, minimum=1.0, allow_none=True)
        self.eta_formula = V.check_choice("eta_formula", eta_formula, ("exact", "scann"))
        self.reorder = V.check_choice("reorder", "none" if reorder is None else reorder, V.REORDER_MODES)
        self.leaves_to_search = leaves_to_search
        self.reorder_k = reorder_k
        self.training_iterations = training_iterations
        self.kmeans_iterations = kmeans_iterations
        self.training_sample_size = training_sample_size
        self.num_threads = num_threads
        self.seed = seed
        self.spill = None if spill is None else V.check_choice("spill", spill, ("auto", "soar", "none"))
        self.soar_lambda = V.check_float("soar_lambda", soar_lambda, minimum=0.0)
        if self.soar_lambda > _native.MAX_SOAR_LAMBDA:
            raise ValueError(f"soar_lambda must be <= {_native.MAX_SOAR_LAMBDA:g}, got {self.soar_lambda}")
        self.verbose = bool(verbose)
        self.progress = check_progress(progress)
        if self.anisotropic_threshold == 0.0 and self.eta is None:
            warnings.warn(
                "anisotropic_threshold=0 gives eta = 1: plain reconstruction-loss PQ "
                "(use anisotropic_threshold=None to say so)",
                UserWarning,
                stacklevel=2,
            )
        self._index = None

    # ------------------------------------------------------------------ state
    @property
    def is_trained(self) -> bool:
        """True once ``train`` or ``fit`` has run."""
        return self._index is not None and self._index.is_trained

    @property
    def num_blocks(self) -> int:
        """Number of 4-bit PQ blocks, ceil(d / dims_per_block)."""
        return self._require_index().num_blocks

    @property
    def code_size(self) -> int:
        """Bytes of PQ code per vector."""
        return self._require_index().code_size

    @property
    def num_leaves_(self) -> int:
        """Number of leaves actually built."""
        return self._require_trained().num_leaves

    @property
    def is_mapped(self) -> bool:
        """True when the codes are memory-mapped from a file (``load(..., mmap=True)``)."""
        return self._index is not None and self._index.is_mapped

    @property
    def train_stats_(self) -> dict[str, Any]:
        """Training diagnostics: eta range, threshold, sample size, loss per alternation."""
        return self._require_trained().train_stats()

    def __repr__(self) -> str:
        state = f"ntotal={self.ntotal}" if self.is_trained else "untrained"
        return (
            f"AVQIndex(metric={self.metric!r}, num_leaves={self.num_leaves}, dims_per_block={self.dims_per_block}, "
            f"anisotropic_threshold={self.anisotropic_threshold!r}, reorder={self.reorder!r}; {state})"
        )

    def _require_index(self) -> _native.Index:
        """The native index; ValueError when there is none yet."""
        if self._index is None:
            raise ValueError("the index is not trained yet: call fit(X) or train(X) first")
        return self._index

    def _require_trained(self) -> _native.Index:
        """The native index; ValueError when it is not trained yet."""
        index = self._index
        if index is None or not index.is_trained:
            raise ValueError("the index is not trained yet: call fit(X) or train(X) first")
        return index

    # ------------------------------------------------------------------ build
    def _with_progress(self, run: Callable[[ProgressCallback | None], _T]) -> _T:
        """``run(callback)`` with this index's progress callback (see the ``progress`` parameter)."""
        with progress_callback(getattr(self, "progress", None), self.verbose) as callback:
            return run(callback)

    def _threshold_for(self, X: npt.NDArray[np.float32]) -> float:
        T = self.anisotropic_threshold
        if self.eta is not None:
            return math.nan
        if T is None:
            return math.nan
        if T == "auto":
            if self.metric == "l2":
                return math.nan
            if self.metric == "cosine":
                return AUTO_THRESHOLD
            mean_norm = float(np.mean(np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))))
            return AUTO_THRESHOLD * mean_norm
        return float(T)

    def train(self, X: npt.ArrayLike) -> AVQIndex:
        """Train the partition and the codebooks on X (n, d); drops any indexed vectors.

        Returns self.
        """
        return self._train(V.as_float_matrix(X, "X", nonzero_rows=self.metric == "cosine"), stacklevel=3)

    def _new_native(
        self,
        d: int,
        threshold: float,
        budget: _params.Budget,
        *,
        l2_decoded_norms: bool = False,
        spill: bool = True,
    ) -> _native.Index:
        """An untrained native index with this object's parameters and a resolved ``budget``
        (:class:`avq_plugin._params.Budget`): the one place that makes one. ``spill=False``: never
        spill (an index whose codes come from elsewhere, e.g. Faiss, has no spilled copies)."""
        enc = self._encoding_for(d, spill=spill)
        p = _native.IndexParams()
        p.metric = self.metric
        p.d = d
        p.num_leaves = budget.num_leaves
        p.dims_per_block = enc.dims_per_block
        p.threshold = threshold
        p.eta = self.eta or 0.0
        p.eta_scann = self.eta_formula == "scann"
        p.avq_iterations = self.training_iterations
        p.kmeans_iterations = self.kmeans_iterations
        p.training_sample_size = self.training_sample_size or 0
        p.seed = self.seed
        p.reorder = self.reorder
        p.default_leaves_to_search = budget.leaves_to_search
        p.default_reorder_k = budget.reorder_k
        p.l2_decoded_norms = l2_decoded_norms
        p.spill = enc.spill or "none"
        p.soar_lambda = self.soar_lambda
        return _native.Index(p)

    def _encoding_for(self, d: int, *, spill: bool = True) -> _params.Encoding:
        """The concrete (dims_per_block, spill) for data of dimension d (``spill=False``: none)."""
        if not spill and self.spill == "soar":
            raise ValueError("spill='soar' needs vectors to encode: an index built from imported codes cannot spill")
        return _params.resolve_encoding(
            d, self.metric, dims_per_block=self.dims_per_block, spill=self.spill if spill else None
        )

    def _budget_for(
        self, n: int | None, d: int, num_leaves: int | None = None, *, spill: bool = True
    ) -> _params.Budget:
        """The concrete (num_leaves, leaves_to_search, reorder_k) for n vectors of dimension d."""
        return _params.resolve_budget(
            n,
            d,
            num_leaves=self.num_leaves if num_leaves is None else num_leaves,
            leaves_to_search=self.leaves_to_search,
            reorder_k=self.reorder_k,
            spilled=self._encoding_for(d, spill=spill).spill is not None,
        )

    def _train(self, X: npt.NDArray[np.float32], stacklevel: int, *, l2_decoded_norms: bool = False) -> AVQIndex:
        """Train on validated X; ``l2_decoded_norms``: L2 scores from decoded vectors (IndexAVQ)."""
        n, d = X.shape
        if self.num_leaves is not None and self.num_leaves > n:
            raise ValueError(f"num_leaves={self.num_leaves} exceeds the number of training vectors ({n})")
        threshold = self._threshold_for(X)
        budget = self._budget_for(n, d)
        index = self._new_native(d, threshold, budget, l2_decoded_norms=l2_decoded_norms)
        self._with_progress(lambda callback: index.train(X, self.num_threads, callback))
        self._index = index
        if isinstance(self.anisotropic_threshold, str):  # "auto" is resolved once, here (as a file stores it)
            self.anisotropic_threshold = None if math.isnan(threshold) else threshold
        # The budget too: the object then holds what its file holds (sharded fingerprints compare them).
        self.leaves_to_search, self.reorder_k = budget.leaves_to_search, budget.reorder_k
        stats = index.train_stats()
        if not math.isnan(threshold) and threshold > 0 and stats["eta_min"] <= 1.0:
            warnings.warn(
                f"anisotropic_threshold={threshold:.4g} gives eta <= 1 for some vectors "
                f"(eta range {stats['eta_min']:.3g}..{stats['eta_max']:.3g} with eta_formula="
                f"{self.eta_formula!r}); those vectors get plain PQ. Raise the threshold "
                "(ScaNN's formula needs T > ||x|| / sqrt(d)).",
                UserWarning,
                stacklevel=stacklevel,
            )
        return self

    def add(self, X: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> AVQIndex:
        """Encode and add vectors X (n, d) with int64 ``ids`` (default: max id + 1 onwards).

        Returns self.
        """
        index = self._require_trained()
        A = V.as_float_matrix(X, "X", d=self.d, nonzero_rows=self.metric == "cosine")
        id_array = V.as_ids(ids, A.shape[0])
        self._with_progress(lambda callback: index.add(A, id_array, self.num_threads, callback))
        return self

    def fit(self, X: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> AVQIndex:
        """``train(X)`` then ``add(X, ids)``. Returns self."""
        A = V.as_float_matrix(X, "X", nonzero_rows=self.metric == "cosine")
        id_array = V.as_ids(ids, A.shape[0])
        index = self._train(A, stacklevel=3)._require_trained()
        self._with_progress(lambda callback: index.add(A, id_array, self.num_threads, callback))
        return self

    def remove(self, ids: npt.ArrayLike) -> int:
        """Delete vectors by id; other ids are unchanged. Returns the number removed."""
        index = self._require_trained()
        return int(index.remove(V.as_ids(ids, None, unique=False, reject_padding=False)))

    def reset(self) -> None:
        """Remove every vector, keep the training."""
        self._require_trained().reset()

    # ------------------------------------------------------------------ search
    def default_search_params(self) -> tuple[int, int]:
        """(leaves_to_search, reorder_k) used when search() is not given them.

        The ``leaves_to_search`` and ``reorder_k`` attributes when set, else the values resolved
        at training time (stored with the index).
        """
        p = self._require_trained().params()
        return self.leaves_to_search or p.default_leaves_to_search, self.reorder_k or p.default_reorder_k

    def search(
        self,
        Q: npt.ArrayLike,
        k: int = 10,
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
        num_threads: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Find the k best vectors for each query.

        Parameters
        ----------
        Q : array (nq, d) or (d,)
        k : int
            Results per query. Every row holds min(k, ntotal) results: when the probed leaves
            hold fewer than k vectors, the probe widens to the next best leaves. Only an index
            of fewer than k vectors pads its rows, with id -1 and distance -FLT_MAX (dot,
            cosine) or +FLT_MAX (l2), as Faiss does.
        leaves_to_search : int, optional
            Leaves probed per query (clamped to num_leaves).
        reorder_k : int, optional
            Candidates re-scored exactly (raised to k when smaller, lowered to the number of
            vectors probed; ignored with reorder="none").
        num_threads : int, optional
            Threads for this call (queries are split across a native pool, GIL released).

        Returns
        -------
        D : float32 (nq, k)
            Inner product (dot), cosine similarity (cosine) or squared L2 distance (l2), best
            first. Exact when reordering; the quantized estimate with reorder="none".
        I : int64 (nq, k)
            Ids, best first, -1 for padding.
        """
        index = self._index
        if index is None or not index.is_trained:
            index = self._require_trained()
        if type(k) is not int or not 0 < k <= _MAX_K:
            k = V.check_k(k)
        # Fast path for the common case (a C-contiguous float32 array of the right width);
        # the native layer re-checks every query for NaN/inf and, under cosine, zero norm.
        if (
            type(Q) is np.ndarray
            and 1 <= Q.ndim <= 2
            and Q.dtype == np.float32
            and Q.flags.c_contiguous
            and Q.shape[-1] == index.d
            and Q.size
        ):
            if Q.ndim == 1:
                Q = Q.reshape(1, -1)
        else:
            Q = V.as_float_matrix(Q, "Q", d=index.d, allow_1d=True, nonzero_rows=self.metric == "cosine")
        if k > 4096:
            V.check_result_size(Q.shape[0], k)
        if leaves_to_search is None or reorder_k is None:
            lts, rk = self.default_search_params()
        if leaves_to_search is not None:
            lts = (
                leaves_to_search
                if type(leaves_to_search) is int and 0 < leaves_to_search <= _MAX_LTS
                else V.check_leaves_to_search(leaves_to_search, allow_none=False)
            )
        if reorder_k is not None:
            rk = (
                reorder_k
                if type(reorder_k) is int and 0 < reorder_k <= _MAX_RK
                else V.check_reorder_k(reorder_k, allow_none=False)
            )
        nt = (
            self.num_threads
            if num_threads is None
            else (
                num_threads
                if type(num_threads) is int and 0 < num_threads <= _MAX_THREADS
                else V.resolve_threads(num_threads)
            )
        )
        return index.search(Q, k, lts, rk, nt)

    # ------------------------------------------------------------------ routed search
    # Protected: the building blocks of leaf-routed sharding (avq_plugin.distributed), where a
    # router chooses the leaves once and each shard scans only those it holds.
    def _probe(self, Q: npt.ArrayLike, leaves_to_search: int, num_threads: int | None = None) -> npt.NDArray[np.int32]:
        """The leaves ``search`` probes for each query, best first: int32 (nq, min(lts, L))."""
        index = self._require_trained()
        A = V.as_float_matrix(Q, "Q", d=self.d, allow_1d=True, nonzero_rows=self.metric == "cosine")
        lts = V.check_int("leaves_to_search", leaves_to_search, minimum=1)
        nt = self.num_threads if num_threads is None else V.resolve_threads(num_threads)
        return index.probe(A, lts, nt)

    def _search_leaves(
        self,
        Q: npt.ArrayLike,
        k: int,
        leaves: npt.ArrayLike,
        reorder_k: int | npt.ArrayLike,
        num_threads: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``search`` restricted to given leaves per query.

        leaves: int (nq, w), each row scanned in its order, -1 entries skipped, no leaf twice;
        reorder_k: int or int (nq,) per query. A query's candidates and scores are those
        ``search`` finds in the same leaves, so with leaves = ``_probe(Q, lts)`` and the same
        reorder_k the result equals ``search(Q, k, lts, reorder_k)``.
        """
        index = self._require_trained()
        k = V.check_k(k)
        A = V.as_float_matrix(Q, "Q", d=self.d, allow_1d=True, nonzero_rows=self.metric == "cosine")
        V.check_result_size(A.shape[0], k)
        leaf_rows = np.asarray(leaves)
        if leaf_rows.ndim != 2 or leaf_rows.shape[0] != A.shape[0] or not np.issubdtype(leaf_rows.dtype, np.integer):
            raise ValueError(f"leaves must be an integer array of shape ({A.shape[0]}, w), got {leaf_rows.shape}")
        if leaf_rows.size and (leaf_rows.min() < -1 or leaf_rows.max() >= index.num_leaves):
            raise ValueError(f"leaves must be in [-1, {index.num_leaves}) (-1: none)")
        leaf_array = np.ascontiguousarray(leaf_rows, dtype=np.int32)
        rk = np.asarray(reorder_k)
        if rk.ndim == 0:
            rk = np.full(A.shape[0], V.check_int("reorder_k", int(rk), minimum=1), np.int64)
        elif rk.shape != (A.shape[0],) or not np.issubdtype(rk.dtype, np.integer) or (rk.size and rk.min() < 1):
            raise ValueError(f"reorder_k must be a positive int or {A.shape[0]} positive ints")
        nt = self.num_threads if num_threads is None else V.resolve_threads(num_threads)
        return index.search_leaves(A, k, leaf_array, np.ascontiguousarray(rk, np.int64), nt)

    def _leaf_sizes(self) -> npt.NDArray[np.int64]:
        """Vectors per leaf, int64 (num_leaves,)."""
        return self._require_trained().leaf_sizes()

    def _contains(self, ids: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Boolean (n,): which of the ids are indexed."""
        return self._require_trained().contains(V.as_ids(ids, None, unique=False, reject_padding=False)).astype(bool)

    def _probe_centers(self) -> npt.NDArray[np.float32]:
        """The centres leaves are chosen by, float32 (num_leaves, d)."""
        index = self._require_trained()
        return np.asarray(index.probe_centers(), np.float32).reshape(index.num_leaves, -1)

    def _quantizer_digest(self) -> Any:
        """A sha256 object fed with the centres and codebooks (what makes codes and scores comparable)."""
        import hashlib

        index = self._require_trained()
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(index.centers(), np.float32).tobytes())
        h.update(np.ascontiguousarray(index.codebooks(), np.float32).tobytes())
        return h

    def tune(
        self,
        target_recall: float = 0.95,
        k: int = 10,
        queries: npt.ArrayLike | None = None,
        time_budget_s: float | None = None,
        *,
        X: npt.ArrayLike | None = None,
        ids: npt.ArrayLike | None = None,
        ground_truth: npt.ArrayLike | None = None,
        num_queries: int | None = None,
        reorder_k: int | None = None,
        margin: float | None = None,
        seed: int | None = None,
    ) -> TuneReport:
        """Choose the fastest search budget that reaches a target recall, and make it the default.

        Finds, for a geometric grid of ``reorder_k`` values (k to 64k), the smallest
        ``leaves_to_search`` whose mean recall@k on tuning queries reaches ``target_recall``
        plus a small safety margin, times each of these settings (one thread, all tuning
        queries in one call) and keeps the fastest. The chosen pair becomes the index's default
        budget: ``search`` without budget arguments uses it, and it is kept by ``save``/``load``,
        ``to_bytes``/``from_bytes`` and pickle.

        Tuning queries and their exact neighbours come from one of:

        - **held-out points** (``queries=None``, the default): ``num_queries`` indexed vectors
          drawn at random (seeded); each one's own id is removed from its exact neighbours and
          from the search results, so the estimate is not optimistic. They come from ``X`` when
          given; without ``X`` an index with ``reorder="float32"`` uses its stored re-ranking
          vectors (the input, normalised under cosine), while one with ``reorder="int8"`` or
          ``"none"`` keeps only approximations and needs ``X``;
        - **given queries** (``queries=Q``): the exact neighbours come from ``ground_truth`` if
          given, else from brute force over ``X`` if given, else, for ``reorder="float32"``,
          from the index itself (every leaf probed, every candidate re-scored exactly).

        Parameters
        ----------
        target_recall : float in (0, 1]
            Mean recall@k to reach (fraction of the true k nearest neighbours returned).
        k : int >= 1
            Neighbours per query the recall refers to.
        queries : array (nq, d), optional
            Tuning queries from the distribution the index will serve. Default: held-out points.
        time_budget_s : float > 0, optional
            Soft limit on the tuning time: no new setting is explored once it has passed (the
            fastest setting found so far is kept). Default: no limit.
        X : array (ntotal, d), optional
            Exactly the indexed vectors, with ``ids`` (default ``0..ntotal-1`` in row order,
            which is what ``fit(X)`` assigns).
        ids : int64 array (ntotal,), optional
            Ids of the rows of X, when ``add``/``fit`` was given ids.
        ground_truth : int array (nq, >= k), optional
            Exact neighbour ids of ``queries``, best first.
        num_queries : int, optional
            Number of tuning queries: held-out points drawn (default 1000, at most ntotal), or
            a random subset of ``queries`` (default: all of them).
        reorder_k : int, optional
            Keep this ``reorder_k`` and tune ``leaves_to_search`` alone (fully deterministic).
        margin : float >= 0, optional
            Recall added to the target on the tuning queries. Default: two standard errors of
            the measured mean recall (about 0.005 to 0.01 with 1000 queries).
        seed : int, optional
            Seed of the held-out sample (default: the index's seed).

        Returns
        -------
        TuneReport
            The chosen ``leaves_to_search`` and ``reorder_k``, the recall measured on the
            tuning queries, the expected QPS (one thread, batched), the number of tuning
            queries and every setting evaluated.

        Raises
        ------
        ValueError
            target_recall outside (0, 1], k < 1, an untrained or empty index, X that is not the
            indexed set, or no way to get the exact neighbours.

        Warns
        -----
        UserWarning
            When no setting reaches the target (or the time budget ends first): the largest
            budget tried is chosen and the warning gives the recall it reaches.

        Notes
        -----
        The setting returned is the fastest among those measured, so which of two nearly
        equally fast settings wins can depend on timing noise; pass ``reorder_k`` for a fully
        deterministic choice.

        Examples
        --------
        >>> import numpy as np, avq_plugin
        >>> X = np.random.default_rng(0).standard_normal((5000, 16)).astype(np.float32)
        >>> index = avq_plugin.AVQIndex(metric="l2", seed=0).fit(X)
        >>> report = index.tune(target_recall=0.9, k=10, X=X, num_queries=200)
        >>> report.recall >= 0.9, index.default_search_params() == (report.leaves_to_search, report.reorder_k)
        (True, True)
        """
        report = tuning.tune(
            self,
            target_recall,
            k,
            queries,
            time_budget_s,
            X=X,
            ids=ids,
            ground_truth=ground_truth,
            num_queries=num_queries,
            reorder_k=reorder_k,
            margin=margin,
            seed=seed,
            stacklevel=3,
        )
        self._apply_tune(report)
        return report

    def _apply_tune(self, report: TuneReport) -> None:
        """Make the budget of a :class:`TuneReport` this index's default (kept by save and pickle)."""
        self.leaves_to_search = int(report.leaves_to_search)
        if report.reorder_k is not None:
            self.reorder_k = int(report.reorder_k)
        self._sync_search_defaults()

    # ------------------------------------------------------------------ protected: for IndexAVQ, tuning, sharding
    # These give the package's other front-ends (avq_plugin.faiss, avq_plugin.tuning, the
    # distributed index) what they need without touching the native object.
    def _native_params(self) -> dict[str, Any]:
        """The native parameter record (``_native.IndexParams``, as stored in the file) as a dict."""
        p = self._require_index().params()
        return {name: getattr(p, name) for name in dir(p) if not name.startswith("_")}

    def _quantizer(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(centres (num_leaves, d) float32, codebooks (16 d,) float32) of the trained index."""
        index = self._require_trained()
        return index.centers().reshape(index.num_leaves, index.d), index.codebooks()

    def _set_quantizer(self, probe: npt.ArrayLike, residual: npt.ArrayLike, codebooks: npt.ArrayLike) -> None:
        """Install probe centres, residual centres (L, d) and codebooks (16 d) in an empty index."""
        self._require_index().set_quantizer(
            np.ascontiguousarray(probe, np.float32),
            np.ascontiguousarray(residual, np.float32),
            np.ascontiguousarray(codebooks, np.float32),
        )

    def _init_from_quantizer(
        self, d: int, centres: npt.ArrayLike, codebooks: npt.ArrayLike, *, l2_decoded_norms: bool = False
    ) -> None:
        """Start an empty index from given centres (L, d) and codebooks (16 d) instead of training.

        ``anisotropic_threshold`` must be None or a number (new vectors are encoded with it).
        """
        T = self.anisotropic_threshold
        if T == "auto":
            raise ValueError("anisotropic_threshold='auto' needs training data: give a number or None")
        budget = self._budget_for(None, d, num_leaves=int(np.shape(centres)[0]), spill=False)
        native = self._new_native(
            d, math.nan if T is None else float(T), budget, l2_decoded_norms=l2_decoded_norms, spill=False
        )
        native.set_quantizer(
            np.ascontiguousarray(centres, np.float32),
            np.ascontiguousarray(centres, np.float32),
            np.ascontiguousarray(codebooks, np.float32),
        )
        self._index = native

    def _get_leaves(self, ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Leaf of each id (int64 array); ValueError for an unknown id."""
        return self._require_trained().get_leaves(V.as_ids(ids, None, unique=False, reject_padding=False))

    def _add_codes(
        self, codes: npt.ArrayLike, leaves: npt.ArrayLike, ids: npt.ArrayLike, norms2: npt.ArrayLike | None = None
    ) -> None:
        """Add pre-computed codes (n, num_blocks) in the given leaves (reorder="none" only)."""
        self._require_trained().add_codes(
            np.ascontiguousarray(codes, np.uint8),
            np.ascontiguousarray(leaves, np.int64),
            np.ascontiguousarray(ids, np.int64),
            None if norms2 is None else np.ascontiguousarray(norms2, np.float32),
        )

    def _search_float_lut(
        self, Q: npt.NDArray[np.float32], k: int, leaves_to_search: int, num_threads: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Codes-only search with float lookup tables (Faiss's scores); Q validated by the caller."""
        return self._require_trained().search_float_lut(Q, k, leaves_to_search, num_threads)

    def _stored_vectors(
        self, rows: npt.NDArray[np.integer[Any]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(ids, vectors) of the float32 re-ranking store at positions ``rows`` of the id order.

        Position i is the i-th smallest id, so after ``fit(X)`` position i is row i of X. The
        vectors are those given to ``add`` (normalised under cosine). The native core has no
        accessor for the store, so they are read from the sections IDS_ and RVEC of the
        serialised index (container layout: native/src/io.h); this costs one copy of the index.
        """
        index = self._require_trained()
        if self.reorder != "float32":
            raise ValueError(f"an index with reorder={self.reorder!r} keeps no float32 vectors")
        blob = index.serialize()
        sections = _container_sections(blob)
        n, d = self.ntotal, index.d
        ids = np.frombuffer(blob, np.int64, count=n, offset=sections["IDS_"])
        vectors = np.frombuffer(blob, np.float32, count=n * d, offset=sections["RVEC"]).reshape(n, d)
        order = np.argsort(ids, kind="stable")[rows]
        return ids[order], np.ascontiguousarray(vectors[order])

    # ------------------------------------------------------------------ inspection
    def get_codes(self, ids: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """PQ codes (0..15) of the given ids, uint8 (n, num_blocks)."""
        return self._require_trained().get_codes(V.as_ids(ids, None, unique=False, reject_padding=False))

    def get_ids(self) -> npt.NDArray[np.int64]:
        """All indexed ids (storage order)."""
        return self._require_trained().all_ids()

    # ------------------------------------------------------------------ persistence
    def _python_state(self) -> dict[str, Any]:
        return {
            "anisotropic_threshold": self.anisotropic_threshold,
            "eta_formula": self.eta_formula,
            "num_threads": self.num_threads,
            "verbose": self.verbose,
            # a callable is not pickled (it may not be picklable); True/False/None are
            "progress": self.progress if isinstance(self.progress, bool) else None,
        }

    @classmethod
    def _from_native(cls, native: _native.Index) -> AVQIndex:
        p = native.params()
        if native.is_trained and not (p.default_leaves_to_search and p.default_reorder_k):
            # A version-1 file: 0 meant "chosen when searching"; complete it with today's rule
            # (saving the index again writes the concrete values, format version 2).
            budget = _params.resolve_budget(native.ntotal, p.d, num_leaves=native.num_leaves, spilled=p.spill != "none")
            native.set_default_search_params(
                p.default_leaves_to_search or budget.leaves_to_search, p.default_reorder_k or budget.reorder_k
            )
            p = native.params()
        obj = cls.__new__(cls)
        obj.metric = p.metric
        obj.num_leaves = p.num_leaves or None
        obj.dims_per_block = p.dims_per_block
        obj.eta = p.eta if p.eta > 0 else None
        # The file holds the threshold used (a number, or NaN for none), not how it was chosen:
        # a loaded index refitted on other data keeps that T (pickle keeps "auto").
        obj.anisotropic_threshold = None if math.isnan(p.threshold) else p.threshold
        obj.eta_formula = "scann" if p.eta_scann else "exact"
        obj.reorder = p.reorder
        obj.leaves_to_search = p.default_leaves_to_search
        obj.reorder_k = p.default_reorder_k
        obj.spill = None if p.spill == "none" else p.spill
        obj.soar_lambda = p.soar_lambda
        obj.training_iterations = p.avq_iterations
        obj.kmeans_iterations = p.kmeans_iterations
        obj.training_sample_size = p.training_sample_size or None
        obj.num_threads = V.resolve_threads(None)
        obj.seed = p.seed
        obj.verbose = False
        obj.progress = None
        obj._index = native
        return obj

    def _sync_search_defaults(self) -> None:
        # The native index stores the default budget in its files; attributes set after
        # construction (by tune or by hand) reach it here.
        if self._index is not None and self._index.is_trained:
            self._index.set_default_search_params(*self.default_search_params())

    def save(self, path: PathLike) -> None:
        """Write the index to one file, atomically (temporary file + rename)."""
        index = self._require_index()
        self._sync_search_defaults()
        index.save(os.fspath(path))

    @classmethod
    def load(cls, path: PathLike, mmap: bool = False) -> AVQIndex:
        """Read an index written by ``save``.

        With ``mmap=True`` the codes and reorder vectors stay in the file (mapped read-only,
        their checksums are not verified) until the index is modified.
        Raises ValueError on a truncated, corrupted or newer-format file.
        """
        return cls._from_native(_native.Index.load(os.fspath(path), bool(mmap)))

    def to_bytes(self) -> bytes:
        """The index serialized as bytes (the same format as ``save``)."""
        index = self._require_index()
        self._sync_search_defaults()
        return index.serialize()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> AVQIndex:
        """Inverse of ``to_bytes``."""
        return cls._from_native(_native.Index.deserialize(V.as_bytes(data)))

    def __getstate__(self) -> dict[str, Any]:
        state = self._python_state()
        state["index"] = None if self._index is None else self._index.serialize()
        state["params"] = {
            k: getattr(self, k)
            for k in (
                "metric",
                "num_leaves",
                "dims_per_block",
                "eta",
                "reorder",
                "leaves_to_search",
                "reorder_k",
                "spill",
                "soar_lambda",
                "training_iterations",
                "kmeans_iterations",
                "training_sample_size",
                "seed",
            )
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.spill, self.soar_lambda = None, 1.5  # absent from states pickled before SOAR
        for k, v in state["params"].items():
            setattr(self, k, v)
        for k in ("anisotropic_threshold", "eta_formula", "num_threads", "verbose"):
            setattr(self, k, state[k])
        self.progress = state.get("progress")  # absent from pickles of earlier versions
        self._index = None if state["index"] is None else _native.Index.deserialize(state["index"])


def _container_sections(blob: bytes) -> dict[str, int]:
    """{tag: payload offset} of a serialised index (the container of native/src/io.h)."""
    count = int(np.frombuffer(blob, np.uint32, count=1, offset=20)[0])
    sections: dict[str, int] = {}
    off = 64
    for _ in range(count):
        tag = bytes(blob[off : off + 4]).decode("ascii")
        length = int(np.frombuffer(blob, np.uint64, count=1, offset=off + 8)[0])
        sections[tag] = off + 64
        off += 64 + (length + 63) // 64 * 64
    return sections
