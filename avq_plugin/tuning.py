"""Auto-tuning of an AVQIndex to a target recall: its search budget and, on request, its code layout.

:func:`tune` measures the search budget of a trained index and returns a :class:`TuneReport`;
:func:`tune_layouts` also trains the index's other code layouts and measures each the same way.
:meth:`avq_plugin.AVQIndex.tune` calls them and applies the result. This module imports no index
module at import time (the index is an argument), so there is no import cycle with ``index.py``.

How the budget search works, in short: the recall of a search grows with ``leaves_to_search`` (L)
for a fixed ``reorder_k`` (R), and the smallest L reaching a recall goal shrinks as R grows. For
each R of a small geometric grid (k, 1.5k, 2k, 3k, ... up to 64k), an exponential-then-binary
search finds the smallest L whose recall on the tuning queries reaches the goal. Each such (L, R)
pair is a candidate; the candidates are timed (one thread, all tuning queries in one call) and the
fastest wins. The grid over R stops early once a larger R no longer lowers L (it would only cost
more).

Recall is measured per query as |returned ids among the true k nearest| / k (ties broken by id),
and the goal is ``target_recall + margin`` where the default margin is two standard errors of the
mean recall (0.005 to 0.01 with 1000 queries): held-out points sit in the data the partition and
codebooks were trained on, which makes them slightly easier than fresh queries, and the margin
also covers the sampling noise, so fresh queries from the same distribution land at or just
above the target (GloVe-190k, 10,000 fresh queries, targets 0.8/0.9/0.95/0.99: 0.810, 0.910,
0.956, 0.993).

Layouts (``tune_layouts``): every candidate (dims_per_block, spill) other than the index's own is
trained on X from a copy of the index's record (same leaves, threshold, iterations, seed), holds X
with its ids, and gets the budget search above on the same tuning queries and exact neighbours.
Each layout's fastest setting is then timed against the best layout so far, interleaved, and the
fastest layout reaching the goal wins. Only the index, the best copy so far and the one being
measured are in memory at a time.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _params
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
#: Timings (each at least _MIN_TIMING_S) of which the best counts, per setting and per comparison.
_TIMING_REPEATS = 3
#: leaf_margin search (``leaf_margin="auto"`` with given queries, or ``"always"``): margins are j / 100 for j in 1.._MARGIN_STEPS_MAX
#: (cosine units; 0.64 is far above every good margin measured, 0.15-0.33), found by bisection on j.
_MARGIN_UNIT = 0.01
_MARGIN_STEPS_MAX = 64
#: The smaller fixed budgets a margin is added to, as fractions of the fastest fixed budget's
#: (leaves_to_search, reorder_k): the measured best margin settings probe 0.35-0.45 of the
#: leaves and re-rank 0.5-0.65 of the candidates of the fixed budget of the same recall.
_MARGIN_BASES = ((1 / 2, 1 / 2), (1 / 2, 2 / 3), (1 / 3, 1 / 2), (1 / 3, 2 / 3))


@dataclass(frozen=True)
class LayoutTrial:
    """One code layout measured by ``AVQIndex.tune(layouts=...)``.

    Attributes
    ----------
    dims_per_block : int
        Dimensions per 4-bit block of this layout.
    spill : {"soar", None}
        Spilling of this layout (None: none).
    current : bool
        Whether this was the index's layout before tuning (measured as it was, not retrained).
    status : {"measured", "skipped"}
        ``"skipped"``: the time budget ran out before this layout was trained; the other fields
        are then None / False / 0.
    leaves_to_search, reorder_k : int or None
        The fastest budget of this layout reaching the goal (the largest tried when none does).
    leaf_margin : float or None
        The ``leaf_margin`` of that budget (None: the fixed count).
    recall : float or None
        Mean recall@k of that budget on the tuning queries.
    reached : bool
        Whether ``recall`` reaches the target.
    seconds_per_query : float or None
        Best time per query of that budget (one thread, all tuning queries in one call; the best
        of every timing of this layout, including the interleaved comparisons with other layouts).
    train_seconds : float
        Time spent training and filling this layout's copy (0 for the index's own layout).
    tune_seconds : float
        Time spent on this layout's budget search and timings.
    evaluated : list of tuple
        Every setting of this layout measured, as ``(leaves_to_search, reorder_k, recall)``.
    """

    dims_per_block: int
    spill: str | None
    current: bool
    status: str
    leaves_to_search: int | None = None
    reorder_k: int | None = None
    recall: float | None = None
    reached: bool = False
    seconds_per_query: float | None = None
    leaf_margin: float | None = None
    train_seconds: float = 0.0
    tune_seconds: float = 0.0
    evaluated: list[tuple[int, int | None, float]] = field(default_factory=list, repr=False)

    @property
    def qps(self) -> float | None:
        """Queries per second, 1 / ``seconds_per_query`` (None when skipped)."""
        return None if self.seconds_per_query is None else 1.0 / self.seconds_per_query

    def as_dict(self) -> dict[str, Any]:
        """The trial as a plain dict (JSON-serialisable)."""
        return {
            "dims_per_block": self.dims_per_block,
            "spill": self.spill,
            "current": self.current,
            "status": self.status,
            "leaves_to_search": self.leaves_to_search,
            "reorder_k": self.reorder_k,
            "leaf_margin": self.leaf_margin,
            "recall": self.recall,
            "reached": self.reached,
            "seconds_per_query": self.seconds_per_query,
            "qps": self.qps,
            "train_seconds": self.train_seconds,
            "tune_seconds": self.tune_seconds,
            "evaluated": [list(e) for e in self.evaluated],
        }


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
    leaf_margin : float or None
        Chosen ``leaf_margin`` (now the index's default, see ``AVQIndex.search``); None: the
        fixed count of leaves was faster (or margins were not tried).
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
        Every setting measured, as ``(leaves_to_search, reorder_k, recall)`` (of the chosen
        layout when layouts were tuned).
    evaluated_margins : list of tuple
        Every margin setting measured, as ``(leaves_to_search, reorder_k, leaf_margin, recall)``.
    dims_per_block : int or None
        Dimensions per block of the layout the budget is for (the chosen one when layouts were
        tuned; None only in a report made by hand).
    spill : {"soar", None}
        Spilling of that layout (None: none).
    layouts : tuple of LayoutTrial
        Every layout measured by ``tune(layouts=...)``, in the order measured (the index's own
        first); empty when layouts were not tuned.
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
    dims_per_block: int | None = None
    spill: str | None = None
    layouts: tuple[LayoutTrial, ...] = ()
    leaf_margin: float | None = None
    evaluated_margins: list[tuple[int, int | None, float, float]] = field(default_factory=list, repr=False)

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
            "dims_per_block": self.dims_per_block,
            "spill": self.spill,
            "layouts": [t.as_dict() for t in self.layouts],
            "leaf_margin": self.leaf_margin,
            "evaluated_margins": [list(e) for e in self.evaluated_margins],
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


@dataclass
class _Setup:
    """The validated arguments, tuning queries and exact neighbours shared by every layout."""

    target: float
    k: int
    Q: npt.NDArray[np.float32]
    gt: npt.NDArray[np.int64]
    self_ids: npt.NDArray[np.int64] | None
    source: str
    k_search: int
    fixed_reorder: int | None
    margin: float | None
    time_budget_s: float | None
    t_start: float
    try_margins: bool  # see _prepare: dot / cosine, no fixed reorder_k, and given queries or "always"
    off: float | None  # the leaf_margin that searches the fixed count (0; None under l2)
    X: npt.NDArray[np.float32] | None
    x_ids: npt.NDArray[np.int64] | None

    @property
    def nq(self) -> int:
        return int(self.Q.shape[0])

    def out_of_time(self) -> bool:
        return self.time_budget_s is not None and time.perf_counter() - self.t_start > self.time_budget_s


def _prepare(
    index: AVQIndex,
    target_recall: float,
    k: int,
    queries: npt.ArrayLike | None,
    time_budget_s: float | None,
    X: npt.ArrayLike | None,
    ids: npt.ArrayLike | None,
    ground_truth: npt.ArrayLike | None,
    num_queries: int | None,
    reorder_k: int | None,
    margin: float | None,
    seed: int | None,
    t_start: float,
    leaf_margin: object = "auto",
) -> _Setup:
    """Validate the arguments of :func:`tune`, draw the tuning queries and find their exact neighbours."""
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
    if leaf_margin is not None and not (isinstance(leaf_margin, str) and leaf_margin in ("auto", "always")):
        raise (ValueError if isinstance(leaf_margin, str) else TypeError)(
            "leaf_margin must be 'auto' (try margins when tuning on given queries), 'always' (also on "
            f"held-out points) or None (fixed counts only), got {leaf_margin!r}"
        )
    ip = index.metric != "l2"
    seed = index.seed if seed is None else V.check_int("seed", seed, minimum=0, maximum=2**63 - 1)
    cosine = index.metric == "cosine"
    d = index.d

    x_ids: npt.NDArray[np.int64] | None = None
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

    self_ids: npt.NDArray[np.int64] | None
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
            assert x_ids is not None
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
        self_ids = None
        source, k_search = "queries", k

    # ----------------------------------------------------------------- exact ground truth
    nt = index.num_threads
    if ground_truth is not None:
        gt = np.asarray(ground_truth)  # validated and subsampled with the queries above
    elif X is not None:
        exact = ExactIndex(metric=index.metric, num_threads=nt).fit(X, x_ids)
        gt = exact.search(Q, k=k_search)[1]
        del exact
        if self_ids is not None:
            gt = _drop_self(gt, self_ids, k)
    elif index.reorder == "float32":
        # Probing every leaf and re-scoring every candidate against the float32 store is exact.
        gt = index.search(
            Q,
            k_search,
            leaves_to_search=index.num_leaves_,
            reorder_k=ntotal,
            num_threads=nt,
            leaf_margin=0.0 if ip else None,
        )[1]
        if self_ids is not None:
            gt = _drop_self(gt, self_ids, k)
    else:
        raise ValueError(
            f"an index with reorder={index.reorder!r} keeps no exact vectors to compute the ground "
            "truth from: pass X=<the indexed vectors> or ground_truth="
        )
    return _Setup(
        target=target,
        k=k,
        Q=Q,
        gt=gt,
        self_ids=self_ids,
        source=source,
        k_search=k_search,
        fixed_reorder=fixed_reorder,
        margin=margin,
        time_budget_s=time_budget_s,
        t_start=t_start,
        X=X,
        x_ids=x_ids,
        # Held-out points are members of the partition: their best centre stands further ahead
        # of the others than a fresh query's, so a margin admits fewer extra leaves for them and
        # tuning on them picks margins too wide for real queries (MiniLM 384-d, target 0.99: 0.30
        # against 0.27 tuned on real queries; 6 % slower instead of 13-16 % faster than the fixed
        # count on fresh queries, docs/parameters.md). "auto" tries margins on given queries only.
        try_margins=ip
        and fixed_reorder is None
        and (leaf_margin == "always" or (leaf_margin == "auto" and source == "queries")),
        off=0.0 if ip else None,
    )


def _seconds_per_pass(index: AVQIndex, s: _Setup, L: int, R: int | None, M: float | None = None) -> float:
    """One timing of a setting (M: its leaf_margin, None: the fixed count): repeated
    single-threaded passes over the tuning queries (at least ``_MIN_TIMING_S`` of them), seconds
    per pass."""
    m = s.off if M is None else M
    passes, t0 = 0, time.perf_counter()
    while True:
        index.search(s.Q, s.k, leaves_to_search=L, reorder_k=R if R is not None else s.k, num_threads=1, leaf_margin=m)
        passes += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= _MIN_TIMING_S:
            return elapsed / passes


@dataclass
class _Budget:
    """The outcome of the budget search on one index."""

    L: int
    R: int | None
    recall: float
    goal: float
    secs: float  # best seconds per pass over the tuning queries
    found: bool  # some setting reached the goal
    timed_out: bool
    evaluated: list[tuple[int, int | None, float]]
    M: float | None = None  # leaf_margin (None: the fixed count)
    evaluated_margins: list[tuple[int, int | None, float, float]] = field(default_factory=list)

    def reached(self, target: float) -> bool:
        return self.recall >= target


def _search_budget(index: AVQIndex, s: _Setup) -> _Budget:
    """The fastest (leaves_to_search, reorder_k[, leaf_margin]) of ``index`` reaching the goal on
    the tuning queries."""
    ntotal = index.ntotal
    num_leaves = index.num_leaves_
    nt = index.num_threads
    target, k, k_search = s.target, s.k, s.k_search
    # (L, R, margin steps j: 0 for the fixed count) -> (mean recall, its standard error)
    evaluated: dict[tuple[int, int | None, int], tuple[float, float]] = {}

    def recall_of(L: int, R: int | None, j: int = 0) -> tuple[float, float]:
        key = (L, R, j)
        if key not in evaluated:
            I = index.search(
                s.Q,
                k_search,
                leaves_to_search=L,
                reorder_k=R if R is not None else k_search,
                num_threads=nt,
                leaf_margin=s.off if j == 0 else j * _MARGIN_UNIT,
            )[1]
            if s.self_ids is not None:
                I = _drop_self(I, s.self_ids, k)
            per = _recall_rows(I, s.gt)
            evaluated[key] = (float(per.mean()), float(per.std(ddof=1) / math.sqrt(len(per))) if len(per) > 1 else 0.0)
        return evaluated[key]

    def goal_of(L: int, R: int | None, j: int = 0) -> float:
        mean, se = recall_of(L, R, j)
        return min(1.0, target + (2.0 * se if s.margin is None else s.margin))

    def reaches(L: int, R: int | None, j: int = 0) -> bool:
        return recall_of(L, R, j)[0] >= goal_of(L, R, j) - 1e-12

    out_of_time = s.out_of_time
    r_grid: list[int | None]
    if index.reorder == "none":
        r_grid = [None]
    elif s.fixed_reorder is not None:
        r_grid = [max(s.fixed_reorder, k)]
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
    def best_of_timings(L: int, R: int | None, j: int = 0) -> float:
        M = None if j == 0 else j * _MARGIN_UNIT
        return min(_seconds_per_pass(index, s, L, R, M) for _ in range(_TIMING_REPEATS))

    j_best = 0
    if candidates:
        # Fastest candidate; ties (equal timings) go to fewer leaves.
        secs, L, R = min((best_of_timings(L, R), L, R) for L, R in candidates)
        if s.try_margins and not out_of_time():
            secs, L, R, j_best = _margin_budget(L, R, secs, k, ntotal, reaches, best_of_timings, out_of_time)
    else:
        L, R = num_leaves, r_grid[-1]
        secs = best_of_timings(L, R)
    return _Budget(
        L=int(L),
        R=None if R is None else int(R),
        recall=recall_of(L, R, j_best)[0],
        goal=goal_of(L, R, j_best),
        secs=secs,
        found=bool(candidates),
        timed_out=timed_out,
        evaluated=[
            (l_, r_, m)
            for (l_, r_, j), (m, _) in sorted(evaluated.items(), key=lambda e: (e[0][1] or 0, e[0][0]))
            if j == 0
        ],
        M=None if j_best == 0 else j_best * _MARGIN_UNIT,
        evaluated_margins=[
            (l_, r_, j * _MARGIN_UNIT, m)
            for (l_, r_, j), (m, _) in sorted(evaluated.items(), key=lambda e: (e[0][1] or 0, e[0][0], e[0][2]))
            if j > 0
        ],
    )


def _margin_budget(
    L: int,
    R: int | None,
    secs: float,
    k: int,
    ntotal: int,
    reaches: Callable[[int, int | None, int], bool],
    best_of_timings: Callable[[int, int | None, int], float],
    out_of_time: Callable[[], bool],
) -> tuple[float, int, int | None, int]:
    """The margin search (``_Setup.try_margins``): the fastest fixed budget (L, R), timed ``secs`` per pass, against
    smaller budgets (``_MARGIN_BASES``) each with the smallest margin (in steps of
    ``_MARGIN_UNIT``, by bisection: recall grows with the margin) that reaches the goal.

    Returns (secs, L, R, j) of the fastest, j margin steps (0: the fixed budget won). The
    margin candidates and the fixed budget are timed alternately, under the same load.
    """
    found: list[tuple[int, int | None, int]] = []
    for fl, fr in _MARGIN_BASES:
        L0 = max(1, math.ceil(L * fl))
        R0 = None if R is None else min(max(k, int(round(R * fr))), ntotal)
        if L0 >= L or out_of_time() or any(c[:2] == (L0, R0) for c in found):
            continue
        if not reaches(L0, R0, _MARGIN_STEPS_MAX):
            continue  # not even the widest margin tried reaches the goal from this budget
        lo, hi = 0, _MARGIN_STEPS_MAX  # lo fails (0: the smaller fixed budget), hi reaches
        while hi - lo > 1 and not out_of_time():
            mid = (lo + hi) // 2
            if reaches(L0, R0, mid):
                hi = mid
            else:
                lo = mid
        found.append((L0, R0, hi))
    if not found:
        return secs, L, R, 0
    timed = {(L, R, 0): secs}
    for c in found:
        timed[c] = best_of_timings(*c)
    # The best margin setting and the fixed budget, timed once more one after the other.
    c_best = min(found, key=lambda c: timed[c])
    timed[(L, R, 0)] = min(timed[(L, R, 0)], best_of_timings(L, R, 0))
    timed[c_best] = min(timed[c_best], best_of_timings(*c_best))
    if timed[c_best] < timed[(L, R, 0)]:
        return (timed[c_best], *c_best)
    return timed[(L, R, 0)], L, R, 0


def _warn_if_not_reached(
    b: _Budget, s: _Setup, stacklevel: int, layout: str = "", *, timed_out_before_any: bool
) -> None:
    """The UserWarning of a choice that misses the target (``stacklevel`` counted from the caller)."""
    if timed_out_before_any:
        warnings.warn(
            f"AVQIndex.tune: the time budget of {s.time_budget_s:g} s ran out before any setting reached "
            f"the goal; using the largest budget {layout}(leaves_to_search={b.L}, reorder_k={b.R}), which reaches "
            f"recall@{s.k} = {b.recall:.4f} on {s.nq} tuning queries (target_recall={s.target:g}"
            f"{'' if b.reached(s.target) else ' not reached'})",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    elif not b.reached(s.target):
        warnings.warn(
            f"AVQIndex.tune: target_recall={s.target:g} not reached: no setting reaches it; using the "
            f"largest budget tried {layout}(leaves_to_search={b.L}, reorder_k={b.R}), which reaches recall@{s.k} = "
            f"{b.recall:.4f} on {s.nq} tuning queries",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def _layout_of(index: AVQIndex) -> _params.Encoding:
    return _params.Encoding(index.dims_per_block_, index.spill_)


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
    leaf_margin: str | None = "auto",
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
    s = _prepare(
        index,
        target_recall,
        k,
        queries,
        time_budget_s,
        X,
        ids,
        ground_truth,
        num_queries,
        reorder_k,
        margin,
        seed,
        t_start,
        leaf_margin,
    )
    b = _search_budget(index, s)
    _warn_if_not_reached(b, s, stacklevel, timed_out_before_any=not b.found and b.timed_out)
    layout = _layout_of(index)
    return TuneReport(
        leaves_to_search=b.L,
        reorder_k=b.R,
        recall=b.recall,
        qps=s.nq / b.secs,
        target_recall=s.target,
        goal=b.goal,
        k=s.k,
        num_queries=s.nq,
        source=s.source,
        reached=b.reached(s.target),
        seconds=time.perf_counter() - t_start,
        evaluated=b.evaluated,
        dims_per_block=layout.dims_per_block,
        spill=layout.spill,
        leaf_margin=b.M,
        evaluated_margins=b.evaluated_margins,
    )


def _layout_name(e: _params.Encoding) -> str:
    return f"dims_per_block={e.dims_per_block}, spill={e.spill!r}"


def tune_layouts(
    index: AVQIndex,
    layouts: object,
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
    leaf_margin: str | None = "auto",
    stacklevel: int = 2,
) -> tuple[TuneReport, AVQIndex | None]:
    """Measure the fastest code layout and search budget reaching ``target_recall``.

    ``layouts`` is that of :meth:`avq_plugin.AVQIndex.tune` ("auto" or (dims_per_block, spill)
    pairs; the index's own layout is always measured, first and as it is). Every other layout is
    trained on ``X`` (required) from a copy of the index's record, then each gets the budget search
    of :func:`tune` on the same tuning queries. This function changes nothing on the index.

    Returns
    -------
    (TuneReport, AVQIndex or None)
        The report (``layouts`` lists every layout measured) and the trained copy of the winning
        layout, or None when the index's own layout won.
    """
    t_start = time.perf_counter()
    given = V.check_layouts(layouts)
    if X is None:
        raise ValueError(
            "layouts= trains the index with each layout, which needs the indexed vectors: "
            "pass X=<the vectors given to fit/add> (and ids= if you chose ids)"
        )
    s = _prepare(
        index,
        target_recall,
        k,
        queries,
        time_budget_s,
        X,
        ids,
        ground_truth,
        num_queries,
        reorder_k,
        margin,
        seed,
        t_start,
        leaf_margin,
    )
    X_all, x_ids = s.X, s.x_ids  # X is given, so _prepare validated it and its ids
    assert X_all is not None and x_ids is not None
    own = _layout_of(index)
    candidates = _params.tune_layouts(own, int(X_all.shape[1]), None if isinstance(given, str) else given)
    # Every layout is checked (the native core accepts its block count) before any is trained.
    for e in candidates[1:]:
        index._check_layout(e)
    if index.num_leaves_ > X_all.shape[0]:
        raise ValueError(
            f"layouts: the index has {index.num_leaves_} leaves but X only {X_all.shape[0]} rows to train them"
        )

    trials: list[LayoutTrial] = []
    # The fastest layout reaching the target so far, else the one of the highest recall so far
    # (faster on a tie): (layout, its index, its budget). Other copies are dropped as soon as beaten.
    best: tuple[_params.Encoding, AVQIndex, _Budget] | None = None
    spq: dict[_params.Encoding, float] = {}  # best seconds per query of each measured layout

    def better(e: _params.Encoding, b: _Budget) -> bool:
        if best is None:
            return True
        e0, _, b0 = best
        if b.reached(s.target) != b0.reached(s.target):
            return b.reached(s.target)
        if not b.reached(s.target) and b.recall != b0.recall:
            return b.recall > b0.recall
        return spq[e] < spq[e0]

    def run(callback: Callable[[str, int, int, str], None] | None) -> None:
        nonlocal best
        total = len(candidates)
        for i, e in enumerate(candidates):
            current = i == 0
            if callback is not None:
                callback("tune layouts", i, total, _layout_name(e))
            if not current and s.out_of_time():
                trials.append(LayoutTrial(e.dims_per_block, e.spill, current, "skipped"))
                continue
            t0 = time.perf_counter()
            candidate = index if current else index._layout_copy(e, X_all, x_ids, callback)
            t1 = time.perf_counter() if not current else t0
            b = _search_budget(candidate, s)
            spq[e] = b.secs / s.nq
            if best is not None and b.reached(s.target) and best[2].reached(s.target):
                # Two layouts reaching the target: their settings timed alternately, under the same load.
                e0, index0, b0 = best
                for _ in range(_TIMING_REPEATS):
                    spq[e0] = min(spq[e0], _seconds_per_pass(index0, s, b0.L, b0.R, b0.M) / s.nq)
                    spq[e] = min(spq[e], _seconds_per_pass(candidate, s, b.L, b.R, b.M) / s.nq)
            if better(e, b):
                best = (e, candidate, b)
            del candidate
            t2 = time.perf_counter()
            trials.append(
                LayoutTrial(
                    e.dims_per_block,
                    e.spill,
                    current,
                    "measured",
                    leaves_to_search=b.L,
                    reorder_k=b.R,
                    recall=b.recall,
                    reached=b.reached(s.target),
                    seconds_per_query=spq[e],
                    leaf_margin=b.M,
                    train_seconds=t1 - t0,
                    tune_seconds=t2 - t1,
                    evaluated=b.evaluated,
                )
            )
            if callback is not None:
                callback(
                    "tune layouts",
                    i + 1,
                    total,
                    f"{_layout_name(e)}: leaves_to_search={b.L}, reorder_k={b.R}, leaf_margin={b.M}, "
                    f"recall={b.recall:.4f}, "
                    f"{1.0 / spq[e]:.0f} QPS",
                )

    index._with_progress(run)
    assert best is not None  # the index's own layout is always measured
    e, winner, b = best
    # Timings taken after a layout's trial was recorded (the interleaved comparisons) count too.
    trials = [
        replace(t, seconds_per_query=spq[_params.Encoding(t.dims_per_block, t.spill)]) if t.status == "measured" else t
        for t in trials
    ]
    _warn_if_not_reached(
        b,
        s,
        stacklevel,
        f"with {_layout_name(e)} " if len(candidates) > 1 else "",
        timed_out_before_any=not b.found and b.timed_out,
    )
    report = TuneReport(
        leaves_to_search=b.L,
        reorder_k=b.R,
        recall=b.recall,
        qps=1.0 / spq[e],
        target_recall=s.target,
        goal=b.goal,
        k=s.k,
        num_queries=s.nq,
        source=s.source,
        reached=b.reached(s.target),
        seconds=time.perf_counter() - t_start,
        evaluated=b.evaluated,
        dims_per_block=e.dims_per_block,
        spill=e.spill,
        layouts=tuple(trials),
        leaf_margin=b.M,
        evaluated_margins=b.evaluated_margins,
    )
    return report, None if winner is index else winner
