"""What every benchmarked system implements (:class:`Runner`), and helpers the runners share."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .._common import INSTALL_HINT, SystemUnavailable
from ..progress import Bars

# --------------------------------------------------------------------------- systems


def _import_peer(name):
    """Imports a peer library, or raises SystemUnavailable saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SystemUnavailable(f"{name} not installed: skipped ({INSTALL_HINT})") from exc


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms == 0, 1, norms), dtype=np.float32)


class Runner:
    """One benchmarked system: build an index, then answer queries.

    Subclasses implement :meth:`build`, :meth:`single_fn` and :meth:`batch_fn`.
    The callables those return are what is timed, so they should contain
    nothing but the library call a user would write.
    """

    #: Human-readable library version.
    version: str = "?"
    #: How :meth:`own_memory` measures, for the report.
    own_memory_kind: str = ""
    #: Short description of the built index with "sqrt" etc. resolved; set by :meth:`build`.
    resolved: str = ""
    #: Threads for building and searching (``--threads``).
    threads: int = 1
    #: Progress bars (a :class:`Bars`); set by :func:`run_benchmark`.
    bars: Bars | None = None

    def _bar(self, desc: str, total: int, unit: str = "it"):
        return (self.bars or Bars(False)).bar(desc, total, unit)

    def build(self, train: np.ndarray, metric: str, args: dict) -> None:
        """Build the index on ``train`` (float32) for ``metric`` with config ``args``."""
        raise NotImplementedError

    def single_fn(self, k: int, qa: dict) -> Callable[[np.ndarray], Any]:
        """A callable ``f(q)`` answering one 1-D query with query args ``qa``."""
        raise NotImplementedError

    def batch_fn(self, k: int, qa: dict) -> Callable[[np.ndarray], Any]:
        """A callable ``f(Q)`` answering all queries in one call."""
        raise NotImplementedError

    def ids_single(self, result: Any) -> np.ndarray:
        """Row ids from one :meth:`single_fn` result."""
        return np.asarray(result).reshape(-1)

    def ids_batch(self, result: Any) -> np.ndarray:
        """Row ids, shape (nq, k), from a :meth:`batch_fn` result."""
        return np.asarray(result)

    def budget(self, qa: dict, k: int) -> tuple | None:
        """``(partitions probed, candidates re-ranked)`` for matched-budget tables."""
        return None

    def own_memory(self) -> int | None:
        """The index's own size figure in bytes, if the library offers one."""
        return None

    def close(self) -> None:
        """Drop the index."""
        self.__dict__.pop("index", None)


def _add_in_chunks(add, data: np.ndarray, bar, pass_range: bool = False, chunks: int = 50) -> None:
    """Call ``add`` on about ``chunks`` slices of ``data``, advancing the progress ``bar``."""
    n = data.shape[0]
    step = max(1000, -(-n // chunks))
    try:
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            if pass_range:
                add(data[lo:hi], lo, hi)
            else:
                add(data[lo:hi])
            bar.update(hi - lo)
    finally:
        bar.close()


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "?"
