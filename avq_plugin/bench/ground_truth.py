"""Exact ground truth for a dataset, computed once and cached on disk."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .measure import true_distances

# --------------------------------------------------------------------------- ground truth


def default_cache_dir() -> Path:
    """``$AVQ_BENCH_CACHE``, else ``$XDG_CACHE_HOME/avq-bench``, else ``~/.cache/avq-bench``."""
    if os.environ.get("AVQ_BENCH_CACHE"):
        return Path(os.environ["AVQ_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "avq-bench"


def _ground_truth_key(dataset, depth: int) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(f"avq-bench-gt-v1 {dataset.metric} {depth} {dataset.train.shape} {dataset.test.shape}".encode())
    for a in (dataset.train, dataset.test):
        h.update(np.ascontiguousarray(a, dtype=np.float32).data.cast("B"))
    return h.hexdigest()


def compute_ground_truth(
    train: np.ndarray, test: np.ndarray, metric: str, depth: int, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``depth`` nearest neighbours by brute force.

    Candidates come from ``avq_plugin.ExactIndex`` (float32); their distances
    are recomputed in float64 (ann-benchmarks units, :func:`true_distances`)
    and each row re-sorted by them.

    Returns
    -------
    neighbors : numpy.ndarray of int64, shape (nq, depth)
    distances : numpy.ndarray of float32, shape (nq, depth), ascending
    """
    from avq_plugin import ExactIndex

    index = ExactIndex(metric={"angular": "cosine", "euclidean": "l2"}[metric], num_threads=threads).fit(train)
    ids = index.search(test, k=depth)[1]
    dist = np.empty(ids.shape, dtype=np.float64)
    step = max(1, 2**24 // max(1, depth * train.shape[1]))  # bounds the (step, depth, d) float64 gather
    for lo in range(0, ids.shape[0], step):
        dist[lo : lo + step] = true_distances(train, test[lo : lo + step], ids[lo : lo + step], metric)
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1).astype(np.float32)


def ensure_ground_truth(
    dataset,
    k: int,
    policy: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    say=None,
):
    """Return ``dataset`` with ground truth of at least ``k`` columns.

    Parameters
    ----------
    dataset : avq_plugin.datasets.Dataset
    k : int
        Recall depth needed.
    policy : {"auto", "file", "compute"}
        ``"auto"``: the dataset's own ground truth when it has ``k`` columns, else
        computed; ``"file"``: the dataset's own, an error when missing or too
        short; ``"compute"``: always computed.
    cache_dir : path, optional
        Computed ground truth is stored there as ``gt-<hash of data, metric and depth>.npz``
        and reused (default :func:`default_cache_dir`).
    threads : int, optional
        Threads of the brute-force search (default: all cores).
    say : callable, optional
        Receives progress lines.

    Raises
    ------
    ValueError
        Under ``policy="file"`` when the dataset has no or too short ground truth.
    """
    import dataclasses

    if policy not in ("auto", "file", "compute"):
        raise ValueError(f"ground-truth policy must be auto, file or compute, got {policy!r}")
    say = say or (lambda msg: None)
    has = dataset.has_ground_truth
    if policy == "file":
        if not has:
            raise ValueError(
                f"{dataset.name} has no ground truth (no 'neighbors' dataset) and "
                "--ground-truth file forbids computing it"
            )
        if dataset.neighbors.shape[1] < k:
            raise ValueError(
                f"{dataset.name}: its ground truth has {dataset.neighbors.shape[1]} neighbours "
                f"per query, fewer than k={k}"
            )
        return dataset
    if policy == "auto" and has and dataset.neighbors.shape[1] >= k:
        return dataset
    depth = min(dataset.n_train, max(k, 100))
    if k > dataset.n_train:
        raise ValueError(f"k={k} exceeds the number of database vectors ({dataset.n_train})")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"gt-{_ground_truth_key(dataset, depth)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                nb, dist = z["neighbors"].astype(np.int64), z["distances"].astype(np.float32)
            if nb.shape == (dataset.n_test, depth) == dist.shape:
                say(f"ground truth: cached {path}")
                return dataclasses.replace(dataset, neighbors=nb, distances=dist)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache entry: recompute and overwrite
    say(f"ground truth: exact top-{depth} of {dataset.n_test} queries over {dataset.n_train} vectors ...")
    t0 = time.perf_counter()
    nb, dist = compute_ground_truth(dataset.train, dataset.test, dataset.metric, depth, threads)
    say(f"ground truth: computed in {time.perf_counter() - t0:.1f} s")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, neighbors=nb, distances=dist)
        os.replace(tmp, path)
        say(f"ground truth: cached in {path}")
    except OSError as exc:
        say(f"note: could not cache the ground truth in {cache} ({exc})")
    return dataclasses.replace(dataset, neighbors=nb, distances=dist)
