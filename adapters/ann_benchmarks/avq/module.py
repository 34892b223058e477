"""avq-plugin as an ann-benchmarks algorithm (copy this folder to ``ann_benchmarks/algorithms/avq/``).

The definition mirrors ann-benchmarks' ``scann`` entry: the constructor takes
``(n_leaves, avq_threshold, dims_per_block, metric)`` and the query arguments are
``[leaves_to_search, reorder_k]``, or ``[leaves_to_search, reorder_k, leaf_margin]`` on angular
data (query-adaptive probing, ``AVQIndex.search(..., leaf_margin=...)``). It wraps
:class:`avq_plugin.AVQIndex`:

- ``angular`` data is L2-normalised into a new float32 array (zero rows stay zero) and
  indexed with ``metric="dot"``; for unit vectors the inner product orders points as the
  cosine does, so queries need no normalisation. ``avq_threshold`` is the index's
  ``anisotropic_threshold`` T, the same absolute score threshold as ScaNN's
  ``anisotropic_quantization_threshold`` (on unit vectors, T = 0.2 means cos >= 0.2); the
  anisotropic weight eta is derived from T with the index's default exact formula
  (``eta_formula="exact"``), not ScaNN's large-d limit.
- ``euclidean`` data is indexed with ``metric="l2"``. ``avq_threshold`` NaN (ScaNN's
  euclidean entries use ``.nan``) or None means plain reconstruction-loss PQ.
- The caller's array is never modified: float32 input is read as is (the index copies what
  it keeps), anything else is converted into a new array.

Threads: single queries (``query``) use one thread, as upstream expects (its Docker runner
pins each non-batch container to one CPU); ``batch_query`` and ``fit`` use every CPU this
process may run on (``os.sched_getaffinity``).

Memory: ``get_memory_usage`` is the base class's (process RSS in kB), like every other
ann-benchmarks algorithm, so ``index_size`` is the RSS growth during ``fit``. The
normalised copy of angular data is freed before ``fit`` returns, so it is not counted.
``get_additional`` adds ``index_memory_kb``, the bytes the native index itself holds.
"""

import math
import os

import numpy as np

from avq_plugin import AVQIndex

from ..base.module import BaseANN

_METRICS = {"angular": "dot", "euclidean": "l2"}


def _available_cpus():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _margin(value):
    """leaf_margin from the config: None (off) or a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"leaf_margin must be a number or None, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"leaf_margin must be finite and >= 0, got {value!r}")
    return value


def _threshold(value):
    """avq_threshold from the config: a float >= 0, or NaN/None for plain PQ."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"avq_threshold must be a number, NaN or None, got {value!r}")
    value = float(value)
    if math.isnan(value):
        return None
    if value < 0 or math.isinf(value):
        raise ValueError(f"avq_threshold must be finite and >= 0 (or NaN for plain PQ), got {value!r}")
    return value


class AVQ(BaseANN):
    """AVQIndex behind ann-benchmarks' BaseANN interface.

    Parameters
    ----------
    n_leaves : int
        Number of k-means partitions; lowered to the number of training points when larger.
    avq_threshold : float, NaN or None
        Anisotropic score threshold T (NaN/None: plain PQ, as for ScaNN's euclidean entries).
    dims_per_block : int, 1..8
        Dimensions per 4-bit PQ block.
    metric : {"angular", "euclidean"}
        The dataset's distance (``'@metric'`` in config.yml).
    """

    def __init__(self, n_leaves, avq_threshold, dims_per_block, metric):
        if metric not in _METRICS:
            raise ValueError(f"metric must be 'angular' or 'euclidean', got {metric!r}")
        self.n_leaves = _positive_int("n_leaves", n_leaves)
        self.avq_threshold = _threshold(avq_threshold)
        self.dims_per_block = _positive_int("dims_per_block", dims_per_block)
        if self.dims_per_block > 8:
            raise ValueError(f"dims_per_block must be between 1 and 8, got {dims_per_block!r}")
        self.metric = metric
        self.num_threads_batch = _available_cpus()
        self._index = None
        self._built_leaves = None
        self.leaves_to_search = None
        self.reorder_k = None
        self.leaf_margin = None
        self._effective = None
        self._batch = None
        self._last_k = 0
        self._update_name()

    # ------------------------------------------------------------------ naming
    def _update_name(self):
        T = "nan" if self.avq_threshold is None else f"{self.avq_threshold:g}"
        leaves = str(self.n_leaves)
        if self._built_leaves is not None and self._built_leaves != self.n_leaves:
            leaves += f" (built {self._built_leaves})"
        name = f"AVQ(n_leaves={leaves}, avq_threshold={T}, dims_per_block={self.dims_per_block}, metric={self.metric}"
        if self.leaves_to_search is not None:
            lts = str(self.leaves_to_search)
            if self._effective is not None and self._effective[0] != self.leaves_to_search:
                lts += f" (clamped to {self._effective[0]})"
            name += f", leaves_to_search={lts}, reorder_k={self.reorder_k}"
            if self.leaf_margin is not None:
                name += f", leaf_margin={self.leaf_margin:g}"
        self.name = name + ")"

    def __str__(self):
        return self.name

    # ------------------------------------------------------------------ build
    def fit(self, X):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"fit expects a non-empty 2-D array, got shape {X.shape}")
        n = X.shape[0]
        if self.metric == "angular":
            # A new float32 array: the caller's X is left untouched.
            data = np.array(X, dtype=np.float32, order="C", copy=True)
            norms = np.linalg.norm(data, axis=1)
            norms[norms == 0] = 1.0
            data /= norms[:, None]
        else:
            data = X if X.dtype == np.float32 and X.flags.c_contiguous else np.ascontiguousarray(X, np.float32)
        leaves = min(self.n_leaves, n)
        self._index = AVQIndex(
            metric=_METRICS[self.metric],
            num_leaves=leaves,
            dims_per_block=self.dims_per_block,
            anisotropic_threshold=self.avq_threshold,
            reorder="float32",
            num_threads=self.num_threads_batch,
            seed=0,
        )
        self._index.fit(data)
        del data  # the index keeps its own copy; drop the normalised one before RSS is read
        self._built_leaves = self._index.num_leaves_
        if self.leaves_to_search is not None:
            self._clamp()
        self._update_name()

    # ------------------------------------------------------------------ search
    def set_query_arguments(self, leaves_to_search, reorder_k=None, leaf_margin=None):
        """Search budget for the next queries; the index is not rebuilt.

        Accepts ``(leaves_to_search, reorder_k[, leaf_margin])`` or one such list (the form a
        config.yml list of pairs or triples produces, as in scann's entry).
        ``leaves_to_search`` is clamped to the number of leaves built and ``reorder_k`` to
        the number of indexed points. ``leaf_margin`` (angular data only; default off): a
        query also probes every further leaf whose centre is within that cosine of its best
        leaf's, and re-ranks ``reorder_k`` times sqrt(its leaves / ``leaves_to_search``).
        """
        if reorder_k is None:
            if not isinstance(leaves_to_search, (list, tuple)) or len(leaves_to_search) not in (2, 3):
                raise ValueError(
                    "set_query_arguments expects (leaves_to_search, reorder_k[, leaf_margin]) or one "
                    f"[leaves_to_search, reorder_k] pair or [..., leaf_margin] triple, got {leaves_to_search!r}"
                )
            leaves_to_search, reorder_k, *rest = leaves_to_search
            leaf_margin = rest[0] if rest else None
        margin = _margin(leaf_margin)
        if margin is not None and self.metric != "angular":
            raise ValueError("leaf_margin applies to angular data only (the index ranks leaves by score)")
        self.leaves_to_search = _positive_int("leaves_to_search", leaves_to_search)
        self.reorder_k = _positive_int("reorder_k", reorder_k)
        self.leaf_margin = margin
        if self._index is not None:
            self._clamp()
        self._update_name()

    def _clamp(self):
        self._effective = (min(self.leaves_to_search, self._built_leaves), min(self.reorder_k, self._index.ntotal))

    def _budget(self):
        if self._index is None:
            raise ValueError("call fit(X) before querying")
        if self._effective is None:
            raise ValueError("call set_query_arguments(leaves_to_search, reorder_k) before querying")
        return self._effective

    def query(self, v, n):
        lts, rk = self._budget()
        self._last_k = n
        _, ids = self._index.search(
            v, n, leaves_to_search=lts, reorder_k=rk, num_threads=1, leaf_margin=self.leaf_margin
        )
        ids = ids[0]
        # Fewer than n points can be found when few leaves are probed: drop the -1 padding.
        return ids if ids[-1] >= 0 else ids[ids >= 0]

    def batch_query(self, X, n):
        lts, rk = self._budget()
        self._last_k = n
        self._batch = self._index.search(
            X, n, leaves_to_search=lts, reorder_k=rk, num_threads=self.num_threads_batch, leaf_margin=self.leaf_margin
        )

    def get_batch_results(self):
        _, ids = self._batch
        return [row if row[-1] >= 0 else row[row >= 0] for row in ids]

    # ------------------------------------------------------------------ reporting
    def get_additional(self):
        if self._index is None:
            return {}
        out = {
            "n_leaves_built": int(self._built_leaves),
            "index_memory_kb": self._index.memory_usage() / 1024.0,
        }
        if self._effective is not None:
            out["leaves_searched"] = int(self._effective[0])
            # The index re-scores max(k, reorder_k) candidates (at most the index size).
            # (with leaf_margin: the base of each query's budget, which grows with its leaves)
            out["reorder_k_used"] = int(min(max(self._effective[1], self._last_k), self._index.ntotal))
        return out

    def done(self):
        self._index = None
        self._batch = None
