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


# Up to this many entries per query (parts x k), merge_rows ranks every entry against every other
# one (O(width^2) per query, vectorised) instead of sorting.
_DENSE_MERGE_MAX = 48


def _merge_dense(D: Array, I: Array, k: int, parts: Sequence[Part], multi: Array, n_multi: int, metric: str) -> None:
    """Rows of several parts: rank each entry by the number of entries better than it."""
    pad_score = _FLT_MAX if metric == "l2" else -_FLT_MAX
    slot = np.full(len(multi), -1, np.int64)
    slot[multi] = np.arange(n_multi)
    cols = []
    for rows, d, i in parts:
        d = np.asarray(d, np.float32)[:, :k]
        i = np.asarray(i, np.int64)[:, :k]
        Db = np.full((n_multi, d.shape[1]), pad_score, np.float32)
        Ib = np.full((n_multi, d.shape[1]), -1, np.int64)
        sel = multi[rows]
        Db[slot[rows[sel]]] = d[sel]
        Ib[slot[rows[sel]]] = i[sel]
        cols.append((Db, Ib))
    Dm = np.concatenate([c[0] for c in cols], axis=1)
    Im = np.concatenate([c[1] for c in cols], axis=1)
    pad = Im < 0
    s = (Dm if metric == "l2" else -Dm).astype(np.float64)  # smaller is better
    s[pad] = np.inf
    ids = np.where(pad, np.iinfo(np.int64).max, Im)
    # better[q, a, b]: entry b ranks before entry a (smaller key, then smaller id; padding last
    # and, among padding, by column so that every rank is distinct).
    col = np.arange(Dm.shape[1])

    def ranks() -> Array:
        tie = (s[:, None, :] == s[:, :, None]) & (
            (ids[:, None, :] < ids[:, :, None]) | ((ids[:, None, :] == ids[:, :, None]) & (col[None, :] < col[:, None]))
        )
        return (s[:, None, :] < s[:, :, None]) | tie

    better = ranks()
    # An id from several parts (SOAR spilling) counts once, at its best score: later copies pad.
    copy = ((ids[:, None, :] == ids[:, :, None]) & better).any(axis=2) & ~pad
    if copy.any():
        pad = pad | copy
        s[copy] = np.inf
        ids[copy] = np.iinfo(np.int64).max
        better = ranks()
    rank = better.sum(axis=2)
    q, c = np.nonzero(rank < k)
    rows = np.flatnonzero(multi)[q]
    I[rows, rank[q, c]] = np.where(pad[q, c], -1, Im[q, c])
    D[rows, rank[q, c]] = np.where(pad[q, c], pad_score, Dm[q, c])


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
    dense = sum(min(k, np.asarray(p[1]).shape[1]) for p in parts) <= _DENSE_MERGE_MAX
    sub = []
    for rows, d, i in parts:
        d = np.asarray(d, np.float32)[:, :k]
        i = np.asarray(i, np.int64)[:, :k]
        one = ~multi[rows]
        w = d.shape[1]
        D[rows[one], :w] = d[one]
        I[rows[one], :w] = i[one]
        if not one.all() and not dense:
            sel = ~one
            sub.append((np.repeat(rows[sel], w), d[sel].ravel(), i[sel].ravel()))
    if n_multi and dense:
        _merge_dense(D, I, k, parts, multi, n_multi, metric)
    elif sub:
        R = np.concatenate([s[0] for s in sub])
        Df = np.concatenate([s[1] for s in sub])
        If = np.concatenate([s[2] for s in sub])
        real = If >= 0
        R, Df, If = R[real], Df[real], If[real]
        primary = Df if metric == "l2" else -Df
        order = np.lexsort((If, primary, R))
        R, Df, If = R[order], Df[order], If[order]
        # An id from several parts (SOAR spilling) counts once, at its best (first) place.
        by_id = np.lexsort((np.arange(len(R)), If, R))
        copy = np.zeros(len(R), bool)
        copy[by_id[1:]] = (R[by_id[1:]] == R[by_id[:-1]]) & (If[by_id[1:]] == If[by_id[:-1]])
        R, Df, If = R[~copy], Df[~copy], If[~copy]
        first = np.searchsorted(R, R, side="left")
        pos = np.arange(len(R)) - first
        keep = pos < k
        D[R[keep], pos[keep]] = Df[keep]
        I[R[keep], pos[keep]] = If[keep]
    return D, I
