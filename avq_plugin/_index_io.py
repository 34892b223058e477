"""Persistence of :class:`avq_plugin.AVQIndex`: files, bytes and pickling (a private part of the
index; uses ``_native`` to load). Version-1 files are completed with today's budget rule here.
"""

from __future__ import annotations

import math
import os
from typing import Any, TypeVar

from . import _native, _params
from . import _validation as V
from ._index_base import _IndexBase

PathLike = str | os.PathLike[str]
_I = TypeVar("_I", bound="_IndexIO")


class _IndexIO(_IndexBase):
    """save / load, to_bytes / from_bytes and pickling of an AVQIndex."""

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
    def _from_native(cls: type[_I], native: _native.Index) -> _I:
        p = native.params()
        if native.is_trained and not (p.default_leaves_to_search and p.default_reorder_k):
            # A version-1 file: 0 meant "chosen when searching"; complete it with today's rule
            # (saving the index again writes the concrete values, format version 2).
            budget = _params.resolve_budget(native.ntotal, p.d, num_leaves=native.num_leaves, spilled=p.spill != "none")
            native.set_default_search_params(
                p.default_leaves_to_search or budget.leaves_to_search,
                p.default_reorder_k or budget.reorder_k,
                p.default_leaf_margin,
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
        # None: the budget stored in the file (default_search_params), as training resolved it.
        obj.leaves_to_search = None
        obj.reorder_k = None
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

    def save(self, path: PathLike) -> None:
        """Write the index to one file, atomically (temporary file + rename)."""
        self._require_index().save(os.fspath(path))

    @classmethod
    def load(cls: type[_I], path: PathLike, mmap: bool = False) -> _I:
        """Read an index written by ``save``.

        With ``mmap=True`` the codes and reorder vectors stay in the file (mapped read-only,
        their checksums are not verified) until the index is modified.
        Raises ValueError on a truncated, corrupted or newer-format file.
        """
        return cls._from_native(_native.Index.load(os.fspath(path), bool(mmap)))

    def to_bytes(self) -> bytes:
        """The index serialized as bytes (the same format as ``save``)."""
        return self._require_index().serialize()

    @classmethod
    def from_bytes(cls: type[_I], data: bytes | bytearray | memoryview) -> _I:
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
