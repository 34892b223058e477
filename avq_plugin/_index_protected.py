"""The protected methods of :class:`avq_plugin.AVQIndex` that the package's other front-ends use
(a private part of the index): leaf-routed search for the sharded index (avq_plugin.distributed),
quantizer and code import / export for the Faiss adapter (avq_plugin.faiss), and the stored
vectors and layout copies for tuning (avq_plugin.tuning). They give those front-ends what they
need without touching the native object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import _native, _params
from . import _validation as V
from ._index_base import _IndexBase
from ._progress import ProgressCallback

_P = TypeVar("_P", bound="_IndexProtected")


def merge_topk_rows(
    nq: int,
    k: int,
    rows: list[npt.NDArray[np.int64]],
    D: list[npt.NDArray[np.float32]],
    I: list[npt.NDArray[np.int64]],
    l2: bool,
    sort_single: bool,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The native merge of shards' top-k lists (``native/src/merge.h``) for avq_plugin.distributed.merge,
    which checks and converts the inputs."""
    return _native.merge_topk_rows(nq, k, rows, D, I, l2, sort_single)


def margin_reorder_k(reorder_k: int, nprobe: npt.NDArray[np.int64], asked: int, ntotal: int) -> npt.NDArray[np.int64]:
    """search()'s leaf_margin re-ranking budget of queries probing ``nprobe`` leaves where
    ``asked`` were asked (``native/src/index.h``), for the routed search."""
    return _native.margin_reorder_k(reorder_k, nprobe, asked, ntotal)


def route_queries(
    P: npt.NDArray[np.int32],
    leaf_to_shard: npt.NDArray[np.int32],
    leaf_sizes: npt.NDArray[np.int64],
    n_shards: int,
    reorder_k: npt.NDArray[np.int64],
    compact: bool = False,
) -> tuple[dict[int, tuple[Any, ...]], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """The native routing of a leaf-routed search (``native/src/routing.h``) for
    avq_plugin.distributed.placement, which converts the inputs."""
    return _native.route_queries(P, leaf_to_shard, leaf_sizes, n_shards, reorder_k, compact)


def search_leaves_multi(
    shards: Sequence[Any],
    Q: npt.ArrayLike,
    k: int,
    jobs: Sequence[tuple[Any, ...]],
    num_threads: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """``_search_leaves`` of several shards (AVQIndex objects with one quantizer) at once.

    jobs: (position in ``shards``, query rows int (n,), leaves int (n, w), reorder_k int (n,)[,
    group[, offsets]]); with offsets (n + 1,) in every job, leaves is a flat list, row r's at
    ``leaves[offsets[r]:offsets[r + 1]]`` (1 to L of them, no padding) instead of a matrix padded
    with -1. Each query is prepared and its lookup table built once for all the shards it visits.
    A query's jobs of one group are searched as one index holding those shards would be: one
    top-N over all their leaves and one re-ranking budget, the sum of the jobs' reorder_k (their
    leaves must be disjoint, the shards without SOAR copies). Without a group each shard is its
    own group, whose answer is that shard's ``_search_leaves``. The groups' lists are merged per
    query as ``avq_plugin.distributed.merge_rows`` does. Returns D, I (len(Q), k); queries no
    job asks for are padding.
    """
    if not shards:
        raise ValueError("no shards to search")
    natives = [x._require_trained() for x in shards]
    first = shards[0]
    A = V.as_float_matrix(Q, "Q", d=first.d, allow_1d=True, nonzero_rows=first.metric == "cosine")
    k = V.check_k(k)
    V.check_result_size(A.shape[0], k)
    pos, rows, leaves, budgets, groups, offsets = [], [], [], [], [], []
    flat = bool(jobs) and len(jobs[0]) > 5
    for job in jobs:
        if (len(job) > 5) != flat:
            raise ValueError("either every job gives leaf offsets or none does")
        j, r, lv, rk = job[:4]
        groups.append(int(job[4]) if len(job) > 4 else int(j))
        lv = np.asarray(lv)
        if (
            lv.ndim != (1 if flat else 2)
            or not np.issubdtype(lv.dtype, np.integer)
            or (lv.size and (lv.min() < -1 or lv.max() > 2**31 - 1))
        ):
            what = "a flat integer array of leaf numbers" if flat else "an integer array (n, w) of leaf numbers or -1"
            raise ValueError(f"leaves must be {what}, got {lv.shape}")
        if flat:
            offsets.append(np.ascontiguousarray(job[5], np.int64))
        pos.append(int(j))
        rows.append(np.ascontiguousarray(r, np.int64))
        leaves.append(np.ascontiguousarray(lv, np.int32))
        budgets.append(np.ascontiguousarray(rk, np.int64))
    return _native.search_leaves_multi(
        natives, A, k, pos, rows, leaves, budgets, V.resolve_threads(num_threads), groups, offsets
    )


class _IndexProtected(_IndexBase):
    """Routed search, quantizer import/export and stored vectors of an AVQIndex."""

    # ------------------------------------------------------------------ routed search
    # The building blocks of leaf-routed sharding, where a router chooses the leaves once and
    # each shard scans only those it holds.
    def _probe(
        self,
        Q: npt.ArrayLike,
        leaves_to_search: int,
        num_threads: int | None = None,
        leaf_margin: float | None = None,
    ) -> npt.NDArray[np.int32]:
        """The leaves ``search`` probes for each query, best first: int32 (nq, min(lts, L)); with
        a ``leaf_margin`` (not None) those of ``search(..., leaf_margin=...)``, as wide as the widest
        query's list and padded with -1."""
        index = self._require_trained()
        A = V.as_float_matrix(Q, "Q", d=self.d, allow_1d=True, nonzero_rows=self.metric == "cosine")
        lts = V.check_int("leaves_to_search", leaves_to_search, minimum=1)
        nt = self.num_threads if num_threads is None else V.resolve_threads(num_threads)
        if leaf_margin is None:
            return index.probe(A, lts, nt)
        return index.probe_margin(A, lts, V.check_leaf_margin(leaf_margin), nt)

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

    # ------------------------------------------------------------------ Faiss adapter and tuning
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

    def _init_from_quantizer(self, d: int, centres: npt.ArrayLike, codebooks: npt.ArrayLike) -> None:
        """Start an empty index from given centres (L, d) and codebooks (16 d) instead of training.

        ``anisotropic_threshold`` must be None or a number (new vectors are encoded with it).
        """
        T = self.anisotropic_threshold
        if T == "auto":
            raise ValueError("anisotropic_threshold='auto' needs training data: give a number or None")
        budget = self._budget_for(None, d, num_leaves=int(np.shape(centres)[0]), spill=False)
        native = self._new_native(d, math.nan if T is None else float(T), budget, spill=False)
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
        vectors are those given to ``add`` (normalised under cosine), copied by the native core
        (only the rows asked for).
        """
        index = self._require_trained()
        if self.reorder != "float32":
            raise ValueError(f"an index with reorder={self.reorder!r} keeps no float32 vectors")
        ids = np.sort(index.all_ids())[rows]
        return ids, index.get_vectors(ids)

    # ------------------------------------------------------------------ layout tuning
    def _layout_native(self, layout: _params.Encoding) -> _native.Index:
        """An untrained native index with this trained index's record but another code layout.

        Everything else is copied from the record (leaves, threshold or eta, iterations, training
        sample size, seed, reorder, SOAR lambda, the L2 scan), so a copy trained on the data this
        index was trained on differs from it only in ``layout``. The default budget is the rule's
        for the new layout (``tune`` replaces it)."""
        index = self._require_trained()
        src = index.params()
        p = _native.IndexParams()
        for name in dir(src):
            if not name.startswith("_"):
                setattr(p, name, getattr(src, name))
        p.num_leaves = index.num_leaves
        p.dims_per_block = int(layout.dims_per_block)
        p.spill = layout.spill or "none"
        budget = _params.resolve_budget(None, index.d, num_leaves=index.num_leaves, spilled=layout.spill is not None)
        p.default_leaves_to_search, p.default_reorder_k = budget.leaves_to_search, budget.reorder_k
        p.default_leaf_margin = -1.0  # none: the copy gets its own budget search
        try:
            return _native.Index(p)
        except ValueError as e:
            raise ValueError(
                f"layouts: dims_per_block={layout.dims_per_block}, spill={layout.spill!r} is not a valid "
                f"layout for this index (d={index.d}): {e}"
            ) from None

    def _check_layout(self, layout: _params.Encoding) -> None:
        """ValueError (naming ``layouts``) when the native core rejects ``layout`` for this index."""
        self._layout_native(layout)

    def _layout_copy(
        self: _P,
        layout: _params.Encoding,
        X: npt.NDArray[np.float32],
        ids: npt.NDArray[np.int64],
        callback: ProgressCallback | None,
    ) -> _P:
        """A new index like this one (same parameters, a copy of the record) with another code
        ``layout``, trained on validated X and holding X with ``ids``; this index is unchanged."""
        native = self._layout_native(layout)
        native.train(X, self.num_threads, callback)
        native.add(X, ids, self.num_threads, callback)
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)  # the Python parameters, as they are
        twin._index = native
        return twin

    def _adopt_layout(self, other: _IndexProtected) -> None:
        """Take over the trained native index of ``other`` (a ``_layout_copy`` of this index); the
        constructor parameters stay as they are."""
        self._index = other._require_trained()
