"""Auto-tuning of the search budget of an AVQIndex to a target recall.

:func:`tune` measures and returns a :class:`TuneReport`; :meth:`avq_plugin.AVQIndex.tune` calls it
and makes the chosen budget the index's default. This module imports no index module at import
time (the index is an argument), so there is no import cycle with ``index.py``.

How it works, in short: the recall of a search grows with ``leaves_to_search`` (L) for a fixed
``reorder_k`` (R), and the smallest L reaching a recall goal shrinks as R grows. For each R of a
small geometric grid (k, 1.5k, 2k, 3k, ... up to 64k), an exponential-then-binary search finds
the smallest L whose recall on the tuning queries reaches the goal. Each such (L, R) pair is a
candidate; the candidates are timed (one thread, all tuning queries in one call) and the fastest
wins. The grid over R stops early once a larger R no longer lowers L (it would only cost more).

Recall is measured per query as |returned ids among the true k nearest| / k (ties broken by id),
and the goal is ``target_recall + margin`` where the default margin is two standard errors of the
mean recall (0.005 to 0.01 with 1000 queries): held-out points sit in the data the partition and
codebooks were trained on, which makes them slightly easier than fresh queries, and the margin
also covers the sampling noise, so fresh queries from the same distribution land at or just
above the target (GloVe-190k, 10,000 fresh queries, targets 0.8/0.9/0.95/0.99: 0.810, 0.910,
0.956, 0.993).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _validation as V
from .exact import ExactIndex

if TYPE_CHECKING:
    from .index import AVQIndex

#: reorder_k candidates, as multiples of k.
REORDER_MULTIPLIERS = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: Default number of tuning queries.
DEFAULT_NUM_QUERIES = 1000
#: Minimum wall time of one QPS timing (repeated passes over the tuning queries).
_MIN_TIMING_S = 0.05


@dataclass(frozen=True)
class TuneReport:
    """What ``AVQIndex.tune`` chose and measured.

    Attributes
    ----------
    leaves_to_search : int
        Chosen number of leaves probed per query (now the index's default).
    reorder_k : int or None
        Chosen number of candidates re-scored exactly (now the index's default); None when
        the index has ``reorder="none"``.
    recall : float
        Mean recall@k of the chosen setting on the tuning queries.
    qps : float
        Queries per second of the chosen setting on this machine: one thread, all tuning
        queries in one ``search`` call (best of three timings).
    target_recall : float
        The requested target.
    goal : float
        The recall the tuner aimed for on the tuning queries (target plus the safety margin,
        at most 1).
    k : int
        Neighbours per query the recall refers to.
    num_queries : int
        Number of tuning queries.
    source : {"held-out", "queries"}
        ``"held-out"``: indexed points used as queries, each excluded from its own ground truth
        and results; ``"queries"``: the queries given to ``tune``.
    reached : bool
        Whether ``recall`` reaches ``target_recall``. When False, no setting tried reached it
        (or the time budget ran out first): the largest budget tried was chosen and a
        UserWarning was issued.
    seconds : float
        Wall time spent tuning.
    evaluated : list of tuple
        Every setting measured, as ``(leaves_to_search, reorder_k, recall)``.
    """

    leaves_to_search: int
    reorder_k: int | None
    recall: float
    qps: float
    target_recall: float
    goal: float
    k: int
    num_queries: int
    source: str
    reached: bool
    seconds: float
    evaluated: list[tuple[int, int | None, float]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict (JSON-serialisable)."""
        return {
            "leaves_to_search": self.leaves_to_search,
            "reorder_k": self.reorder_k,
            "recall": self.recall,
            "qps": self.qps,
            "target_recall": self.target_recall,
            "goal": self.goal,
            "k": self.k,
            "num_queries": self.num_queries,
            "source": self.source,
            "reached": self.reached,
            "seconds": self.seconds,
            "evaluated": [list(e) for e in self.evaluated],
        }


def _check_target(target_recall: object) -> float:
    if isinstance(target_recall, (bool, np.bool_)) or not isinstance(
        target_recall, (int, float, np.floating, np.integer)
    ):
        raise TypeError(f"target_recall must be a number in (0, 1], got {type(target_recall).__name__}")
    t = float(target_recall)
    if not (0.0 < t <= 1.0):  # also rejects NaN
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    return t


def _recall_rows(I: npt.NDArray[np.int64], gt: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Per-query recall: fraction of each gt row (nq, k) found in the matching I row."""
    hits = (I[:, :, None] == gt[:, None, :]).any(axis=1)
    return hits.mean(axis=1)


def _drop_self(I: npt.NDArray[np.int64], self_ids: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
    """Remove each query's own id from its row of I (nq, k+1) and keep the first k columns."""
    keep = I != self_ids[:, None]
    # Rows without the query's id (not found, or beyond k+1) drop their last column instead.
    missing = keep.all(axis=1)
    keep[missing, -1] = False
    return I[keep].reshape(I.shape[0], k)


def tune(
    index: AVQIndex,
    target_recall: float = 0.95,
    k: int = 10,
    queries: npt.ArrayLike | None = None,
    time_budget_s: float | None = None,
    *,
    X: npt.ArrayLike | None = None,
    ids: npt.ArrayLike | None = None,
    ground_truth: npt.ArrayLike | None = None,
    num_queries: int | None = None,
    reorder_k: int | None = None,
    margin: float | None = None,
    seed: int | None = None,
    stacklevel: int = 2,
) -> TuneReport:
    """Measure the fastest search budget of a trained ``index`` reaching ``target_recall``.

    The arguments are those of :meth:`avq_plugin.AVQIndex.tune` (see its docstring), which
    calls this function and applies the report; this function changes nothing on the index.
    ``stacklevel`` is that of the warnings (the caller of this function by default).

    Returns
    -------
    TuneReport
    """
    t_start = time.perf_counter()
    if not index.is_trained:
        raise ValueError("the index is not trained yet: call fit(X) or train(X) first")
    target = _check_target(target_recall)
    k = V.check_int("k", k, minimum=1)
    ntotal = index.ntotal
    if ntotal == 0:
        raise ValueError("the index is empty: add vectors before tuning")
    if time_budget_s is not None:
        time_budget_s = V.check_float("time_budget_s", time_budget_s, exclusive_minimum=0.0)
    if margin is not None:
        margin = V.check_float("margin", margin, minimum=0.0)
    num_queries = V.check_int("num_queries", num_queries, minimum=1, allow_none=True)
    fixed_reorder = V.check_int("reorder_k", reorder_k, minimum=1, allow_none=True)
    seed = index.seed if seed is None else V.check_int("seed", seed, minimum=0, maximum=2**63 - 1)
    cosine = index.metric == "cosine"
    d = index.d

    if X is not None:
        X = V.as_float_matrix(X, "X", d=d, nonzero_rows=cosine)
        if X.shape[0] != ntotal:
            raise ValueError(
                f"X has {X.shape[0]} rows but the index holds {ntotal} vectors: pass exactly the indexed vectors"
            )
        x_ids = np.arange(ntotal, dtype=np.int64) if ids is None else V.as_ids(ids, X.shape[0])
        if not np.array_equal(np.sort(x_ids), np.sort(index.get_ids())):
            raise ValueError(
                "the ids of X are not the ids in the index: pass the ids given to add()/fit() "
                "(default: 0..n-1 in the order of X)"
            )
    elif ids is not None:
        raise ValueError("ids describe the rows of X: pass X too")

    if queries is None:
        if ground_truth is not None:
            raise ValueError("ground_truth needs the queries it belongs to: pass queries too")
        if X is None and index.reorder != "float32":
            raise ValueError(
                f"tuning on held-out points needs the indexed vectors (the index keeps only codes and "
                f"{index.reorder} re-ranking data): pass X=<the vectors given to fit/add> (and ids= if you "
                "chose ids), or pass queries="
            )
        if ntotal < k + 2:
            raise ValueError(
                f"held-out tuning needs more than k + 1 = {k + 1} indexed vectors, the index holds {ntotal}"
            )
        nq = min(num_queries or DEFAULT_NUM_QUERIES, ntotal)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(ntotal, size=nq, replace=False))
        if X is not None:
            Q = np.ascontiguousarray(X[rows])
            self_ids = x_ids[rows]
        else:
            # The float32 re-ranking vectors are the indexed vectors (normalised under cosine,
            # which leaves every cosine score unchanged); rows are positions in id order, which
            # is the row order of X after fit(X): the same sample as with X.
            self_ids, Q = index._stored_vectors(rows)
        source, k_search = "held-out", k + 1
    else:
        Q = V.as_float_matrix(queries, "queries", d=d, allow_1d=True, nonzero_rows=cosine)
        if k > ntotal:
            raise ValueError(f"k={k} exceeds the number of indexed vectors ({ntotal})")
        if ground_truth is not None:
            gt = np.asarray(ground_truth)
            if gt.ndim != 2 or gt.shape[0] != Q.shape[0] or gt.shape[1] < k or gt.dtype.kind not in "iu":
                raise ValueError(
                    f"ground_truth must be an integer array of shape ({Q.shape[0]}, >= {k}), got {gt.dtype} {gt.shape}"
                )
            ground_truth = gt[:, :k].astype(np.int64)
        if num_queries is not None and num_queries < Q.shape[0]:
            rng = np.random.default_rng(seed)
            sel = np.sort(rng.choice(Q.shape[0], size=num_queries, replace=False))
            Q = np.ascontiguousarray(Q[sel])
            if ground_truth is not None:
                ground_truth = ground_truth[sel]
        nq = Q.shape[0]
        self_ids = None
        source, k_search = "queries", k

    # ----------------------------------------------------------------- exact ground truth
    num_leaves = index.num_leaves_

    def search(Q: npt.NDArray[np.float32], k: int, L: int, R: int, num_threads: int) -> npt.NDArray[np.int64]:
        return index.search(Q, k, leaves_to_search=L, reorder_k=R, num_threads=num_threads)[1]

    nt = index.num_threads
    if ground_truth is not None:
        gt = ground_truth  # validated and subsampled with the queries above
    elif X is not None:
        exact = ExactIndex(metric=index.metric, num_threads=nt).fit(X, x_ids)
        gt = exact.search(Q, k=k_search)[1]
        del exact
        if self_ids is not None:
            gt = _drop_self(gt, self_ids, k)
    elif index.reorder == "float32":
        # Probing every leaf and re-scoring every candidate against the float32 store is exact.
        gt = search(Q, k_search, num_leaves, ntotal, nt)
        if self_ids is not None:
            gt = _drop_self(gt, self_ids, k)
    else:
        raise ValueError(
            f"an index with reorder={index.reorder!r} keeps no exact vectors to compute the ground "
            "truth from: pass X=<the indexed vectors> or ground_truth="
        )

    # ----------------------------------------------------------------- search over (L, R)
    evaluated: dict[tuple[int, int | None], tuple[float, float]] = {}

    def recall_of(L: int, R: int | None) -> tuple[float, float]:
        key = (L, R)
        if key not in evaluated:
            I = search(Q, k_search, L, R if R is not None else k_search, nt)
            if self_ids is not None:
                I = _drop_self(I, self_ids, k)
            per = _recall_rows(I, gt)
            evaluated[key] = (float(per.mean()), float(per.std(ddof=1) / math.sqrt(len(per))) if len(per) > 1 else 0.0)
        return evaluated[key]

    def goal_of(L: int, R: int | None) -> float:
        mean, se = recall_of(L, R)
        return min(1.0, target + (2.0 * se if margin is None else margin))

    def reaches(L: int, R: int | None) -> bool:
        return recall_of(L, R)[0] >= goal_of(L, R) - 1e-12

    def out_of_time() -> bool:
        return time_budget_s is not None and time.perf_counter() - t_start > time_budget_s

    r_grid: list[int | None]
    if index.reorder == "none":
        r_grid = [None]
    elif fixed_reorder is not None:
        r_grid = [max(fixed_reorder, k)]
    else:
        r_grid = [R for R in sorted({min(max(int(round(m * k)), k), ntotal) for m in REORDER_MULTIPLIERS})]

    candidates: list[tuple[int, int | None]] = []  # (L, R) with L minimal for its R, L decreasing
    hi = num_leaves
    timed_out = False
    stale = 0  # consecutive R values that did not lower L
    for R in r_grid:
        if out_of_time():
            timed_out = True
            break
        # Exponential search from L=1, then bisection: evaluations at small L are cheap.
        lo, L, found = 0, 1, None  # invariant: lo fails (0 = nothing probed), found reaches
        while True:
            L = min(L, hi)
            if reaches(L, R):
                found = L
                break
            lo = L
            if L == hi or out_of_time():
                break
            L *= 2
        if found is None:
            if out_of_time():
                timed_out = True
                break
            continue  # this R cannot reach the goal within hi leaves
        while found - lo > 1 and not out_of_time():
            mid = (lo + found) // 2
            if reaches(mid, R):
                found = mid
            else:
                lo = mid
        if candidates and found >= candidates[-1][0]:
            stale += 1
            if stale == 2:
                break  # larger R no longer saves leaves: every further R would only cost more
            continue
        stale = 0
        candidates.append((found, R))
        hi = found
        if found == 1:
            break

    # ----------------------------------------------------------------- choose and time
    def seconds_per_pass(L: int, R: int | None) -> float:
        best = math.inf
        for _ in range(3):
            passes, t0 = 0, time.perf_counter()
            while True:
                search(Q, k, L, R if R is not None else k, 1)
                passes += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= _MIN_TIMING_S:
                    break
            best = min(best, elapsed / passes)
        return best

    if candidates:
        # Fastest candidate; ties (equal timings) go to fewer leaves.
        secs, L, R = min((seconds_per_pass(L, R), L, R) for L, R in candidates)
    else:
        L, R = num_leaves, r_grid[-1]
        secs = seconds_per_pass(L, R)
    recall = recall_of(L, R)[0]
    goal = goal_of(L, R)
    reached = recall >= target
    if not candidates and timed_out:
        warnings.warn(
            f"AVQIndex.tune: the time budget of {time_budget_s:g} s ran out before any setting reached "
            f"the goal; using the largest budget (leaves_to_search={L}, reorder_k={R}), which reaches "
            f"recall@{k} = {recall:.4f} on {nq} tuning queries (target_recall={target:g}"
            f"{'' if reached else ' not reached'})",
            UserWarning,
            stacklevel=stacklevel,
        )
    elif not reached:
        warnings.warn(
            f"AVQIndex.tune: target_recall={target:g} not reached: no setting reaches it; using the "
            f"largest budget tried (leaves_to_search={L}, reorder_k={R}), which reaches recall@{k} = "
            f"{recall:.4f} on {nq} tuning queries",
            UserWarning,
            stacklevel=stacklevel,
        )

    return TuneReport(
        leaves_to_search=int(L),
        reorder_k=None if R is None else int(R),
        recall=recall,
        qps=nq / secs,
        target_recall=target,
        goal=goal,
        k=k,
        num_queries=nq,
        source=source,
        reached=reached,
        seconds=time.perf_counter() - t_start,
        evaluated=[
            (l_, r_, m) for (l_, r_), (m, _) in sorted(evaluated.items(), key=lambda e: (e[0][1] or 0, e[0][0]))
        ],
    )
