"""Merging per-shard top-k lists into the global top-k (the per-query merge is native,
``native/src/merge.cpp``: this module checks and converts the inputs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import _validation as V
from .._index_protected import merge_topk_rows

Array = NDArray[Any]
#: One part of a routed search: (query rows, D, I).
Part = tuple[Array, Array, Array]


def merge_topk(D_parts: Sequence[ArrayLike], I_parts: Sequence[ArrayLike], k: int, metric: str) -> tuple[Array, Array]:
    """Merge per-shard top-k results into the global top-k.

    Parameters
    ----------
    D_parts, I_parts : sequences of arrays (nq, k_s)
        Each shard's scores (float32) and global ids (int64, -1 for padding), as returned by
        ``AVQIndex.search``.
    k : int
        Results per query.
    metric : {"dot", "cosine", "l2"}
        Larger scores are better for dot and cosine, smaller distances for l2.

    Returns
    -------
    D : float32 (nq, k)
    I : int64 (nq, k)
        Best first; ties in score are broken by the smaller id; an id returned by several
        parts (a vector spilled to leaves of two shards) counts once, at its best score;
        padding (id -1, score -FLT_MAX or +FLT_MAX for l2) comes last, whatever its score.

    Notes
    -----
    A single ``AVQIndex`` orders equal scores by (leaf, position in the leaf). A shard adds its
    rows in id order, so within one leaf position order is id order, and merging by
    (score, id) reproduces the single index exactly unless two *different leaves* give exactly
    equal float32 scores at the boundary. Under that proviso the merge is identical to one
    index over all the data with the same quantizer whenever the shards' candidate sets are
    identical to the restriction of the single index's: with ``reorder="none"`` (every shard
    keeps its k best quantized scores, and the global k best are among them), and with
    reordering when every shard's re-ranking budget covers its candidates in the probed leaves.
    """
    metric = V.check_metric(metric)
    if len(D_parts) != len(I_parts) or not len(D_parts):
        raise ValueError("merge_topk needs as many score arrays as id arrays, at least one")
    Ds = [np.ascontiguousarray(d, np.float32) for d in D_parts]
    Is = [np.ascontiguousarray(i, np.int64) for i in I_parts]
    for d, i in zip(Ds, Is):
        if d.ndim != 2 or d.shape != i.shape or d.shape[0] != Ds[0].shape[0]:
            raise ValueError(f"score and id arrays do not match: {d.shape} vs {i.shape} ({Ds[0].shape[0]} queries)")
    nq = Ds[0].shape[0]
    rows = np.arange(nq, dtype=np.int64)
    k = V.check_k(k)
    return merge_topk_rows(nq, k, [rows] * len(Ds), Ds, Is, metric == "l2", True)


def merge_rows(nq: int, k: int, parts: Sequence[Part], metric: str) -> tuple[Array, Array]:
    """Merge top-k lists that cover *some* of the queries each (routed search).

    ``parts``: sequence of (rows, D, I): the query numbers a part answers (int, unique within
    the part) and their top-k lists (best first, -1 padding). A query answered by one part
    keeps that part's list as it is; a query answered by several is merged as ``merge_topk``
    does (score, then smaller id; padding last; an id in several parts counts once, at its best
    score). Queries no part answers are all padding.
    """
    metric = V.check_metric(metric)
    k = V.check_k(k)
    R, Ds, Is = [], [], []
    for rows, d, i in parts:
        r = np.ascontiguousarray(rows, np.int64)
        d = np.ascontiguousarray(d, np.float32)
        i = np.ascontiguousarray(i, np.int64)
        if r.ndim != 1 or d.ndim != 2 or d.shape != i.shape or d.shape[0] != r.shape[0]:
            raise ValueError(f"a part's rows {r.shape}, scores {d.shape} and ids {i.shape} do not match")
        R.append(r)
        Ds.append(d)
        Is.append(i)
    return merge_topk_rows(int(nq), k, R, Ds, Is, metric == "l2", False)
