"""scikit-learn estimators over the native index: AVQNearestNeighbors and AVQKNeighborsTransformer.

Drop-in replacements for :class:`sklearn.neighbors.NearestNeighbors` and
:class:`sklearn.neighbors.KNeighborsTransformer` backed by :class:`avq_plugin.AVQIndex`
(approximate) or, for small inputs, :class:`avq_plugin.ExactIndex` (exact brute force).

scikit-learn (>= 1.6) is an optional dependency: install it with
``pip install "avq-plugin[sklearn]"``. ``from avq_plugin import AVQNearestNeighbors`` imports this
module lazily.

Distances are in the metric's true units and computed exactly (float64, from the float32 data)
for the returned ids:

=================================  ============================  ==========================
``metric``                         distance                      native index metric
=================================  ============================  ==========================
``"euclidean"`` (alias ``"l2"``)   ``||q - x||``                 ``"l2"`` (squared), sqrt
``"sqeuclidean"``                  ``||q - x||^2``               ``"l2"``
``"cosine"``                       ``1 - cos(q, x)``             ``"cosine"``
``"dot"`` (``"ip"``,               ``-<q, x>`` (negative; the    ``"dot"`` (MIPS)
``"inner_product"``)               largest inner product first)
=================================  ============================  ==========================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import scipy.sparse as sp
    from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "avq_plugin's scikit-learn estimators need scikit-learn >= 1.6, an optional dependency: "
        "pip install 'avq-plugin[sklearn]'"
        f" (original error: {exc})"
    ) from exc

from ._neighbors_base import EXACT_SEARCH_THRESHOLD, _AVQNeighborsBase, _check_radius, _resolve_n_jobs
from .exact import ExactIndex

__all__ = ["AVQNearestNeighbors", "AVQKNeighborsTransformer", "EXACT_SEARCH_THRESHOLD"]


_PARAMS_DOC = """
    metric : {"euclidean", "l2", "sqeuclidean", "cosine", "dot", "ip", "inner_product"}, \
default="euclidean"
        Distance; "dot" (and its aliases) is maximum inner product search with distance
        ``-<q, x>``. Unknown names raise a ValueError listing these.
    algorithm : {"auto", "avq", "brute"}, default="auto"
        "avq": the approximate index; "brute": exact search; "auto": exact search when the
        training data has fewer than ``EXACT_SEARCH_THRESHOLD`` (5000) rows, else "avq".
    num_leaves : int, default=None
        Partitions of the index; None: round(sqrt(n_samples)).
    leaves_to_search : int, default=None
        Partitions probed per query; None: ceil(3.5 * sqrt(num_leaves)) (at most num_leaves,
        the rule shared with :class:`avq_plugin.AVQIndex`),
        or the value chosen by ``target_recall``.
    target_recall : float in (0, 1], default=None
        Instead of ``leaves_to_search``: at fit time, :meth:`avq_plugin.AVQIndex.tune` picks
        the smallest ``leaves_to_search`` whose recall@n_neighbors on 1000 held-out training
        points reaches this target (plus a safety margin), with ``reorder_k`` fixed (so the
        choice is deterministic). Ignored by exact search.
    reorder_k : int, default=None
        Candidates re-scored exactly; None: max(200, 20 * n_neighbors of the call).
    dims_per_block : int, default=None
        Dimensions per 4-bit product-quantization block (1 to 8); None: 4 for 256 or more
        features under an inner-product or cosine metric (which also turns on SOAR spilling),
        else 2 (see :class:`avq_plugin.AVQIndex`).
    anisotropic_threshold : float, "auto" or None, default="auto"
        Score threshold of the anisotropic loss (see :class:`avq_plugin.AVQIndex`).
    n_jobs : int, default=None
        Threads for training and search: None means 1, -1 all cores, -2 all but one
        (scikit-learn's convention).
    random_state : int, RandomState instance or None, default=None
        Seed of the index's training (k-means and codebooks). An int is used as the seed; a
        RandomState gives one draw; None draws from numpy's global RandomState. The same int
        and data give identical results.
    leaf_margin : float >= 0, default=None
        Query-adaptive probing (metric cosine or an inner product; not euclidean): a query also
        probes every further partition whose centre is within ``leaf_margin`` of its best one's
        (see :meth:`avq_plugin.AVQIndex.search`). None: off. With ``target_recall`` the tuned
        ``leaves_to_search`` is the floor, so recall is at least the target's. Ignored by exact
        search.
"""


class AVQNearestNeighbors(_AVQNeighborsBase):
    __doc__ = (
        """Approximate nearest neighbours with anisotropic vector quantization (ScaNN's loss).

    A drop-in replacement for :class:`sklearn.neighbors.NearestNeighbors`: ``kneighbors``,
    ``kneighbors_graph``, ``radius_neighbors`` and ``radius_neighbors_graph`` with the same
    signatures and outputs, backed by :class:`avq_plugin.AVQIndex`. The default search budget
    reaches recall@10 >= 0.95 against exact search on GloVe and digits data (see docs/sklearn.md);
    distances of the returned neighbours are exact.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours for ``kneighbors`` by default.
    radius : float, default=1.0
        Range for ``radius_neighbors`` by default."""
        + _PARAMS_DOC
        + """
    Attributes
    ----------
    index_ : AVQIndex or ExactIndex
        The native index (ExactIndex for "brute" and small data under "auto").
    effective_metric_ : str
        "euclidean", "sqeuclidean", "cosine" or "dot".
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when fit on a DataFrame with string column names.
    n_samples_fit_ : int
        Number of training rows.
    tune_report_ : avq_plugin TuneReport or None
        What ``target_recall`` chose and measured; None without it (or with exact search).

    Notes
    -----
    The estimator keeps a float32 copy of the training data (as scikit-learn does) for
    ``X=None`` queries and exact distances, in addition to the index's own re-ranking copy.
    Under "cosine", all-zero rows raise a ValueError (scikit-learn gives them distance 1).

    Examples
    --------
    >>> import numpy as np
    >>> from avq_plugin import AVQNearestNeighbors
    >>> X = np.random.default_rng(0).standard_normal((6000, 16)).astype(np.float32)
    >>> nn = AVQNearestNeighbors(n_neighbors=3, random_state=0).fit(X)
    >>> dist, ind = nn.kneighbors(X[:2])
    >>> ind[:, 0].tolist(), float(dist[0, 0])
    ([0, 1], 0.0)
    >>> nn.kneighbors_graph(X[:2]).shape
    (2, 6000)
    """
    )

    def __init__(
        self,
        *,
        n_neighbors: int = 5,
        radius: float = 1.0,
        metric: str = "euclidean",
        algorithm: str = "auto",
        num_leaves: int | None = None,
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
        target_recall: float | None = None,
        dims_per_block: int | None = None,
        anisotropic_threshold: float | str | None = "auto",
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        leaf_margin: float | None = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.radius = radius
        self.metric = metric
        self.algorithm = algorithm
        self.num_leaves = num_leaves
        self.leaves_to_search = leaves_to_search
        self.reorder_k = reorder_k
        self.target_recall = target_recall
        self.dims_per_block = dims_per_block
        self.anisotropic_threshold = anisotropic_threshold
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.leaf_margin = leaf_margin

    def _validate_params(self) -> None:
        super()._validate_params()
        _check_radius(self.radius, self.metric)

    def radius_neighbors(
        self,
        X: npt.ArrayLike | None = None,
        radius: float | None = None,
        return_distance: bool = True,
        sort_results: bool = False,
    ) -> Any:
        """Find the neighbours within a radius of each query point (approximate).

        The index retrieves candidates in rounds: when every candidate of a row lies within
        ``radius``, that row is searched again with four times more candidates and twice the
        leaves, up to an exhaustive search. A point within the radius is missed only when the
        approximate search ranks it below a candidate that lies outside the radius. With the
        exact fallback (``algorithm="brute"`` or small data) the result is exact.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query points; ``None``: the training points, each without itself.
        radius : float, default=None
            Radius in the metric's units; defaults to the constructor's ``radius``. With
            ``metric="dot"`` distances are negative inner products, so the radius may be negative.
        return_distance : bool, default=True
            Whether to return the distances.
        sort_results : bool, default=False
            Sort by distance (results are always sorted; accepted for compatibility). Requires
            ``return_distance=True``, as in scikit-learn.

        Returns
        -------
        neigh_dist : ndarray of shape (n_queries,), dtype=object
            Arrays of float64 distances, one per query. Only if ``return_distance=True``.
        neigh_ind : ndarray of shape (n_queries,), dtype=object
            Arrays of int64 row numbers of the training data.
        """
        check_is_fitted(self)
        if sort_results and not return_distance:
            raise ValueError("return_distance must be True if sort_results is True.")
        radius = _check_radius(self.radius if radius is None else radius, self.metric)
        query_is_train = X is None
        Q = self._fit_X if X is None else self._check_query(X)
        nq, n = Q.shape[0], self.n_samples_fit_
        n_threads = _resolve_n_jobs(self.n_jobs)
        out_d = np.empty(nq, dtype=object)
        out_i = np.empty(nq, dtype=object)
        todo = np.arange(nq)
        k = min(n, max(32, 2 * self.n_neighbors + 1))
        exact = isinstance(self.index_, ExactIndex)
        if not isinstance(self.index_, ExactIndex):
            lts, rk = self._budget(k)
            L = self.index_.num_leaves_
        while todo.size:
            if exact or k == n:
                lts_now, rk_now = (None, None) if exact else (L, n)
            else:
                lts_now, rk_now = lts, max(rk, k)
            D, I = self._query(Q[todo], k, n_threads, lts_now, rk_now)
            within = D <= radius
            full = within[:, -1] & (k < n)
            for row in np.flatnonzero(~full):
                q = todo[row]
                keep = within[row]
                ind, dist = I[row][keep], D[row][keep]
                if query_is_train:
                    mask = ind != q
                    ind, dist = ind[mask], dist[mask]
                out_i[q] = ind
                out_d[q] = dist
            todo = todo[full]
            k = min(n, 4 * k)
            if not exact:
                lts = min(L, 2 * lts)
        return (out_d, out_i) if return_distance else out_i

    def radius_neighbors_graph(
        self,
        X: npt.ArrayLike | None = None,
        radius: float | None = None,
        mode: str = "connectivity",
        sort_results: bool = False,
    ) -> Any:
        """Graph of the neighbours within ``radius`` (approximate; see ``radius_neighbors``).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query points; ``None``: the training points, each without itself.
        radius : float, default=None
            Defaults to the constructor's ``radius``.
        mode : {"connectivity", "distance"}, default="connectivity"
        sort_results : bool, default=False
            Accepted for compatibility (entries are always sorted by distance within a row).

        Returns
        -------
        A : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit)
        """
        check_is_fitted(self)
        if mode not in ("connectivity", "distance"):
            raise ValueError(f'Unsupported mode, must be one of "connectivity", or "distance" but got "{mode}" instead')
        D, I = self.radius_neighbors(X, radius=radius, return_distance=True)
        counts = np.fromiter((len(a) for a in I), dtype=np.int64, count=len(I))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        ind = np.concatenate(list(I)) if len(I) else np.zeros(0, np.int64)
        data = np.ones(ind.size) if mode == "connectivity" else (np.concatenate(list(D)) if len(D) else np.zeros(0))
        return sp.csr_matrix((data, ind, indptr), shape=(len(I), self.n_samples_fit_))


class AVQKNeighborsTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _AVQNeighborsBase):
    __doc__ = (
        """Transform X into an (approximate) k-nearest-neighbours graph.

    A drop-in replacement for :class:`sklearn.neighbors.KNeighborsTransformer`, for
    ``KNeighborsClassifier(metric="precomputed")``, ``Isomap``, ``TSNE(metric="precomputed")``,
    ``DBSCAN(metric="precomputed")`` and the like. As in scikit-learn, in ``mode="distance"``
    each row has ``n_neighbors + 1`` entries, so that transforming the training data gives
    every point itself (distance 0) plus ``n_neighbors`` others.

    Parameters
    ----------
    mode : {"distance", "connectivity"}, default="distance"
        Stored values: distances, or ones (then ``n_neighbors`` entries per row).
    n_neighbors : int, default=5
        Neighbours per sample (plus one in distance mode)."""
        + _PARAMS_DOC
        + """
    Attributes
    ----------
    index_ : AVQIndex or ExactIndex
    effective_metric_ : str
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    n_samples_fit_ : int
    tune_report_ : avq_plugin TuneReport or None

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from avq_plugin import AVQKNeighborsTransformer
    >>> X, y = load_digits(return_X_y=True)
    >>> pipe = make_pipeline(AVQKNeighborsTransformer(n_neighbors=5),
    ...                      KNeighborsClassifier(n_neighbors=5, metric="precomputed"))
    >>> round(pipe.fit(X[:1500], y[:1500]).score(X[1500:], y[1500:]), 2)
    0.96
    """
    )

    def __init__(
        self,
        *,
        mode: str = "distance",
        n_neighbors: int = 5,
        metric: str = "euclidean",
        algorithm: str = "auto",
        num_leaves: int | None = None,
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
        target_recall: float | None = None,
        dims_per_block: int | None = None,
        anisotropic_threshold: float | str | None = "auto",
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        leaf_margin: float | None = None,
    ) -> None:
        self.mode = mode
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.algorithm = algorithm
        self.num_leaves = num_leaves
        self.leaves_to_search = leaves_to_search
        self.reorder_k = reorder_k
        self.target_recall = target_recall
        self.dims_per_block = dims_per_block
        self.anisotropic_threshold = anisotropic_threshold
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.leaf_margin = leaf_margin

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.mode not in ("distance", "connectivity"):
            raise ValueError(f"mode must be 'distance' or 'connectivity', got {self.mode!r}")

    def _tune_k(self) -> int:
        return self.n_neighbors + (self.mode == "distance")

    def fit(self, X: npt.ArrayLike, y: object = None) -> AVQKNeighborsTransformer:
        """Index the training data X (see :meth:`AVQNearestNeighbors.fit`). Returns self."""
        super().fit(X)
        self._n_features_out = self.n_samples_fit_
        return self

    def transform(self, X: npt.ArrayLike) -> Any:
        """Compute the neighbours graph of X.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)

        Returns
        -------
        Xt : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit)
            ``n_neighbors + 1`` entries per row in distance mode (the training point itself
            included when X is the training data), ``n_neighbors`` in connectivity mode.
        """
        check_is_fitted(self)
        add_one = self.mode == "distance"
        return self.kneighbors_graph(X, mode=self.mode, n_neighbors=self.n_neighbors + add_one)

    def fit_transform(self, X: npt.ArrayLike, y: object = None) -> Any:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)
