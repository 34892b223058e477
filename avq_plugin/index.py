"""AVQIndex: the Python face of the native index.

With its private parts, ``_index_base.py`` (parameters, the native record, building a native
index), ``_index_io.py`` (files, bytes, pickling) and ``_index_protected.py`` (the protected
methods the Faiss adapter, tuning and the sharded index use), and ``exact.py``, this is the only
code that builds or touches a native index.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import _native, tuning
from . import _validation as V
from ._index_io import _IndexIO
from ._index_protected import _IndexProtected
from ._progress import ProgressArg, ProgressCallback, check_progress, progress_callback
from .exact import ExactIndex
from .tuning import TuneReport

__all__ = ["AVQIndex", "ExactIndex", "TuneReport"]

# Relative score threshold used by anisotropic_threshold="auto": T = AUTO_THRESHOLD * mean ||x||
# (for cosine, ||x|| = 1 so T = AUTO_THRESHOLD). Chosen on the shipped GloVe subset (docs/parameters.md).
AUTO_THRESHOLD = 0.2
# The default partition size and search budget are avq_plugin._params.resolve_budget's.

_T = TypeVar("_T")
# Bounds of the search fast path (the full checks are in _validation).
_F32 = np.dtype(np.float32)
_MAX_K = V.LIMITS["max_k"]
_MAX_LTS = V.LIMITS["max_leaves_to_search"]
_MAX_RK = V.LIMITS["max_reorder_k"]
_MAX_MARGIN = 3.4e38  # a finite float32
_MAX_THREADS = V.LIMITS["max_threads"]


class AVQIndex(_IndexIO, _IndexProtected):
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
        by each training (the attribute keeps "auto"; ``anisotropic_threshold_`` is the value
        used, which saved files store, so a loaded index has that value here).
        None: plain reconstruction-loss PQ (eta = 1).
    eta : float >= 1 or None
        Use this anisotropic weight for every vector instead of deriving it from T.
    eta_formula : {"exact", "scann"}
        eta from T by the exact closed form (default) or ScaNN's large-d limit, which falls
        below 1 (no effect) when T < ||x|| / sqrt(d).
    reorder : {"float32", "float16", "int8", "none"} or None
        Exact re-scoring of the best candidates against float32 vectors, float16 vectors (half
        the memory; each row with its own power-of-two scale, so any finite data fits; scores
        within about 2^-11 relative per coordinate, the same neighbours in practice), int8
        vectors with per-dimension scales (4x less memory), or none ("none" or None: codes
        only).
    leaves_to_search, reorder_k : int or None
        Default search budget; None: ceil(3.5 sqrt(num_leaves)) leaves (at most all of them) and
        200 candidates, resolved by each training into the index (the attributes keep what was
        given; ``default_search_params()`` returns the budget in force, which ``tune`` replaces
        and files store; a loaded index has None here). A number assigned to a trained index
        becomes its default budget.
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
    def anisotropic_threshold_(self) -> float | None:
        """The score threshold T training used ("auto" resolved; None: plain PQ or a fixed ``eta``)."""
        T = self._require_trained().params().threshold
        return None if math.isnan(T) else T

    @property
    def dims_per_block_(self) -> int:
        """Dimensions per 4-bit block of the trained codes (``dims_per_block=None`` resolved, or the
        layout ``tune(layouts=...)`` chose); stored in the index's files."""
        return int(self._require_trained().params().dims_per_block)

    @property
    def spill_(self) -> str | None:
        """Spilling of the trained index: "soar" or None (``spill="auto"`` resolved, or the layout
        ``tune(layouts=...)`` chose); stored in the index's files."""
        spill = self._require_trained().params().spill
        return None if spill == "none" else spill

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

    def _train(self, X: npt.NDArray[np.float32], stacklevel: int) -> AVQIndex:
        """Train on validated X."""
        n, d = X.shape
        if self.num_leaves is not None and self.num_leaves > n:
            raise ValueError(f"num_leaves={self.num_leaves} exceeds the number of training vectors ({n})")
        threshold = self._threshold_for(X)
        budget = self._budget_for(n, d)
        index = self._new_native(d, threshold, budget)
        self._with_progress(lambda callback: index.train(X, self.num_threads, callback))
        # The resolved threshold and budget live in the native record (what the file stores); the
        # constructor attributes keep what the user gave, so a refit on other data re-resolves them.
        self._index = index
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

    def search(
        self,
        Q: npt.ArrayLike,
        k: int = 10,
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
        num_threads: int | None = None,
        *,
        leaf_margin: float | None = None,
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
        leaf_margin : float, optional
            Query-adaptive probing (metric 'cosine' or 'dot'; default None: the index's stored
            ``default_leaf_margin()``, which is off unless ``tune`` chose a margin). A query probes
            its ``leaves_to_search`` best leaves and also every further leaf whose centre is
            within ``leaf_margin`` of its best leaf's, in cosine of the query and the centre
            direction, and re-ranks ``reorder_k`` times sqrt(its leaves / ``leaves_to_search``)
            (rounded up). Easy queries, with one clearly best region, stay at
            ``leaves_to_search`` leaves; hard ones probe more. At high recall this reaches the
            same recall with less work than a fixed count (see docs/parameters.md). 0 probes
            exactly ``leaves_to_search`` leaves (the fixed count, also on a tuned index).

        Returns
        -------
        D : float32 (nq, k)
            Inner product (dot), cosine similarity (cosine) or squared L2 distance (l2), best
            first. Exact when reordering; the quantized estimate with reorder="none".
        I : int64 (nq, k)
            Ids, best first, -1 for padding.
        """
        index = self._index
        if index is None:
            index = self._require_trained()
        if type(k) is not int or not 0 < k <= _MAX_K:
            k = V.check_k(k)
        # Fast path for the common case, a C-contiguous float32 array (d,) or (nq, d), passed as
        # it is: the native call checks its width and the training (with this layer's messages),
        # and every query for NaN/inf and, under cosine, zero norm.
        if type(Q) is np.ndarray and Q.dtype is _F32 and 1 <= Q.ndim <= 2 and Q.size and Q.flags.c_contiguous:
            pass
        else:
            index = self._require_trained()
            Q = V.as_float_matrix(Q, "Q", d=index.d, allow_1d=True, nonzero_rows=self.metric == "cosine")
        if k > 4096:
            V.check_result_size(1 if Q.ndim == 1 else Q.shape[0], k)
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
        if leaf_margin is None:  # the native default: the margin stored with the index, if any
            return index.search(Q, k, lts, rk, nt)
        # A plain float in range goes as it is; the native call rejects it under l2.
        if type(leaf_margin) is not float or not 0.0 <= leaf_margin <= _MAX_MARGIN:
            leaf_margin = V.check_leaf_margin(leaf_margin)
        return index.search(Q, k, lts, rk, nt, leaf_margin)

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
        layouts: str | Iterable[tuple[int, str | None]] | None = None,
        leaf_margin: str | None = "auto",
    ) -> TuneReport:
        """Choose the fastest search budget that reaches a target recall, and make it the default.

        Finds, for a geometric grid of ``reorder_k`` values (k to 64k), the smallest
        ``leaves_to_search`` whose mean recall@k on tuning queries reaches ``target_recall``
        plus a small safety margin, times each of these settings (one thread, all tuning
        queries in one call) and keeps the fastest; on dot and cosine indexes it also tries
        smaller budgets with a ``leaf_margin`` (see below). The chosen budget becomes the index's
        default: ``search`` without budget arguments uses it, and it is kept by ``save``/``load``,
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
        layouts : "auto" or list of (dims_per_block, spill) pairs, optional
            Also choose the code layout, by measurement: every layout listed ("auto": 2 and 4
            dims per block, each without spilling and with SOAR) besides the index's own is
            trained on ``X`` (required) with the index's other parameters (the resolved ones it
            was trained with: leaves, threshold, iterations, seed), holds ``X`` with ``ids``, and
            gets the budget search above on the same tuning queries; the fastest layout whose
            budget reaches the target wins (each layout's best setting is timed alternately with
            the best so far). The index's own layout is measured first, as it is. When another
            layout wins, the index takes over that trained copy (its ``dims_per_block_`` and
            ``spill_`` change; the constructor parameters do not). ``spill`` is None, "none" or
            "soar". ``time_budget_s`` covers all layouts: none is trained once it has passed.
            Default None: keep the layout, tune the budget only.
        leaf_margin : "auto", "always" or None, default "auto"
            Also try query-adaptive probing (metric 'cosine' or 'dot', ``reorder_k`` not
            given): from the fastest fixed budget (L, R), smaller budgets (L/2 or L/3 leaves,
            R/2 or 2R/3 candidates) each get the smallest ``leaf_margin`` (0.01 steps, up to
            0.64) reaching the goal; a margin setting replaces the fixed budget when it is
            faster (timed alternately). The chosen margin is stored with the index and used by
            ``search`` when it is given no ``leaf_margin`` (``default_leaf_margin()``). "auto":
            only when tuning on given ``queries``; held-out points are members of the
            partition, for which a margin admits fewer leaves than for real queries, so they
            choose margins too wide (see docs/parameters.md). "always": on held-out points too.
            None: fixed counts only (and a stored margin is removed).

        Returns
        -------
        TuneReport
            The chosen ``leaves_to_search``, ``reorder_k`` and ``leaf_margin``, the recall measured on the
            tuning queries, the expected QPS (one thread, batched), the number of tuning
            queries and every setting evaluated; the layout (``dims_per_block``, ``spill``) and,
            with ``layouts``, every layout's measurement (``layouts``).

        Raises
        ------
        ValueError
            target_recall outside (0, 1], k < 1, an untrained or empty index, X that is not the
            indexed set, no way to get the exact neighbours, or ``layouts`` without ``X`` or
            with an invalid layout.
        TypeError
            Arguments of the wrong type (``layouts`` not "auto" or a sequence of pairs).

        Warns
        -----
        UserWarning
            When no setting reaches the target (or the time budget ends first): the largest
            budget tried is chosen and the warning gives the recall it reaches.

        Notes
        -----
        The setting returned is the fastest among those measured, so which of two nearly
        equally fast settings wins can depend on timing noise; pass ``reorder_k`` for a fully
        deterministic choice of the budget. With ``layouts`` the copies, their recalls and their
        minimal budgets are deterministic for a seed; the choice between layouts is a timing.
        Layout tuning keeps up to three trained indexes in memory (this one, the best copy so
        far and the one being measured); progress is shown as stage "tune layouts" (and the
        training stages) by ``verbose``/``progress``; Ctrl-C stops it and leaves the index as it was.

        Examples
        --------
        >>> import numpy as np, avq_plugin
        >>> X = np.random.default_rng(0).standard_normal((5000, 16)).astype(np.float32)
        >>> index = avq_plugin.AVQIndex(metric="l2", seed=0).fit(X)
        >>> report = index.tune(target_recall=0.9, k=10, X=X, num_queries=200)
        >>> report.recall >= 0.9, index.default_search_params() == (report.leaves_to_search, report.reorder_k)
        (True, True)
        """
        if layouts is None:
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
                leaf_margin=leaf_margin,
                stacklevel=3,
            )
        else:
            report, winner = tuning.tune_layouts(
                self,
                layouts,
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
                leaf_margin=leaf_margin,
                stacklevel=3,
            )
            if winner is not None:
                self._adopt_layout(winner)  # the copy's trained state; the parameters stay
        self._apply_tune(report)
        return report

    def _apply_tune(self, report: TuneReport) -> None:
        """Make the budget of a :class:`TuneReport` this index's default (kept by save and pickle).

        The native record holds it; the constructor attributes keep what the user gave.
        """
        index = self._require_trained()
        rk = index.params().default_reorder_k if report.reorder_k is None else int(report.reorder_k)
        margin = -1.0 if report.leaf_margin is None else float(report.leaf_margin)
        index.set_default_search_params(int(report.leaves_to_search), rk, margin)

    # ------------------------------------------------------------------ inspection
    def get_codes(self, ids: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """PQ codes (0..15) of the given ids, uint8 (n, num_blocks)."""
        return self._require_trained().get_codes(V.as_ids(ids, None, unique=False, reject_padding=False))

    def get_ids(self) -> npt.NDArray[np.int64]:
        """All indexed ids (storage order)."""
        return self._require_trained().all_ids()
