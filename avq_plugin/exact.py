"""ExactIndex: exact brute-force search with the AVQIndex API (the recall oracle)."""

from __future__ import annotations

import os

import numpy as np

from . import _native
from . import _validation as V
from ._wrapper import _NativeWrapper

__all__ = ["ExactIndex"]


class ExactIndex(_NativeWrapper):
    """Exact brute-force search with the AVQIndex API: the recall oracle.

    Parameters
    ----------
    metric : {"dot", "cosine", "l2"}
    num_threads : int or None
        Threads for batched search; None or -1: all cores.

    Examples
    --------
    >>> import numpy as np, avq_plugin
    >>> X = np.eye(4, dtype=np.float32)
    >>> D, I = avq_plugin.ExactIndex(metric="dot").fit(X).search(X[1], k=1)
    >>> int(I[0, 0]), float(D[0, 0])
    (1, 1.0)
    """

    num_threads = V.Checked(V.resolve_threads)  # checked on every assignment

    def __init__(self, metric="dot", *, num_threads=None):
        self.metric = V.check_metric(metric)
        self.num_threads = num_threads
        self._index = None

    @property
    def is_trained(self):
        return self._index is not None

    def train(self, X):
        """Fix the dimension from X (nothing to learn). Returns self."""
        X = V.as_float_matrix(X, "X", nonzero_rows=self.metric == "cosine")
        self._index = _native.ExactIndex(self.metric, X.shape[1])
        return self

    def add(self, X, ids=None):
        """Add vectors with optional int64 ids. Returns self."""
        X = V.as_float_matrix(X, "X", d=self.d, nonzero_rows=self.metric == "cosine")
        ids = V.as_ids(ids, X.shape[0])
        if self._index is None:
            self._index = _native.ExactIndex(self.metric, X.shape[1])
        self._index.add(X, ids)
        return self

    def fit(self, X, ids=None):
        """Index exactly X (replacing any content). Returns self."""
        X = V.as_float_matrix(X, "X", nonzero_rows=self.metric == "cosine")
        ids = V.as_ids(ids, X.shape[0])
        self._index = _native.ExactIndex(self.metric, X.shape[1])
        self._index.add(X, ids)
        return self

    def remove(self, ids):
        if self._index is None:
            return 0
        return int(self._index.remove(V.as_ids(ids, None, unique=False, reject_padding=False)))

    def reset(self):
        if self._index is not None:
            self._index.reset()

    def get_ids(self):
        return np.zeros(0, np.int64) if self._index is None else self._index.all_ids()

    def search(self, Q, k=10, num_threads=None, **_ignored_budget):
        """Exact top-k; same output contract as ``AVQIndex.search`` (budget arguments ignored)."""
        if self._index is None:
            raise ValueError("the index is empty: call fit(X) or add(X) first")
        k = V.check_k(k)
        Q = V.as_float_matrix(Q, "Q", d=self._index.d, allow_1d=True, nonzero_rows=self.metric == "cosine")
        V.check_result_size(Q.shape[0], k)
        nt = self.num_threads if num_threads is None else V.resolve_threads(num_threads)
        return self._index.search(Q, k, nt)

    def save(self, path):
        if self._index is None:
            raise ValueError("nothing to save: the index is empty")
        self._index.save(os.fspath(path))

    @classmethod
    def load(cls, path):
        obj = cls.__new__(cls)
        obj._index = _native.ExactIndex.load(os.fspath(path))
        obj.metric = obj._index.metric
        obj.num_threads = V.resolve_threads(None)
        return obj

    def to_bytes(self):
        if self._index is None:
            raise ValueError("nothing to serialize: the index is empty")
        return self._index.serialize()

    @classmethod
    def from_bytes(cls, data):
        obj = cls.__new__(cls)
        obj._index = _native.ExactIndex.deserialize(V.as_bytes(data))
        obj.metric = obj._index.metric
        obj.num_threads = V.resolve_threads(None)
        return obj

    def __getstate__(self):
        return {
            "metric": self.metric,
            "num_threads": self.num_threads,
            "index": None if self._index is None else self._index.serialize(),
        }

    def __setstate__(self, state):
        self.metric = state["metric"]
        self.num_threads = state["num_threads"]
        self._index = None if state["index"] is None else _native.ExactIndex.deserialize(state["index"])
