"""ExactIndex: exact brute-force search with the AVQIndex API (the recall oracle)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _native
from . import _validation as V
from ._wrapper import _NativeWrapper

__all__ = ["ExactIndex"]


class ExactIndex(_NativeWrapper[_native.ExactIndex]):
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

    def __init__(self, metric: str = "dot", *, num_threads: int | None = None) -> None:
        self.metric = V.check_metric(metric)
        self.num_threads = num_threads
        self._index = None

    @property
    def is_trained(self) -> bool:
        return self._index is not None

    def train(self, X: npt.ArrayLike) -> ExactIndex:
        """Fix the dimension from X (nothing to learn). Returns self."""
        X = V.as_float_matrix(X, "X", nonzero_rows=self.metric == "cosine")
        self._index = _native.ExactIndex(self.metric, X.shape[1])
        return self

    def add(self, X: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> ExactIndex:
        """Add vectors with optional int64 ids. Returns self."""
        X = V.as_float_matrix(X, "X", d=self.d, nonzero_rows=self.metric == "cosine")
        ids = V.as_ids(ids, X.shape[0])
        if self._index is None:
            self._index = _native.ExactIndex(self.metric, X.shape[1])
        self._index.add(X, ids)
        return self

    def fit(self, X: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> ExactIndex:
        """Index exactly X (replacing any content). Returns self."""
        X = V.as_float_matrix(X, "X", nonzero_rows=self.metric == "cosine")
        ids = V.as_ids(ids, X.shape[0])
        index = _native.ExactIndex(self.metric, X.shape[1])
        index.add(X, ids)
        self._index = index
        return self

    def remove(self, ids: npt.ArrayLike) -> int:
        if self._index is None:
            return 0
        return int(self._index.remove(V.as_ids(ids, None, unique=False, reject_padding=False)))

    def reset(self) -> None:
        if self._index is not None:
            self._index.reset()

    def get_ids(self) -> npt.NDArray[np.int64]:
        return np.zeros(0, np.int64) if self._index is None else self._index.all_ids()

    def search(
        self, Q: npt.ArrayLike, k: int = 10, num_threads: int | None = None, **_ignored_budget: Any
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Exact top-k; same output contract as ``AVQIndex.search`` (budget arguments ignored)."""
        if self._index is None:
            raise ValueError("the index is empty: call fit(X) or add(X) first")
        k = V.check_k(k)
        Q = V.as_float_matrix(Q, "Q", d=self._index.d, allow_1d=True, nonzero_rows=self.metric == "cosine")
        V.check_result_size(Q.shape[0], k)
        nt = self.num_threads if num_threads is None else V.resolve_threads(num_threads)
        return self._index.search(Q, k, nt)

    def save(self, path: str | os.PathLike[str]) -> None:
        if self._index is None:
            raise ValueError("nothing to save: the index is empty")
        self._index.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExactIndex:
        return cls._from_native(_native.ExactIndex.load(os.fspath(path)))

    @classmethod
    def _from_native(cls, native: _native.ExactIndex) -> ExactIndex:
        obj = cls.__new__(cls)
        obj._index = native
        obj.metric = native.metric
        obj.num_threads = V.resolve_threads(None)
        return obj

    def to_bytes(self) -> bytes:
        if self._index is None:
            raise ValueError("nothing to serialize: the index is empty")
        return self._index.serialize()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ExactIndex:
        return cls._from_native(_native.ExactIndex.deserialize(V.as_bytes(data)))

    def __getstate__(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "num_threads": self.num_threads,
            "index": None if self._index is None else self._index.serialize(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.metric = state["metric"]
        self.num_threads = state["num_threads"]
        self._index = None if state["index"] is None else _native.ExactIndex.deserialize(state["index"])
