"""The machinery of the scikit-learn estimators (private: the public classes and their
documentation are in :mod:`avq_plugin.neighbors`): parameter checks, fitting the index
(AVQIndex or ExactIndex), budgeted queries with exact distance recomputation, ``kneighbors`` /
``kneighbors_graph`` and the helpers of the radius queries.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

# scikit-learn is checked for (with an installation hint) by avq_plugin.neighbors, which imports
# this module.
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _params
from . import _validation as V
from ._validation import LIMITS
from .index import AVQIndex, ExactIndex

#: With ``algorithm="auto"``, training sets with fewer rows than this are searched exactly
#: (:class:`avq_plugin.ExactIndex`): below it a partitioned index does not pay for its
#: training time, and results are then exact and deterministic (docs/sklearn.md, "Defaults").
EXACT_SEARCH_THRESHOLD = 5000

#: Metric names accepted by ``metric`` -> (effective metric, native index metric).
_METRICS = {
    "euclidean": ("euclidean", "l2"),
    "l2": ("euclidean", "l2"),
    "sqeuclidean": ("sqeuclidean", "l2"),
    "cosine": ("cosine", "cosine"),
    "dot": ("dot", "dot"),
    "ip": ("dot", "dot"),
    "inner_product": ("dot", "dot"),
}
_ALGORITHMS = ("auto", "avq", "brute")

# The automatic search budget is avq_plugin._params.resolve_budget's (docs/parameters.md,
# "Defaults"); this estimator uses its k-dependent re-ranking floor at query time.

# Rows of exact distance recomputation per chunk: bounds the (rows, k, d) float64 gather.
_RECOMPUTE_BYTES = 1 << 26


@overload
def _check_int(
    name: str, value: object, minimum: int, allow_none: Literal[False] = ..., maximum: int | None = ...
) -> int: ...
@overload
def _check_int(name: str, value: object, minimum: int, allow_none: bool, maximum: int | None = ...) -> int | None: ...
def _check_int(
    name: str, value: object, minimum: int, allow_none: bool = False, maximum: int | None = None
) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and int(value) > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def _check_real(name: str, value: object, minimum: float) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x) or x < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {x}")
    return x


def _resolve_n_jobs(n_jobs: object) -> int:
    """scikit-learn's n_jobs: None -> 1, -1 -> all cores, -2 -> all but one, ..."""
    if n_jobs is None:
        return 1
    n = _check_int("n_jobs", n_jobs, minimum=-(2**31), maximum=LIMITS["max_threads"])
    if n == 0:
        raise ValueError("n_jobs == 0 has no meaning; use None (1 thread), a positive count or -1 (all cores)")
    if n > 0:
        return n
    return max(1, (os.cpu_count() or 1) + 1 + n)


def _seed_from(random_state: object) -> int:
    """int -> itself; RandomState or None -> one draw (None: numpy's global RandomState)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, (bool, np.bool_)):
        if not 0 <= int(random_state) < 2**32:
            raise ValueError(f"random_state must be in [0, 2**32), got {random_state}")
        return int(random_state)
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return int(check_random_state(random_state).randint(0, 2**31 - 1))
    raise TypeError(
        f"random_state must be None, an int or a numpy.random.RandomState, got {type(random_state).__name__}"
    )


class _AVQNeighborsBase(BaseEstimator):
    """Fitting and querying shared by both estimators (not public)."""

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        if not isinstance(self.metric, str) or self.metric not in _METRICS:
            raise ValueError(f"metric={self.metric!r} is not supported; use one of {sorted(_METRICS)}")
        if not isinstance(self.algorithm, str) or self.algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {self.algorithm!r}")
        _check_int("n_neighbors", self.n_neighbors, minimum=1, maximum=LIMITS["max_k"])
        _check_int("num_leaves", self.num_leaves, minimum=1, allow_none=True, maximum=LIMITS["max_leaves"])
        _check_int(
            "leaves_to_search",
            self.leaves_to_search,
            minimum=1,
            allow_none=True,
            maximum=LIMITS["max_leaves_to_search"],
        )
        _check_int("reorder_k", self.reorder_k, minimum=1, allow_none=True, maximum=LIMITS["max_reorder_k"])
        V.check_leaf_margin(self.leaf_margin)
        if self.leaf_margin is not None and _METRICS[self.metric][1] == "l2":
            raise ValueError(
                f"leaf_margin applies to metric 'cosine' or an inner product, not {self.metric!r}: "
                "leave it None under a euclidean metric"
            )
        _check_int(
            "dims_per_block", self.dims_per_block, minimum=1, allow_none=True, maximum=LIMITS["max_dims_per_block"]
        )
        T = self.anisotropic_threshold
        if not (T is None or (isinstance(T, str) and T == "auto")):
            _check_real("anisotropic_threshold", T, minimum=0.0)
        _resolve_n_jobs(self.n_jobs)
        rs = self.random_state
        if not (
            rs is None
            or isinstance(rs, np.random.RandomState)
            or (isinstance(rs, numbers.Integral) and not isinstance(rs, (bool, np.bool_)))
        ):
            raise TypeError(f"random_state must be None, an int or a numpy.random.RandomState, got {type(rs).__name__}")
        if self.target_recall is not None:
            tr = _check_real("target_recall", self.target_recall, minimum=0.0)
            if not 0.0 < tr <= 1.0:
                raise ValueError(f"target_recall must be in (0, 1], got {tr}")
            if self.leaves_to_search is not None:
                raise ValueError("give leaves_to_search or target_recall, not both")

    def _tune_k(self) -> int:
        """Neighbours per query that target_recall refers to."""
        return self.n_neighbors

    def fit(self, X: npt.ArrayLike, y: object = None) -> Any:
        """Index the training data X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Dense training data (NumPy array, list, pandas DataFrame). Converted to float32.
            Sparse matrices are rejected with a TypeError (densify them with ``.toarray()``).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self
        """
        self._validate_params()
        data: npt.NDArray[np.float32] = validate_data(self, X, reset=True, dtype=np.float32, order="C")
        n, d = data.shape
        self.effective_metric_, native_metric = _METRICS[self.metric]
        if native_metric == "cosine":
            _reject_zero_rows(data, "X")
        n_threads = _resolve_n_jobs(self.n_jobs)
        tune_report = None
        index: AVQIndex | ExactIndex
        use_exact = self.algorithm == "brute" or (self.algorithm == "auto" and n < EXACT_SEARCH_THRESHOLD)
        if use_exact:
            index = ExactIndex(metric=native_metric, num_threads=n_threads).fit(data)
        else:
            seed = _seed_from(self.random_state)  # exact search draws nothing
            if self.num_leaves is not None and self.num_leaves > n:
                raise ValueError(f"num_leaves={self.num_leaves} exceeds the number of samples ({n})")
            # The index resolves the defaults (avq_plugin._params) at training time.
            index = AVQIndex(
                metric=native_metric,
                num_leaves=self.num_leaves,
                dims_per_block=self.dims_per_block,
                anisotropic_threshold=self.anisotropic_threshold,
                leaves_to_search=self.leaves_to_search,
                reorder_k=self.reorder_k,
                num_threads=n_threads,
                seed=seed,
            ).fit(data)
            if self.target_recall is not None:
                k = min(self._tune_k(), n - 1) if n > 1 else 1
                # reorder_k is fixed so that the choice does not depend on timings (determinism).
                tune_report = index.tune(
                    target_recall=float(self.target_recall),
                    k=k,
                    X=data,
                    reorder_k=self.reorder_k or _params.resolve_budget(n, d, k).reorder_k,
                    seed=seed,
                )
        self.index_ = index
        self.tune_report_ = tune_report
        self.n_samples_fit_ = n
        self._fit_X = data
        self._sq_norms = np.einsum("ij,ij->i", data, data, dtype=np.float64)
        return self

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    # ------------------------------------------------------------------ searching
    def _budget(self, k: int) -> tuple[int, int]:
        """(leaves_to_search, reorder_k) for k results."""
        index = self.index_
        assert isinstance(index, AVQIndex), "an exact index has no search budget"
        lts, rk = index.default_search_params()
        if self.reorder_k is None:  # the rule's re-ranking floor for this k
            rk = max(rk, _params.resolve_budget(None, self.n_features_in_, k, num_leaves=index.num_leaves_).reorder_k)
        return lts, max(rk, k)

    def _margin(self) -> float | None:
        """leaf_margin as AVQIndex.search takes it (validated at fit)."""
        return None if self.leaf_margin is None else float(self.leaf_margin)

    def _query(
        self, Q: npt.NDArray[np.float32], k: int, n_threads: int, lts: int | None = None, rk: int | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Top-k (ids, exact distances) of Q (float32, C) against the index; every row complete."""
        index = self.index_
        if isinstance(index, ExactIndex):
            _, I = index.search(Q, k, num_threads=n_threads)
        else:
            if lts is None:
                lts, rk = self._budget(k)
            # Rows are complete: the index widens the probe when its leaves hold fewer than k.
            _, I = index.search(
                Q, k, leaves_to_search=lts, reorder_k=rk, num_threads=n_threads, leaf_margin=self._margin()
            )
        if (I < 0).any():  # pragma: no cover - k <= n_samples_fit is checked by the callers
            raise RuntimeError("the index returned fewer neighbours than requested")
        return self._exact_distances(Q, I)

    def _exact_distances(
        self, Q: npt.NDArray[np.float32], I: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Distances of the pairs (Q[i], X[I[i, j]]) in float64 and the metric's units; rows re-sorted."""
        X = self._fit_X
        nq, k = I.shape
        D = np.empty((nq, k), dtype=np.float64)
        metric = self.effective_metric_
        step = max(1, _RECOMPUTE_BYTES // (8 * k * X.shape[1]))
        for s in range(0, nq, step):
            q = Q[s : s + step].astype(np.float64)
            idx = I[s : s + step]
            V = X[idx].astype(np.float64)  # (rows, k, d)
            if metric in ("euclidean", "sqeuclidean"):
                V -= q[:, None, :]
                d = np.einsum("rkd,rkd->rk", V, V)
                D[s : s + step] = np.sqrt(d) if metric == "euclidean" else d
            else:
                dots = np.einsum("rkd,rd->rk", V, q)
                if metric == "dot":
                    D[s : s + step] = -dots
                else:
                    qn = np.sqrt(np.einsum("rd,rd->r", q, q))
                    xn = np.sqrt(self._sq_norms[idx])
                    D[s : s + step] = np.clip(1.0 - dots / (qn[:, None] * xn), 0.0, 2.0)
        order = np.argsort(D, axis=1, kind="stable")
        return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)

    def _check_query(self, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
        data: npt.NDArray[np.float32] = validate_data(self, X, reset=False, dtype=np.float32, order="C")
        if self.effective_metric_ == "cosine":
            _reject_zero_rows(data, "X")
        return data

    def kneighbors(
        self, X: npt.ArrayLike | None = None, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]] | npt.NDArray[np.int64]:
        """Find the (approximate) k nearest neighbours of each query point.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query points. ``None`` queries the training points, and each is then not counted
            as its own neighbour (as in scikit-learn).
        n_neighbors : int, default=None
            Number of neighbours; defaults to the constructor's ``n_neighbors``.
        return_distance : bool, default=True
            Whether to return the distances.

        Returns
        -------
        neigh_dist : ndarray of shape (n_queries, n_neighbors), float64
            Distances in the metric's units (see the module docstring), ascending, computed
            exactly for the returned ids. Only returned if ``return_distance=True``.
        neigh_ind : ndarray of shape (n_queries, n_neighbors), int64
            Row numbers of the neighbours in the training data.
        """
        check_is_fitted(self)
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        n_neighbors = _check_int("n_neighbors", n_neighbors, minimum=1, maximum=LIMITS["max_k"])
        query_is_train = X is None
        if X is None:
            Q = self._fit_X
            k = n_neighbors + 1
        else:
            Q = self._check_query(X)
            k = n_neighbors
        if k > self.n_samples_fit_:
            raise ValueError(
                f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                f"n_samples_fit = {self.n_samples_fit_}, n_samples = {Q.shape[0]}"
            )
        D, I = self._query(Q, k, _resolve_n_jobs(self.n_jobs))
        if query_is_train:
            D, I = _drop_self(D, I)
        return (D, I) if return_distance else I

    def kneighbors_graph(
        self, X: npt.ArrayLike | None = None, n_neighbors: int | None = None, mode: str = "connectivity"
    ) -> Any:
        """Graph of the k nearest neighbours, as a CSR matrix.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query points; ``None``: the training points, each without itself.
        n_neighbors : int, default=None
            Number of neighbours per row; defaults to the constructor's ``n_neighbors``.
        mode : {"connectivity", "distance"}, default="connectivity"
            Ones, or the distances (in the metric's units; see the module docstring).

        Returns
        -------
        A : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit)
            ``n_neighbors`` stored entries per row, columns in ascending distance order.
        """
        check_is_fitted(self)
        if mode not in ("connectivity", "distance"):
            raise ValueError(f'Unsupported mode, must be one of "connectivity", or "distance" but got "{mode}" instead')
        D, I = self.kneighbors(X, n_neighbors=n_neighbors, return_distance=True)
        nq, k = I.shape
        data = np.ones(nq * k) if mode == "connectivity" else D.ravel()
        return sp.csr_matrix((data, I.ravel(), np.arange(0, nq * k + 1, k)), shape=(nq, self.n_samples_fit_))


def _check_radius(radius: object, metric: str) -> float:
    """A finite number; >= 0 except under "dot", whose distances are negative inner products."""
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, numbers.Real):
        raise TypeError(f"radius must be a number, got {type(radius).__name__} {radius!r}")
    r = float(radius)
    if not math.isfinite(r):
        raise ValueError(f"radius must be finite, got {r}")
    if r < 0 and _METRICS.get(metric, ("",))[0] != "dot":
        raise ValueError(f"radius must be >= 0, got {r}")
    return r


def _reject_zero_rows(X: npt.NDArray[Any], name: str) -> None:
    zero = ~X.any(axis=1)
    if zero.any():
        raise ValueError(
            f"{name} has an all-zero row (row {int(np.argmax(zero))}), which has no direction under the cosine metric"
        )


def _drop_self(
    D: npt.NDArray[np.float64], I: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Remove each training point from its own k+1 results (kneighbors(X=None)).

    When the point is absent (more than k exact duplicates displaced it, or the approximate
    search missed it), the last of the k+1 results is dropped instead; with duplicates this
    gives the same distances as scikit-learn.
    """
    nq, k1 = I.shape
    is_self = I == np.arange(nq)[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    # A row can contain its own id at most once, so each row drops exactly one entry.
    keep = ~is_self
    return D[keep].reshape(nq, k1 - 1), I[keep].reshape(nq, k1 - 1)
