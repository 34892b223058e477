"""Measurement: ann-benchmarks recall, resident memory, timing of builds and query settings."""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import ANN_BENCHMARKS_EPSILON, SystemUnavailable

if TYPE_CHECKING:
    from .config import SystemConfig
    from .runners.base import Runner


# --------------------------------------------------------------------------- recall


def true_distances(train: np.ndarray, queries: np.ndarray, ids: np.ndarray, metric: str) -> np.ndarray:
    """Exact distances of returned ids, in float64 and ann-benchmarks units.

    Parameters
    ----------
    train : numpy.ndarray, shape (n, d)
        Database vectors.
    queries : numpy.ndarray, shape (nq, d)
        Query vectors.
    ids : numpy.ndarray of int, shape (nq, k)
        Returned row ids; entries outside ``[0, n)`` (e.g. ``-1`` padding) are
        allowed.
    metric : {"angular", "euclidean"}
        ``"angular"``: ``1 - cos(q, x)``; ``"euclidean"``: ``||q - x||_2``
        (not squared).

    Returns
    -------
    numpy.ndarray of float64, shape (nq, k)
        Distances; ``inf`` for ids outside ``[0, n)``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[0] != queries.shape[0]:
        raise ValueError(f"ids must have shape (n_queries, k), got {ids.shape}")
    n = train.shape[0]
    valid = (ids >= 0) & (ids < n)
    safe = np.where(valid, ids, 0)
    x = np.asarray(train, dtype=np.float64)[safe]  # (nq, k, d)
    q = np.asarray(queries, dtype=np.float64)[:, None, :]  # (nq, 1, d)
    if metric == "angular":
        dots = np.einsum("qkd,qkd->qk", x, np.broadcast_to(q, x.shape))
        norms = np.linalg.norm(x, axis=2) * np.linalg.norm(q, axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = 1.0 - dots / norms
    elif metric == "euclidean":
        diff = x - q
        dist = np.sqrt(np.einsum("qkd,qkd->qk", diff, diff))
    else:
        raise ValueError(f"metric must be 'angular' or 'euclidean', got {metric!r}")
    return np.where(valid, dist, np.inf)


def knn_recall(
    train: np.ndarray,
    queries: np.ndarray,
    ids: np.ndarray,
    gt_distances: np.ndarray,
    metric: str,
    k: int = 10,
    epsilon: float = ANN_BENCHMARKS_EPSILON,
) -> tuple[float, np.ndarray]:
    """ann-benchmarks' k-nn recall: returned points within the k-th true distance.

    For query ``i`` a returned point counts when its exact distance (recomputed
    here in float64, never taken from the index) is
    ``<= gt_distances[i, k-1] + epsilon``; the count over the first ``k``
    returned ids is divided by ``k``. Invalid ids (outside ``[0, n)``, such as
    ``-1`` padding) and repeats of an id already counted score nothing (the
    ann-benchmarks harness would reject them outright).

    Parameters
    ----------
    train : numpy.ndarray, shape (n, d)
        Database vectors.
    queries : numpy.ndarray, shape (nq, d)
        Query vectors.
    ids : numpy.ndarray of int, shape (nq, m)
        Returned ids, best first. Only the first ``k`` columns are used; fewer
        than ``k`` columns count the missing ones as misses.
    gt_distances : numpy.ndarray, shape (nq, >=k)
        True distances of the exact neighbours, ascending, in ``metric`` units.
    metric : {"angular", "euclidean"}
        Distance, see :func:`true_distances`.
    k : int, default=10
        Recall depth.
    epsilon : float, default=1e-3
        Slack added to the k-th true distance (ann-benchmarks' value).

    Returns
    -------
    recall : float
        Mean over queries, in ``[0, 1]``.
    per_query : numpy.ndarray of float64, shape (nq,)
        Recall of each query.

    Examples
    --------
    >>> train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> q = np.array([[1.0, 0.1]])
    >>> gt = true_distances(train, q, np.array([[0, 2, 1]]), "euclidean")
    >>> knn_recall(train, q, np.array([[0, 1]]), gt, "euclidean", k=2)[0]
    0.5
    """
    ids = np.asarray(ids)
    gt_distances = np.asarray(gt_distances)
    if gt_distances.shape[0] != queries.shape[0] or gt_distances.shape[1] < k:
        raise ValueError(f"gt_distances must have shape ({queries.shape[0]}, >={k}), got {gt_distances.shape}")
    ids = ids[:, :k].astype(np.int64, copy=False)
    dist = true_distances(train, queries, ids, metric)
    # Only the first occurrence of an id may count.
    order = np.argsort(ids, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(ids, order, axis=1)
    repeat_sorted = np.zeros(ids.shape, dtype=bool)
    repeat_sorted[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    threshold = gt_distances[:, k - 1].astype(np.float64)[:, None] + epsilon
    hits = (dist <= threshold) & ~repeat
    per_query = hits.sum(axis=1) / float(k)
    return float(per_query.mean()), per_query


# --------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Current resident set size of this process, from ``/proc/self/statm``.

    Returns
    -------
    int
        Bytes, or ``-1`` where ``/proc`` is unavailable (non-Linux).
    """
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return -1
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Without this, memory freed by a previous build stays resident and is reused
    by the next one, so the next RSS delta would read close to zero.
    """
    gc.collect()
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``); False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size (``VmHWM``) since start or the last reset, or -1."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


# --------------------------------------------------------------------------- measurement


@dataclass
class QueryRun:
    """Result of one query setting in one mode."""

    query_args: dict
    mode: str
    recall: float
    qps: float
    #: Seconds per pass over all queries: the best rep, and every rep.
    best_seconds: float
    seconds: list
    #: Passes over the query set made by each rep (more than 1 below ``min_time``).
    passes: list
    cpu_over_wall: float
    budget: tuple | None = None


@dataclass
class BuildRun:
    """Result of one build configuration and all its query settings."""

    system: str
    name: str
    args: dict
    version: str
    build_seconds: float = float("nan")
    rss_delta_bytes: int | None = None
    peak_delta_bytes: int | None = None
    own_bytes: int | None = None
    own_kind: str = ""
    #: The built index with config shorthands resolved (e.g. "dot_product, 436 leaves").
    resolved: str = ""
    queries: list = field(default_factory=list)
    error: str | None = None


def _time_single(fn: Callable, rows: list, min_time: float) -> tuple[float, float, int, list]:
    """Time whole passes of one call per query until ``min_time`` seconds have passed.

    Returns wall seconds, CPU seconds, the number of passes and the first
    pass's results.
    """
    out = [None] * len(rows)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i, q in enumerate(rows):
        out[i] = fn(q)
    passes, wall = 1, time.perf_counter() - t0
    while wall < min_time:
        for q in rows:
            fn(q)
        passes, wall = passes + 1, time.perf_counter() - t0
    return wall, time.process_time() - c0, passes, out


def _time_batch(fn: Callable, queries: np.ndarray, min_time: float) -> tuple[float, float, int, Any]:
    """Like :func:`_time_single` with one call for all queries per pass."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn(queries)
    passes, wall = 1, time.perf_counter() - t0
    while wall < min_time:
        fn(queries)
        passes, wall = passes + 1, time.perf_counter() - t0
    return wall, time.process_time() - c0, passes, out


def _ids_matrix(rows: list, k: int) -> np.ndarray:
    """Pad ragged per-query id lists with -1 into an (nq, k) int64 array."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.int64).reshape(-1)[:k]
        out[i, : r.size] = r
    return out


def _measure_query(runner, dataset, rows, k, qa, mode, reps, epsilon, min_time) -> QueryRun:
    if mode == "single":
        fn = runner.single_fn(k, qa)
        timings = [_time_single(fn, rows, min_time) for _ in range(reps)]
        ids = _ids_matrix([runner.ids_single(r) for r in timings[-1][3]], k)
    else:
        fn = runner.batch_fn(k, qa)
        timings = [_time_batch(fn, dataset.test, min_time) for _ in range(reps)]
        ids = _ids_matrix(list(runner.ids_batch(timings[-1][3])), k)
    per_pass = [t[0] / t[2] for t in timings]
    best = int(np.argmin(per_pass))
    recall, _ = knn_recall(dataset.train, dataset.test, ids, dataset.distances, dataset.metric, k=k, epsilon=epsilon)
    return QueryRun(
        query_args=qa,
        mode=mode,
        recall=recall,
        qps=dataset.n_test / per_pass[best],
        best_seconds=per_pass[best],
        seconds=per_pass,
        passes=[t[2] for t in timings],
        cpu_over_wall=timings[best][1] / timings[best][0] if timings[best][0] > 0 else float("nan"),
        budget=runner.budget(qa, k),
    )


def _measure_build(runner: Runner, system: str, build: dict, dataset) -> BuildRun:
    result = BuildRun(system, build["name"], build["args"], runner.version)
    _release_free_memory()
    peak_ok = _reset_peak_rss()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    runner.build(dataset.train, dataset.metric, dict(build["args"]))
    result.build_seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    _release_free_memory()
    rss1 = rss_bytes()
    result.version = runner.version
    result.resolved = runner.resolved
    if rss0 >= 0 and rss1 >= 0:
        result.rss_delta_bytes = rss1 - rss0
        if peak_ok and peak >= 0:
            result.peak_delta_bytes = peak - rss0
    try:
        result.own_bytes = runner.own_memory()
        result.own_kind = runner.own_memory_kind if result.own_bytes is not None else ""
    except Exception as exc:
        result.own_kind = f"unavailable ({exc})"
    return result


def _warm_up(runner: Runner, cfg: SystemConfig, dataset, say, n_rows: int = 5000) -> None:
    """Build (unmeasured) on a few rows so one-time library set-up is not charged to the first build.

    Lazily loaded code pages, thread pools and static tables otherwise show up
    in the first build's time and RSS growth only.
    """
    bars, runner.bars = runner.bars, None
    try:
        for build in cfg.builds:
            try:
                runner.build(np.ascontiguousarray(dataset.train[:n_rows]), dataset.metric, dict(build["args"]))
                return
            except SystemUnavailable:
                continue
            except Exception as exc:
                say(f"  warm-up with {build['name']} failed ({type(exc).__name__}: {exc})")
            finally:
                runner.close()
                gc.collect()
    finally:
        runner.bars = bars
