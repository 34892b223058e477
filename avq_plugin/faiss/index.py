"""IndexAVQ: a Faiss-shaped index (a swap for ``faiss.IndexPQ`` / ``faiss.IndexIVFPQ``) and export
of anisotropic codebooks into real Faiss indexes.

``IndexAVQ`` follows the Faiss index contract (``d``, ``ntotal``, ``is_trained``, ``metric_type``,
``code_size``, ``train``, ``add``, ``add_with_ids``, ``search``, ``range_search``, ``reset``,
``remove_ids``, ``reconstruct``, ``reconstruct_n``) without importing faiss. Only
:meth:`IndexAVQ.to_faiss` and :meth:`IndexAVQ.from_faiss` need the optional ``faiss`` extra
(``pip install "avq-plugin[faiss]"``).

How the AVQ index maps onto Faiss's layouts
-------------------------------------------
* ``M`` sub-quantizers of ``dsub = d / M`` dimensions with 16 centroids each (4-bit codes): one
  4-bit PQ block per sub-quantizer, so the codes are the same numbers Faiss stores (packed
  two per byte, low nibble first, ``code_size = ceil(M / 2)`` bytes per vector).
* Exhaustive (``nlist=None``): one leaf whose centre ``c`` is subtracted before encoding. The
  export folds it into the codebooks (``centroid[m][k] = codeword[m][k] + c[m]``), so a
  ``faiss.IndexPQ`` decodes exactly the vectors we decode.
* IVF (``nlist=n``): every vector is its leaf's centre plus a PQ-coded residual, i.e. Faiss's
  ``IndexIVFPQ`` with ``by_residual=True``; the coarse quantizer is a flat index holding our
  centres. For inner product, ``IndexAVQ`` probes and assigns leaves by ``<x, centre>`` as Faiss's
  ``IndexIVF`` does, so both rank the same candidates.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _params
from .. import _validation as V
from ..index import AVQIndex

__all__ = ["IndexAVQ", "SearchParametersAVQ", "METRIC_INNER_PRODUCT", "METRIC_L2"]

# The integers Faiss uses for its metrics (faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2).
METRIC_INNER_PRODUCT = 0
METRIC_L2 = 1
_METRIC_NAMES = {METRIC_INNER_PRODUCT: "dot", METRIC_L2: "l2"}
_FLT_MAX = float(np.finfo(np.float32).max)
_MAX_DSUB = V.LIMITS["max_dims_per_block"]  # dims per 4-bit block supported by the native code


def _check_metric(metric: object) -> int:
    if isinstance(metric, (bool, np.bool_)) or not isinstance(metric, numbers.Integral) or int(metric) not in (0, 1):
        raise ValueError(
            f"metric must be faiss.METRIC_INNER_PRODUCT (0) or faiss.METRIC_L2 (1), got {metric!r} "
            "(for cosine similarity, normalise the vectors and use METRIC_INNER_PRODUCT)"
        )
    return int(metric)


def _check_shape(d: int, M: int, nbits: int) -> tuple[int, int, int]:
    d = V.check_dim(d)
    M = V.check_int("M", M, minimum=1)
    nbits = V.check_int("nbits", nbits)
    if nbits != 4:
        raise ValueError(f"nbits={nbits} is not supported: IndexAVQ uses 4-bit codes (16 centroids per sub-quantizer)")
    if d % M:
        raise ValueError(f"M={M} must divide d={d} (as in Faiss): every sub-quantizer covers d / M dimensions")
    if d // M > _MAX_DSUB:
        raise ValueError(
            f"d / M = {d // M} dimensions per sub-quantizer is not supported (at most {_MAX_DSUB}): "
            f"use M >= {math.ceil(d / _MAX_DSUB)} with M dividing d"
        )
    return d, M, nbits


class SearchParametersAVQ:
    """Per-call search parameters, like ``faiss.SearchParametersIVF``.

    Parameters
    ----------
    nprobe : int, optional
        Leaves probed per query (IVF); None keeps the index's ``nprobe``.
    reorder_k : int, optional
        Candidates re-scored exactly against stored vectors (only for an index created with
        ``reorder_k``); None keeps the index's ``reorder_k``.

    float_lut : bool, optional
        True: score the codes with float lookup tables instead of the 8-bit ones (Faiss's scores
        for the same codes, no re-ranking; slower). None keeps the index's ``float_lut``.
    leaf_margin : float >= 0, optional
        Query-adaptive probing for this call (see ``IndexAVQ``'s ``leaf_margin``); None keeps
        the index's.

    Any object with an ``nprobe`` attribute (e.g. ``faiss.SearchParametersIVF``) is accepted too.
    """

    def __init__(
        self,
        nprobe: int | None = None,
        reorder_k: int | None = None,
        float_lut: bool | None = None,
        leaf_margin: float | None = None,
    ) -> None:
        self.nprobe = V.check_int("nprobe", nprobe, minimum=1, allow_none=True)
        self.leaf_margin = V.check_leaf_margin(leaf_margin)
        self.reorder_k = V.check_int("reorder_k", reorder_k, minimum=1, allow_none=True)
        if float_lut is not None and not isinstance(float_lut, (bool, np.bool_)):
            raise TypeError(f"float_lut must be a bool or None, got {type(float_lut).__name__}")
        self.float_lut = None if float_lut is None else bool(float_lut)

    def __repr__(self) -> str:
        return (
            f"SearchParametersAVQ(nprobe={self.nprobe}, reorder_k={self.reorder_k}, float_lut={self.float_lut}, "
            f"leaf_margin={self.leaf_margin})"
        )


class IndexAVQ:
    """Anisotropic 4-bit product quantization behind Faiss's index interface.

    A drop-in for ``faiss.IndexPQ(d, M, 4, metric)`` (exhaustive) or, with ``nlist``, for
    ``faiss.IndexIVFPQ`` with residual encoding: the same methods, attributes, dtypes, shapes and
    padding, with codebooks and encodings trained by the score-aware loss of Guo et al. (ICML
    2020). By default only the codes are stored (``code_size`` bytes per vector, plus an 8-byte
    id) and results are ranked by the quantized score, as ``IndexPQ`` does; ``reorder_k``
    keeps the float32 vectors and re-scores the best candidates exactly (as
    ``faiss.IndexRefineFlat``).

    Parameters
    ----------
    d : int
        Vector dimension.
    M : int
        Number of sub-quantizers; must divide ``d`` and ``d / M`` must be at most 8.
    nbits : int
        Bits per sub-quantizer code; only 4 is supported (16 centroids).
    metric : int
        ``faiss.METRIC_INNER_PRODUCT`` (0, the default: maximum inner product) or
        ``faiss.METRIC_L2`` (1: squared Euclidean distance). For cosine similarity normalise the
        vectors and use inner product, as with Faiss.
    nlist : int, optional
        Number of IVF leaves (k-means partitions); None (default) searches exhaustively.
    nprobe : int, optional
        Leaves probed per query; ignored when exhaustive. None (default): the rule every
        front-end shares, ceil(3.5 sqrt(nlist)) (at most nlist); Faiss's own default is 1.
    anisotropic_threshold : float, "auto" or None
        Score threshold T of the anisotropic loss. "auto" (default): T = 0.2 * mean ||x|| for
        inner product, none for L2. None: plain reconstruction-loss PQ.
    reorder_k : int, optional
        None (default): store codes only and rank by the quantized score. An integer: also store
        the float32 vectors and re-score that many candidates exactly.
    training_iterations, kmeans_iterations, training_sample_size : int
        Training effort, as in :class:`avq_plugin.AVQIndex`.
    float_lut : bool
        Score codes with float lookup tables (exactly Faiss's scores for the same codes, up to
        float summation order; no re-ranking; a slower scalar scan) instead of the default 8-bit
        SIMD scan. Settable; also per call through ``SearchParametersAVQ``.
    leaf_margin : float >= 0, optional
        Query-adaptive probing (inner product only; None, the default: off): a query also probes
        every further leaf whose centre's inner product is within ``leaf_margin * ||q||`` of its
        best leaf's, and re-ranks ``reorder_k`` times sqrt(its leaves / ``nprobe``) (see
        :meth:`avq_plugin.AVQIndex.search`). Settable; also per call through
        ``SearchParametersAVQ``; not with ``float_lut``. Kept by pickling, not by ``write_index``
        (Faiss has no such field).
    num_threads : int, optional
        Threads for training and batched search (None or -1: all cores).
    seed : int
        Seed of every random choice (same seed and data: same index).
    verbose : bool
        Print training progress to stderr.

    Attributes
    ----------
    d, M, nbits, ksub, dsub, metric_type, code_size, ntotal, is_trained, nlist, nprobe, reorder_k

    Notes
    -----
    * Ids are stable: ``remove_ids`` deletes the given ids and leaves every other id as it was
      (``faiss.IndexPQ`` renumbers the remaining vectors). ``add`` without ids continues from
      the largest id + 1, which equals ``ntotal`` as long as nothing was removed.
    * Distances: inner products for ``METRIC_INNER_PRODUCT`` and squared L2 distances for
      ``METRIC_L2``, best first; rows are padded with id -1 and distance -FLT_MAX (inner
      product) or +FLT_MAX (L2), exactly as Faiss pads.
    * Quantized scores use 8-bit lookup tables (Faiss's ``IndexPQ`` uses float tables), so a few
      near-ties may rank differently from the exported Faiss index; ``float_lut=True`` scores
      with float tables and ranks as Faiss does. Under L2 the quantized
      distance is ``||q - x~||^2`` of the decoded vector ``x~``, as in Faiss (with ``reorder_k``
      the candidates are re-scored with the exact distance).

    Examples
    --------
    >>> import numpy as np
    >>> from avq_plugin import IndexAVQ
    >>> X = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
    >>> index = IndexAVQ(16, 8, 4, 0)          # faiss.IndexPQ(16, 8, 4, faiss.METRIC_INNER_PRODUCT)
    >>> index.train(X); index.add(X)
    >>> D, I = index.search(X[:2], 5)
    >>> D.dtype.name, I.dtype.name, D.shape, index.ntotal, index.code_size
    ('float32', 'int64', (2, 5), 2000, 4)
    """

    def __init__(
        self,
        d: int,
        M: int,
        nbits: int = 4,
        metric: int = METRIC_INNER_PRODUCT,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        anisotropic_threshold: float | str | None = "auto",
        reorder_k: int | None = None,
        float_lut: bool = False,
        leaf_margin: float | None = None,
        training_iterations: int = 3,
        kmeans_iterations: int = 10,
        training_sample_size: int | None = None,
        num_threads: int | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        self.d, self.M, self.nbits = _check_shape(d, M, nbits)
        self.metric_type = _check_metric(metric)
        self.nlist = V.check_num_leaves(nlist, "nlist")
        self._nprobe = V.check_int("nprobe", nprobe, minimum=1, allow_none=True)
        self._stores_vectors = reorder_k is not None
        self._reorder_k = V.check_int("reorder_k", reorder_k, minimum=1, allow_none=True)
        self.float_lut = float_lut
        self.leaf_margin = leaf_margin
        self._avq = AVQIndex(
            metric=_METRIC_NAMES[self.metric_type],
            num_leaves=self.nlist or 1,
            dims_per_block=self.d // self.M,
            anisotropic_threshold=anisotropic_threshold,
            spill=None,  # Faiss's IVF-PQ has one copy of each vector (and export needs that)
            reorder="float32" if self._stores_vectors else "none",
            leaves_to_search=self._nprobe,
            reorder_k=self._reorder_k,
            training_iterations=training_iterations,
            kmeans_iterations=kmeans_iterations,
            training_sample_size=training_sample_size,
            num_threads=num_threads,
            seed=seed,
            verbose=verbose,
        )

    # ------------------------------------------------------------------ attributes
    ksub = 16

    @property
    def dsub(self) -> int:
        """Dimensions per sub-quantizer, d / M."""
        return self.d // self.M

    @property
    def code_size(self) -> int:
        """Bytes of code per vector, ceil(M * nbits / 8) (as Faiss)."""
        return (self.M * self.nbits + 7) // 8

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return self._avq.ntotal

    @property
    def is_trained(self) -> bool:
        """True once ``train`` has run (or the index came from ``read_index`` / ``from_faiss``)."""
        return self._avq.is_trained

    @property
    def anisotropic_threshold(self) -> float | str | None:
        return self._avq.anisotropic_threshold

    @property
    def nprobe(self) -> int:
        """Leaves probed per query (IVF); clamped to nlist. Default: the shared rule for nlist."""
        if self._nprobe is not None:
            return self._nprobe
        return _params.resolve_budget(None, self.d, num_leaves=self.nlist or 1).leaves_to_search

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = V.check_int("nprobe", value, minimum=1)

    @property
    def float_lut(self) -> bool:
        """Score codes with float lookup tables (Faiss's scores; slower, no re-ranking)."""
        return self._float_lut

    @float_lut.setter
    def float_lut(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"float_lut must be a bool, got {type(value).__name__}")
        self._float_lut = bool(value)

    @property
    def leaf_margin(self) -> float | None:
        """Query-adaptive probing margin (None: off; inner product only)."""
        return self._leaf_margin

    @leaf_margin.setter
    def leaf_margin(self, value: float | None) -> None:
        self._leaf_margin = self._check_margin(V.check_leaf_margin(value), "leaf_margin")

    def _check_margin(self, value: float | None, name: str) -> float | None:
        if value is not None and self.metric_type != METRIC_INNER_PRODUCT:
            raise ValueError(f"{name} needs metric METRIC_INNER_PRODUCT (query-adaptive probing ranks leaves by score)")
        return value

    @property
    def reorder_k(self) -> int | None:
        """Candidates re-scored exactly (None: codes only)."""
        return self._reorder_k

    @reorder_k.setter
    def reorder_k(self, value: int | None) -> None:
        if value is not None and not self._stores_vectors:
            raise ValueError(
                "this index stores codes only: exact re-ranking needs the vectors, so create it with "
                "reorder_k=<int> (IndexAVQ(d, M, 4, metric, reorder_k=100))"
            )
        if value is None and self._stores_vectors:
            raise ValueError("reorder_k must stay an integer for an index that stores vectors")
        self._reorder_k = V.check_int("reorder_k", value, minimum=1, allow_none=True)

    def __repr__(self) -> str:
        kind = "exhaustive" if self.nlist is None else f"nlist={self.nlist}, nprobe={self.nprobe}"
        return (
            f"IndexAVQ(d={self.d}, M={self.M}, nbits={self.nbits}, metric_type={self.metric_type}, {kind}, "
            f"reorder_k={self.reorder_k}; ntotal={self.ntotal})"
        )

    def _require_trained(self) -> None:
        if not self.is_trained:
            raise ValueError("the index is not trained: call train(x) first")

    def _matrix(self, x: npt.ArrayLike, name: str = "x") -> npt.NDArray[np.float32]:
        return V.as_float_matrix(x, name, d=self.d)

    # ------------------------------------------------------------------ build
    def train(self, x: npt.ArrayLike) -> None:
        """Train the leaves (IVF) and the anisotropic codebooks on x, float (n, d).

        Training an index that holds vectors raises ValueError (their codes would no longer
        decode): call ``reset()`` first.
        """
        if self.ntotal:
            raise ValueError(
                f"the index holds {self.ntotal} vectors encoded with the current codebooks: "
                "call reset() before training again"
            )
        x = self._matrix(x)
        if self.nlist is not None and self.nlist > x.shape[0]:
            raise ValueError(f"nlist={self.nlist} exceeds the number of training vectors ({x.shape[0]})")
        avq = self._avq
        self._sync_defaults()
        # L2 distances from the decoded vectors, as Faiss computes them (AVQIndex's rule for l2).
        avq._train(x, stacklevel=3)
        if self.metric_type == METRIC_INNER_PRODUCT and avq.num_leaves_ > 1:
            # Faiss's IndexIVF probes and assigns by <x, c> with the same centres it subtracts;
            # do the same (the native default probes by unit directions), so that both pick the
            # same leaves and the exported index ranks the same candidates.
            centres, codebooks = avq._quantizer()
            avq._set_quantizer(centres, centres, codebooks)

    def add(self, x: npt.ArrayLike) -> None:
        """Encode and add vectors x (n, d); they get ids max id + 1 onwards (0.. on a fresh index)."""
        self._require_trained()
        x = self._matrix(x)
        self._avq.add(x)

    def add_with_ids(self, x: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Encode and add vectors x (n, d) with the given int64 ids (unique, not already present)."""
        self._require_trained()
        x = self._matrix(x)
        ids = V.as_ids(ids, x.shape[0])
        self._avq.add(x, ids)

    def reset(self) -> None:
        """Remove every vector; the training is kept."""
        if self.is_trained:
            self._avq.reset()

    def remove_ids(self, ids: Any) -> int:
        """Remove the vectors with the given ids (an array of int64 ids; unknown ids are ignored).

        Returns the number of vectors removed. The other ids do not change.
        """
        if hasattr(ids, "is_member"):
            raise TypeError("remove_ids takes an array of ids; Faiss IDSelector objects are not supported")
        if not self.is_trained:
            return 0
        return self._avq.remove(ids)

    # ------------------------------------------------------------------ search
    def _budget(self, params: Any) -> tuple[int, int, bool, float | None]:
        nprobe, reorder_k, float_lut, margin = self.nprobe, self._reorder_k, self._float_lut, self._leaf_margin
        if params is not None:
            if not hasattr(params, "nprobe") and not hasattr(params, "reorder_k"):
                raise TypeError(
                    f"params must be a SearchParametersAVQ (or have an nprobe attribute), got {type(params).__name__}"
                )
            p_nprobe = getattr(params, "nprobe", None)
            if p_nprobe is not None:
                nprobe = V.check_int("params.nprobe", p_nprobe, minimum=1)
            p_rk = getattr(params, "reorder_k", None)
            if p_rk is not None:
                if not self._stores_vectors:
                    raise ValueError("params.reorder_k needs an index created with reorder_k=<int> (vectors stored)")
                reorder_k = V.check_int("params.reorder_k", p_rk, minimum=1)
            p_fl = getattr(params, "float_lut", None)
            if p_fl is not None:
                float_lut = bool(p_fl)
            p_margin = getattr(params, "leaf_margin", None)
            if p_margin is not None:
                margin = self._check_margin(V.check_leaf_margin(p_margin, "params.leaf_margin"), "params.leaf_margin")
        if float_lut and margin is not None:
            raise ValueError("leaf_margin does not apply to the float_lut scan: set one of them only")
        return nprobe, (reorder_k or 1), float_lut, margin

    def _native_search(
        self, x: npt.NDArray[np.float32], k: int, budget: tuple[int, int, bool, float | None]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        nprobe, rk, float_lut, margin = budget
        avq = self._avq
        if float_lut:
            return avq._search_float_lut(x, k, nprobe, avq.num_threads)
        return avq.search(x, k, leaves_to_search=nprobe, reorder_k=rk, num_threads=avq.num_threads, leaf_margin=margin)

    def search(
        self,
        x: npt.ArrayLike,
        k: int,
        *,
        params: Any = None,
        D: npt.NDArray[np.float32] | None = None,
        I: npt.NDArray[np.int64] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Search the k best vectors for each query.

        Parameters
        ----------
        x : array (n, d)
        k : int
            Results per query; rows are padded with id -1 and -FLT_MAX (inner product) /
            +FLT_MAX (L2) when fewer vectors are found.
        params : SearchParametersAVQ or faiss.SearchParametersIVF, optional
            Overrides ``nprobe`` / ``reorder_k`` for this call.
        D, I : arrays, optional
            Output arrays of shape (n, k), float32 and int64, filled in place (as Faiss allows).

        Returns
        -------
        D : float32 (n, k)
            Inner products (METRIC_INNER_PRODUCT) or squared L2 distances (METRIC_L2), best first.
        I : int64 (n, k)
            Ids, -1 for padding.
        """
        self._require_trained()
        k = V.check_k(k)
        x = self._matrix(x)
        V.check_result_size(x.shape[0], k)
        Dr, Ir = self._native_search(x, k, self._budget(params))
        return self._fill_outputs(Dr, Ir, D, I)

    @staticmethod
    def _fill_outputs(
        Dr: npt.NDArray[np.float32],
        Ir: npt.NDArray[np.int64],
        D: npt.NDArray[np.float32] | None,
        I: npt.NDArray[np.int64] | None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        for name, out, res, dtype in (("D", D, Dr, np.float32), ("I", I, Ir, np.int64)):
            if out is None:
                continue
            if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != res.shape:
                raise ValueError(f"{name} must be a {np.dtype(dtype).name} array of shape {res.shape}")
            out[...] = res
        return (Dr if D is None else D), (Ir if I is None else I)

    def range_search(
        self, x: npt.ArrayLike, radius: float, *, params: Any = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """All vectors within ``radius`` of each query: inner product > radius (inner product) or
        squared distance < radius (L2), as Faiss defines it.

        Approximate in the same way as ``search``: only the probed leaves are examined and the
        quantized score decides (the exact one when ``reorder_k`` is set).

        Returns
        -------
        lims : uint64 (n + 1,)
            Results of query i are ``D[lims[i]:lims[i + 1]]``, ``I[lims[i]:lims[i + 1]]``.
        D : float32, I : int64
            Scores/distances and ids, each query's results best first.
        """
        self._require_trained()
        x = self._matrix(x)
        radius = V.check_float("radius", radius)
        nprobe, rk, float_lut, margin = self._budget(params)
        n = x.shape[0]
        # Every row is filled: a row leaves ``todo`` once not all its k results pass.
        no_result = (np.zeros(0, np.float32), np.zeros(0, np.int64))
        per_query: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]] = [no_result] * n
        todo = np.arange(n)
        k = min(64, max(1, self.ntotal))
        ip = self.metric_type == METRIC_INNER_PRODUCT
        while todo.size:
            Dk, Ik = self._native_search(np.ascontiguousarray(x[todo]), k, (nprobe, max(rk, k), float_lut, margin))
            keep = (Ik >= 0) & ((Dk > radius) if ip else (Dk < radius))
            # A row whose k results all pass may have more: search it again with a larger k.
            full = np.asarray(keep.all(axis=1))
            if k >= self.ntotal:
                full[:] = False
            for j, qi in enumerate(todo):
                if not full[j]:
                    per_query[qi] = (Dk[j][keep[j]], Ik[j][keep[j]])
            todo = todo[full]
            k = min(self.ntotal, k * 4)
        lims = np.zeros(n + 1, dtype=np.uint64)
        lims[1:] = np.cumsum([len(p[1]) for p in per_query]) if n else []
        D = np.concatenate([p[0] for p in per_query]).astype(np.float32, copy=False)
        I = np.concatenate([p[1] for p in per_query]).astype(np.int64, copy=False)
        return lims, D, I

    # ------------------------------------------------------------------ decoding
    def _quantizer_arrays(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        centres, codebooks = self._avq._quantizer()
        return centres, codebooks.reshape(self.M, 16, self.dsub)  # Faiss's (M, ksub, dsub)

    def reconstruct_batch(self, ids: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Decoded vectors (leaf centre + codewords) of the given ids, float32 (n, d)."""
        self._require_trained()
        ids = V.as_ids(ids, None, unique=False, reject_padding=False)
        if ids.size == 0:
            return np.zeros((0, self.d), np.float32)
        codes = self._avq.get_codes(ids)
        leaves = self._avq._get_leaves(ids)
        centres, codebooks = self._quantizer_arrays()
        words = codebooks[np.arange(self.M)[None, :], codes]  # (n, M, dsub)
        return (centres[leaves] + words.reshape(len(ids), self.d)).astype(np.float32)

    def reconstruct(self, key: int) -> npt.NDArray[np.float32]:
        """Decoded vector of id ``key``, float32 (d,). Raises ValueError for an unknown id."""
        key = V.check_int("key", key)
        return self.reconstruct_batch(np.array([key], np.int64))[0]

    def reconstruct_n(self, n0: int = 0, ni: int = -1) -> npt.NDArray[np.float32]:
        """Decoded vectors of ids n0 .. n0 + ni - 1 (ni = -1: up to ntotal), float32 (ni, d).

        With Faiss's sequential ids this is storage rows n0 .. n0 + ni - 1; every id in the range
        must exist (ValueError otherwise).
        """
        n0 = V.check_int("n0", n0, minimum=0)
        ni = V.check_int("ni", ni, minimum=-1)
        if ni == -1:
            ni = max(0, self.ntotal - n0)
        return self.reconstruct_batch(np.arange(n0, n0 + ni, dtype=np.int64))

    def get_codes(self, ids: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """The 4-bit codes (0..15) of the given ids, uint8 (n, M)."""
        self._require_trained()
        return self._avq.get_codes(ids)

    # ------------------------------------------------------------------ Faiss export / import
    def to_faiss(self, fast_scan: bool = False, bbs: int = 32) -> Any:
        """A real Faiss index carrying these codebooks and codes (needs the ``faiss`` extra).

        See :func:`avq_plugin.faiss.export.to_faiss`.
        """
        from .export import to_faiss

        return to_faiss(self, fast_scan=fast_scan, bbs=bbs)

    @classmethod
    def from_faiss(
        cls,
        index: Any,
        *,
        anisotropic_threshold: float | None = None,
        nprobe: int | None = None,
        num_threads: int | None = None,
        seed: int = 0,
    ) -> IndexAVQ:
        """An IndexAVQ that starts from a trained Faiss index (needs the ``faiss`` extra).

        See :func:`avq_plugin.faiss.export.from_faiss`.
        """
        from .export import from_faiss

        return from_faiss(
            index, anisotropic_threshold=anisotropic_threshold, nprobe=nprobe, num_threads=num_threads, seed=seed
        )

    # ------------------------------------------------------------------ persistence
    def _sync_defaults(self) -> None:
        """Make nprobe and reorder_k the wrapped AVQIndex's default budget (kept in its files)."""
        self._avq.leaves_to_search = self._nprobe
        self._avq.reorder_k = self._reorder_k

    @classmethod
    def _from_avq(cls, avq: AVQIndex) -> IndexAVQ:
        """An IndexAVQ around a loaded AVQIndex; ValueError when no Faiss index describes it."""
        p = avq._native_params()
        if p["metric"] not in ("dot", "l2"):
            raise ValueError(
                f"this file holds a {p['metric']!r} index, which has no Faiss metric: load it with AVQIndex.load"
            )
        d, dpb = p["d"], p["dims_per_block"]
        if d % dpb:
            raise ValueError(
                f"this index has uneven blocks (d={d}, dims_per_block={dpb}): no Faiss M describes it; "
                "load it with AVQIndex.load"
            )
        obj = cls.__new__(cls)
        obj.d, obj.M, obj.nbits = d, d // dpb, 4
        obj.metric_type = METRIC_INNER_PRODUCT if p["metric"] == "dot" else METRIC_L2
        L = avq.num_leaves_ if avq.is_trained else (p["num_leaves"] or 1)
        obj.nlist = None if L == 1 else L
        obj._nprobe = p["default_leaves_to_search"] or None  # concrete once trained (AVQIndex.load)
        obj._stores_vectors = p["reorder"] != "none"
        if p["reorder"] in ("int8", "float16"):
            raise ValueError(f"{p['reorder']} reordering has no IndexAVQ equivalent: load it with AVQIndex.load")
        obj._reorder_k = (p["default_reorder_k"] or None) if obj._stores_vectors else None
        obj._float_lut = False
        obj._leaf_margin = None
        obj._avq = avq
        return obj

    def __getstate__(self) -> dict[str, Any]:
        self._sync_defaults()
        return {
            "avq": self._avq,
            "nprobe": self._nprobe,
            "reorder_k": self._reorder_k,
            "float_lut": self._float_lut,
            "leaf_margin": self._leaf_margin,
            "stores_vectors": self._stores_vectors,
            "d": self.d,
            "M": self.M,
            "metric_type": self.metric_type,
            "nlist": self.nlist,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._avq = state["avq"]
        self._nprobe = state["nprobe"]
        self._reorder_k = state["reorder_k"]
        self._float_lut = state["float_lut"]
        self._leaf_margin = state.get("leaf_margin")  # (absent in pickles made before it existed)
        self._stores_vectors = state["stores_vectors"]
        self.d, self.M, self.nbits = state["d"], state["M"], 4
        self.metric_type = state["metric_type"]
        self.nlist = state["nlist"]
