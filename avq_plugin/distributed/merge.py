"""Merging per-shard top-k lists into the global top-k."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import _validation as V

Array = NDArray[Any]
#: One part of a routed search: (query rows, D, I).
Part = tuple[Array, Array, Array]

_FLT_MAX = float(np.finfo(np.float32).max)


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
    D = np.concatenate([np.asarray(d, np.float32) for d in D_parts], axis=1)
    I = np.concatenate([np.asarray(i, np.int64) for i in I_parts], axis=1)
    if D.shape != I.shape:
        raise ValueError(f"score and id arrays do not match: {D.shape} vs {I.shape}")
    pad = I < 0
    # Sort keys, ascending: the primary key puts the best score first and padding last.
    primary = (D if metric == "l2" else -D).astype(np.float64)
    primary[pad] = np.inf
    secondary = np.where(pad, np.iinfo(np.int64).max, I)
    order = np.lexsort((secondary, primary), axis=1)
    # An id returned by several shards (a vector spilled to leaves of two shards, SOAR) counts
    # once, at its best score: its later copies become padding (and so move last).
    copies = _later_copies(np.take_along_axis(I, order, axis=1))
    order = np.take_along_axis(order, np.argsort(copies, axis=1, kind="stable"), axis=1)[:, :k]
    Dm = np.take_along_axis(D, order, axis=1)
    Im = np.take_along_axis(I, order, axis=1)
    Im[np.arange(Im.shape[1])[None, :] >= (D.shape[1] - copies.sum(axis=1))[:, None]] = -1  # copies
    if Dm.shape[1] < k:  # fewer candidates than k in total
        extra = k - Dm.shape[1]
        Dm = np.concatenate([Dm, np.zeros((Dm.shape[0], extra), np.float32)], axis=1)
        Im = np.concatenate([Im, np.full((Im.shape[0], extra), -1, np.int64)], axis=1)
    padded = Im < 0
    Dm[padded] = _FLT_MAX if metric == "l2" else -_FLT_MAX
    Im[padded] = -1
    return np.ascontiguousarray(Dm, np.float32), np.ascontiguousarray(Im, np.int64)


def _later_copies(I: Array) -> Array:
    """(nq, w) bool: entries whose id (not padding) appears earlier in the same row."""
    o = np.argsort(I, axis=1, kind="stable")  # equal ids keep their order: the first is the best
    s = np.take_along_axis(I, o, axis=1)
    later = np.zeros(I.shape, bool)
    later[:, 1:] = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    out = np.zeros(I.shape, bool)
    np.put_along_axis(out, o, later, axis=1)
    return out


# Scratch bound of merge_rows: queries answered by several parts are merged in blocks of rows
# holding at most this many entries (rows x total width of the parts).
_MERGE_BLOCK_ENTRIES = 1 << 20


def _merge_multi(D: Array, I: Array, k: int, parts: Sequence[Part], multi: Array, n_multi: int, metric: str) -> None:
    """Rows answered by several parts: each block of rows becomes one (rows, width) matrix of all
    their parts' entries (padding where a part does not answer a row), sorted per row by (score,
    id) as ``merge_topk`` does; an id in several parts keeps its best entry."""
    pad_score = _FLT_MAX if metric == "l2" else -_FLT_MAX
    slot = np.full(len(multi), -1, np.int64)
    slot[multi] = np.arange(n_multi)
    cols = []  # per part: its column offset and its multi-row entries sorted by slot
    W = 0
    for rows, d, i in parts:
        d = np.asarray(d, np.float32)[:, :k]
        i = np.asarray(i, np.int64)[:, :k]
        sel = np.flatnonzero(multi[rows])
        order = sel[np.argsort(slot[rows[sel]], kind="stable")]
        cols.append((W, slot[rows[order]], d[order], i[order]))
        W += d.shape[1]
    block = max(1, _MERGE_BLOCK_ENTRIES // max(W, 1))
    multi_rows = np.flatnonzero(multi)
    for a in range(0, n_multi, block):
        b = min(n_multi, a + block)
        Db = np.full((b - a, W), pad_score, np.float32)
        Ib = np.full((b - a, W), -1, np.int64)
        for c0, sl, d, i in cols:
            lo, hi = np.searchsorted(sl, [a, b])
            Db[sl[lo:hi] - a, c0 : c0 + d.shape[1]] = d[lo:hi]
            Ib[sl[lo:hi] - a, c0 : c0 + d.shape[1]] = i[lo:hi]
        pad = Ib < 0
        primary = (Db if metric == "l2" else -Db).astype(np.float64)  # smaller is better
        primary[pad] = np.inf
        order = np.lexsort((np.where(pad, np.iinfo(np.int64).max, Ib), primary), axis=1)
        # An id from several parts (SOAR spilling) counts once, at its best score.
        copies = _later_copies(np.take_along_axis(Ib, order, axis=1))
        order = np.take_along_axis(order, np.argsort(copies, axis=1, kind="stable"), axis=1)[:, :k]
        Dm = np.take_along_axis(Db, order, axis=1)
        Im = np.take_along_axis(Ib, order, axis=1)
        gone = (np.arange(Im.shape[1])[None, :] >= (W - copies.sum(axis=1))[:, None]) | (Im < 0)
        Im[gone] = -1
        Dm[gone] = pad_score
        D[multi_rows[a:b], : Im.shape[1]] = Dm
        I[multi_rows[a:b], : Im.shape[1]] = Im


def merge_rows(nq: int, k: int, parts: Sequence[Part], metric: str) -> tuple[Array, Array]:
    """Merge top-k lists that cover *some* of the queries each (routed search).

    ``parts``: sequence of (rows, D, I): the query numbers a part answers (int, unique within
    the part) and their top-k lists (best first, -1 padding). A query answered by one part
    keeps that part's list as it is; a query answered by several is merged as ``merge_topk``
    does (score, then smaller id; padding last; an id in several parts counts once, at its best
    score). Queries no part answers are all padding.
    """
    metric = V.check_metric(metric)
    pad_score = _FLT_MAX if metric == "l2" else -_FLT_MAX
    D = np.full((nq, k), pad_score, np.float32)
    I = np.full((nq, k), -1, np.int64)
    if not parts:
        return D, I
    hits = np.zeros(nq, np.int32)
    for rows, _, _ in parts:
        hits[rows] += 1
    multi = hits > 1
    n_multi = int(multi.sum())
    for rows, d, i in parts:
        d = np.asarray(d, np.float32)[:, :k]
        i = np.asarray(i, np.int64)[:, :k]
        one = ~multi[rows]
        w = d.shape[1]
        D[rows[one], :w] = d[one]
        I[rows[one], :w] = i[one]
    if n_multi:
        _merge_multi(D, I, k, parts, multi, n_multi, metric)
    return D, I
