"""Recall-vs-throughput benchmark of avq_plugin against ScaNN, Faiss, hnswlib and exact search.

Run it as ``avq-bench`` or ``python -m avq_plugin.bench``::

    avq-bench                                        # shipped 20k GloVe subset, every installed system
    avq-bench glove-100-angular.hdf5 --batch         # any ann-benchmarks HDF5 file, batched queries
    avq-bench X.npy Q.npy --metric euclidean --k 20  # your own data; exact ground truth computed, cached
    avq-bench --algorithms avq,scann --quick --out results/

It prints the best QPS at each recall target (``targets.yaml``: 0.8, 0.9, 0.95,
0.99) per system with build time and index size, and the ratios AVQ / each
peer; it writes ``results.json``, ``results.csv``, ``report.txt`` and
``recall_vs_qps.png`` to ``--out`` (see :func:`write_outputs`).

What is measured, for every system and build configuration, in one process on
the same float32 data with ``--threads`` threads (default 1):

- **build**: wall time of the whole build (including the L2 normalisation that
  ScaNN and Faiss need for angular data), the resident-set growth around it
  (``/proc/self/statm`` after ``gc.collect()`` and glibc ``malloc_trim``), the
  peak resident-set growth during it (``VmHWM`` after a ``clear_refs`` reset,
  where the kernel allows it), and the index's own size figure
  (``memory_usage()`` for avq_plugin, ``index_file_size()`` for hnswlib, the
  serialised size for ScaNN and Faiss). Each system first makes one unmeasured
  build on 5,000 rows, so one-time library set-up is not charged to its first
  measured build;
- **search**, for each query setting, in *single* mode (one call per query with
  a 1-D vector, the ann-benchmarks mode; the whole loop is timed and QPS =
  queries / seconds) and/or *batch* mode (all queries in one call). Each timing
  is repeated ``--reps`` times and the best is kept;
- **recall@k** with ann-benchmarks' rule (:func:`knn_recall`).

The parameter sweeps live in YAML files (``avq.yaml``, ``scann.yaml``,
``faiss.yaml``, ``hnswlib.yaml``, ``exact.yaml`` and ``targets.yaml``) in a
``benchmark_configs/`` directory; see :func:`find_config_dir` and
:func:`load_system_config`.

Only NumPy is needed to import this module. PyYAML (and h5py for HDF5 input,
matplotlib for the plot, tqdm for progress bars) come with the ``bench`` extra;
ScaNN, Faiss and hnswlib are optional and skipped with a note when missing,
unless named in ``--algorithms``. avq_plugin's compiled index is imported only
when it runs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import itertools
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "knn_recall",
    "true_distances",
    "find_config_dir",
    "load_targets",
    "load_system_config",
    "resolve_num_leaves",
    "run_benchmark",
    "ensure_ground_truth",
    "compute_ground_truth",
    "summarize",
    "format_summary",
    "format_report",
    "format_markdown",
    "write_outputs",
    "plot_results",
    "main",
]

SYSTEMS = ("avq", "scann", "faiss", "hnswlib", "exact")
INSTALL_HINT = "pip install avq-plugin[bench]"
#: ann-benchmarks' slack for the "k-nn" recall (plotting/metrics.py).
ANN_BENCHMARKS_EPSILON = 1e-3


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


# --------------------------------------------------------------------------- configuration


def find_config_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Locate the ``benchmark_configs/`` directory.

    Parameters
    ----------
    explicit : str or os.PathLike, optional
        Directory given with ``--configs``; it must exist.

    Returns
    -------
    pathlib.Path
        ``explicit`` if given; else ``./benchmark_configs`` in the current
        working directory; else ``benchmark_configs/`` in the repository root
        that contains this package (source checkouts and editable installs).

    Raises
    ------
    FileNotFoundError
        If no such directory exists.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise FileNotFoundError(f"--configs {path}: not a directory")
        return path
    candidates = [
        Path.cwd() / "benchmark_configs",
        Path(__file__).resolve().parent.parent / "benchmark_configs",
    ]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "no benchmark_configs/ directory found (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); run from the avq-plugin repository root or pass --configs DIR"
    )


def _yaml_load(path: Path) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise ImportError(f"avq-bench needs PyYAML to read {path}: {INSTALL_HINT}") from exc
    with open(path) as f:
        return yaml.safe_load(f)


def load_targets(config_dir: Path) -> dict:
    """Read ``targets.yaml``: recall depth ``k``, ``epsilon`` and recall ``targets``.

    Parameters
    ----------
    config_dir : pathlib.Path
        Directory holding the YAML files.

    Returns
    -------
    dict
        ``{"k": int, "epsilon": float, "targets": list of float}``.
    """
    raw = _yaml_load(config_dir / "targets.yaml") or {}
    targets = sorted(float(t) for t in raw.get("targets", [0.9, 0.95]))
    return {
        "k": int(raw.get("k", 10)),
        "epsilon": float(raw.get("epsilon", ANN_BENCHMARKS_EPSILON)),
        "targets": targets,
    }


def resolve_num_leaves(value: Any, n: int) -> int:
    """Turn a ``num_leaves``/``nlist`` config value into a count.

    Parameters
    ----------
    value : int or str
        An integer, ``"sqrt"`` (``round(sqrt(n))``) or ``"sqrt*F"`` (for
        example ``"sqrt*2"``: ``round(F * sqrt(n))``).
    n : int
        Number of database vectors.

    Returns
    -------
    int
        At least 1 and at most ``n``.

    Examples
    --------
    >>> resolve_num_leaves("sqrt", 20000), resolve_num_leaves("sqrt*2", 10000), resolve_num_leaves(64, 10)
    (141, 200, 10)
    """
    if isinstance(value, str):
        text = value.replace(" ", "")
        if text == "sqrt":
            factor = 1.0
        elif text.startswith("sqrt*"):
            factor = float(text[5:])
        else:
            raise ValueError(f"num_leaves must be an int, 'sqrt' or 'sqrt*F', got {value!r}")
        count = int(round(factor * math.sqrt(n)))
    else:
        count = int(value)
    return max(1, min(count, n))


@dataclass
class SystemConfig:
    """The part of one system's YAML file that applies to a dataset.

    Attributes
    ----------
    system : str
        ``"avq"``, ``"scann"``, ``"faiss"`` or ``"exact"``.
    size_class : str
        Name of the selected size class.
    builds : list of dict
        ``{"name": str, "args": dict}``, metric overrides already merged.
    query_arg_names : list of str
        Names of the query arguments, in order.
    query_args : list of tuple
        One tuple of values per query setting.
    """

    system: str
    size_class: str
    builds: list
    query_arg_names: list
    query_args: list


def _expand_query_args(raw: Any, names: Sequence[str]) -> list[tuple]:
    """List of lists -> tuples; mapping name -> values -> Cartesian product."""
    if raw is None:
        return [()]
    if isinstance(raw, dict):
        if sorted(raw) != sorted(names):
            raise ValueError(f"query_args keys {sorted(raw)} != query_arg_names {list(names)}")
        return list(itertools.product(*(raw[name] for name in names)))
    out = []
    for item in raw:
        item = tuple(item) if isinstance(item, (list, tuple)) else (item,)
        if len(item) != len(names):
            raise ValueError(f"query args {item} do not match names {list(names)}")
        out.append(item)
    return out


def load_system_config(config_dir: Path, system: str, n_train: int, metric: str, quick: bool = False) -> SystemConfig:
    """Read ``<system>.yaml`` and select the grid for a dataset.

    The file holds ``query_arg_names``, optional ``metric_overrides``
    (``{angular|euclidean: {arg: value}}``, merged into every build's args) and
    ``size_classes``: a list whose first entry with ``max_n >= n_train``
    (``max_n: null`` means unbounded) is used. A size class has ``builds``
    (``[{name, args}]``), ``query_args`` (a list of value lists, or a mapping
    ``name -> values`` expanded as a Cartesian product) and ``quick`` (the same
    keys, ``builds`` given as names, used with ``--quick``).

    Parameters
    ----------
    config_dir : pathlib.Path
        Directory holding the YAML files.
    system : str
        System name, also the file stem.
    n_train : int
        Number of database vectors; selects the size class.
    metric : {"angular", "euclidean"}
        Dataset metric; selects ``metric_overrides``.
    quick : bool, default=False
        Use the size class's ``quick`` grid.

    Returns
    -------
    SystemConfig
        The selected builds and query settings.
    """
    raw = _yaml_load(config_dir / f"{system}.yaml")
    names = list(raw.get("query_arg_names") or [])
    overrides = (raw.get("metric_overrides") or {}).get(metric) or {}
    chosen = None
    for size_class in raw["size_classes"]:
        max_n = size_class.get("max_n")
        if max_n is None or n_train <= int(max_n):
            chosen = size_class
            break
    if chosen is None:
        raise ValueError(f"{system}.yaml: no size class admits n_train={n_train}")

    builds = [dict(b) for b in chosen["builds"]]
    query_raw = chosen.get("query_args")
    if quick and chosen.get("quick"):
        q = chosen["quick"]
        if q.get("builds"):
            by_name = {b["name"]: b for b in builds}
            unknown = [name for name in q["builds"] if name not in by_name]
            if unknown:
                raise ValueError(f"{system}.yaml: quick builds {unknown} are not defined")
            builds = [by_name[name] for name in q["builds"]]
        query_raw = q.get("query_args", query_raw)

    resolved, seen = [], {}
    for b in builds:
        args = {**(b.get("args") or {}), **overrides}
        key = json.dumps(args, sort_keys=True, default=str)
        if key in seen:
            print(f"  note: {system} build {b['name']} equals {seen[key]} for {metric} data; skipped", file=sys.stderr)
            continue
        seen[key] = b["name"]
        resolved.append({"name": b["name"], "args": args})
    return SystemConfig(system, chosen.get("name", "?"), resolved, names, _expand_query_args(query_raw, names))


# --------------------------------------------------------------------------- progress


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Bars:
    """tqdm progress bars on stderr, or nothing.

    Parameters
    ----------
    enabled : bool
        Show bars; they are also off when tqdm is not installed.
    """

    def __init__(self, enabled: bool) -> None:
        self.tqdm = None
        if enabled:
            try:
                from tqdm import tqdm

                self.tqdm = tqdm
            except ImportError:
                pass

    @property
    def enabled(self) -> bool:
        return self.tqdm is not None

    def bar(self, desc: str, total: int, unit: str = "it"):
        """A bar with ``update(n)`` and ``close()`` (a no-op object when disabled)."""
        if self.tqdm is None:
            return _NullBar()
        return self.tqdm(
            total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=0.2
        )

    def write(self, msg: str, file=None) -> None:
        """Print a line without breaking the bars."""
        file = sys.stderr if file is None else file
        if self.tqdm is not None and file is sys.stderr:
            self.tqdm.write(msg, file=file)
        else:
            print(msg, file=file, flush=True)


class _StageBars:
    """AVQIndex progress callback ``(stage, done, total, info)`` shown as one bar per stage."""

    def __init__(self, bars: Bars, label: str) -> None:
        self.bars, self.label = bars, label
        self.stage, self.bar_, self.done = None, None, 0

    def __call__(self, stage: str, done: int, total: int, info: str) -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar_ = self.bars.bar(f"{self.label} build: {stage}", int(total))
        if done > self.done:
            self.bar_.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar_ is not None:
            self.bar_.close()
        self.bar_, self.stage = None, None


# --------------------------------------------------------------------------- systems


class SystemUnavailable(Exception):
    """Raised by a runner's constructor when its library cannot be imported."""


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


class AVQRunner(Runner):
    """avq_plugin.AVQIndex (imported lazily, so the bench runs without the build)."""

    own_memory_kind = "memory_usage()"

    def __init__(self) -> None:
        try:
            import avq_plugin

            self.cls = avq_plugin.AVQIndex
        except (ImportError, AttributeError) as exc:
            raise SystemUnavailable(
                f"avq_plugin.AVQIndex not importable ({exc}): skipped "
                "(build it with 'pip install --no-build-isolation -e .')"
            ) from exc
        self.version = getattr(avq_plugin, "__version__", "?")

    def build(self, train, metric, args):
        metric_name = {"angular": "cosine", "euclidean": "l2"}[metric]
        args = dict(args)
        if isinstance(args.get("num_leaves"), str):
            args["num_leaves"] = resolve_num_leaves(args["num_leaves"], train.shape[0])
        bars = self.bars if self.bars is not None and self.bars.enabled else None
        self.index = self.cls(metric=metric_name, num_threads=self.threads, verbose=bars is not None, **args)
        stages = None
        if bars is not None:
            stages = _StageBars(bars, "avq")
            self.index._progress_factory = lambda: stages
        try:
            self.index.fit(train)
        finally:
            if stages is not None:
                stages.close()
        self.resolved = f"{metric_name}, {self.index.num_leaves_} leaves"

    def single_fn(self, k, qa):
        search, leaves, reorder, nt = self.index.search, qa["leaves_to_search"], qa["reorder_k"], self.threads
        return lambda q: search(q, k=k, leaves_to_search=leaves, reorder_k=reorder, num_threads=nt)[1]

    def batch_fn(self, k, qa):
        search, leaves, reorder, nt = self.index.search, qa["leaves_to_search"], qa["reorder_k"], self.threads
        return lambda Q: search(Q, k=k, leaves_to_search=leaves, reorder_k=reorder, num_threads=nt)[1]

    def budget(self, qa, k):
        return (qa["leaves_to_search"], qa["reorder_k"])

    def own_memory(self):
        return int(self.index.memory_usage())


class ScannRunner(Runner):
    """ScaNN through ``scann.scann_ops_pybind``, configured like ann-benchmarks' entry."""

    own_memory_kind = "serialized"

    def __init__(self) -> None:
        scann = _import_peer("scann")
        self.scann = scann
        self.version = _dist_version("scann")

    def build(self, train, metric, args):
        scann = self.scann
        a = dict(args)
        if metric == "angular":
            data, measure = _normalize_rows(train), "dot_product"
        else:
            data, measure = np.ascontiguousarray(train, dtype=np.float32), "squared_l2"
        n = data.shape[0]
        leaves = resolve_num_leaves(a.pop("num_leaves"), n)
        threshold = a.pop("anisotropic_quantization_threshold", None)
        threshold = float("nan") if threshold is None else float(threshold)
        sample = a.pop("training_sample_size", "all")
        sample = n if sample == "all" else int(sample)
        quantize = {
            "float32": scann.scann_ops_pybind.scann_builder.ReorderType.FLOAT32,
            "int8": scann.scann_ops_pybind.scann_builder.ReorderType.INT8,
            "bfloat16": scann.scann_ops_pybind.scann_builder.ReorderType.BFLOAT16,
        }[a.pop("reorder_quantize", "float32")]
        builder = (
            scann.scann_ops_pybind.builder(data, a.pop("num_neighbors", 10), measure)
            .tree(
                num_leaves=leaves,
                num_leaves_to_search=min(leaves, int(a.pop("default_leaves_to_search", 1))),
                training_sample_size=sample,
                spherical=bool(a.pop("spherical", False)),
                quantize_centroids=bool(a.pop("quantize_centroids", False)),
            )
            .score_ah(int(a.pop("dims_per_block", 2)), anisotropic_quantization_threshold=threshold)
            .reorder(int(a.pop("default_reorder", 1)), quantize=quantize)
        )
        if a:
            raise ValueError(f"unknown scann build args: {sorted(a)}")
        builder.set_n_training_threads(self.threads)
        bar = self._bar("scann build (train + add)", 1, "index")
        try:
            self.index = builder.build()
        finally:
            bar.update(1)
            bar.close()
        self.index.set_num_threads(self.threads)
        self.resolved = f"{measure}, {leaves} leaves"

    def single_fn(self, k, qa):
        search, leaves, reorder = self.index.search, qa["leaves_to_search"], qa["reorder"]
        return lambda q: search(q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder, leaves_to_search=leaves)[0]

    def batch_fn(self, k, qa):
        search, leaves, reorder = self.index.search_batched, qa["leaves_to_search"], qa["reorder"]
        return lambda Q: search(Q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder, leaves_to_search=leaves)[0]

    def budget(self, qa, k):
        return (qa["leaves_to_search"], qa["reorder"])

    def own_memory(self):
        tmp = tempfile.mkdtemp(prefix="avq_bench_scann_")
        try:
            self.index.serialize(tmp)
            return sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class FaissRunner(Runner):
    """Faiss ``IVF{nlist},PQ{m}x4fsr`` wrapped in ``IndexRefineFlat``."""

    own_memory_kind = "serialized"

    def __init__(self) -> None:
        faiss = _import_peer("faiss")
        self.faiss = faiss
        self.version = getattr(faiss, "__version__", "?")

    def build(self, train, metric, args):
        faiss = self.faiss
        a = dict(args)
        if metric == "angular":
            data, faiss_metric = _normalize_rows(train), faiss.METRIC_INNER_PRODUCT
        else:
            data, faiss_metric = np.ascontiguousarray(train, dtype=np.float32), faiss.METRIC_L2
        n, d = data.shape
        nlist = resolve_num_leaves(a.pop("nlist"), n)
        dims_per_block = int(a.pop("dims_per_block", 2))
        if d % dims_per_block:
            raise ValueError(f"faiss PQ needs d={d} divisible by dims_per_block={dims_per_block}")
        factory = a.pop("factory").format(nlist=nlist, m=d // dims_per_block)
        refine = a.pop("refine", "flat")
        if a:
            raise ValueError(f"unknown faiss build args: {sorted(a)}")
        faiss.omp_set_num_threads(self.threads)
        base = faiss.index_factory(d, factory, faiss_metric)
        index = faiss.IndexRefineFlat(base) if refine == "flat" else base
        bar = self._bar("faiss train", 1, "index")
        index.train(data)
        bar.update(1)
        bar.close()
        _add_in_chunks(index.add, data, self._bar("faiss add", n, "vec"))
        self._base = base  # IndexRefineFlat does not own a Python reference to it
        self.index = index
        self.factory = factory
        self.ivf = faiss.extract_index_ivf(index)
        self.resolved = (
            ("IP, " if faiss_metric == faiss.METRIC_INNER_PRODUCT else "L2, ")
            + factory
            + (" + RefineFlat" if refine == "flat" else "")
        )

    def _configure(self, k, qa):
        self.ivf.nprobe = int(qa["nprobe"])
        if isinstance(self.index, self.faiss.IndexRefine):
            self.index.k_factor = float(qa["k_factor"])

    def single_fn(self, k, qa):
        self._configure(k, qa)
        search = self.index.search
        return lambda q: search(q[None, :], k)[1]

    def batch_fn(self, k, qa):
        self._configure(k, qa)
        search = self.index.search
        return lambda Q: search(Q, k)[1]

    def budget(self, qa, k):
        return (qa["nprobe"], int(round(float(qa["k_factor"]) * k)))

    def own_memory(self):
        return int(self.faiss.serialize_index(self.index).nbytes)

    def close(self):
        self.__dict__.pop("ivf", None)
        self.__dict__.pop("_base", None)
        super().close()


class ExactRunner(Runner):
    """Brute-force reference: ``avq_plugin.ExactIndex`` or Faiss ``IndexFlat``."""

    def __init__(self) -> None:
        self.backends: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        try:
            import avq_plugin

            self.backends["avq"] = avq_plugin.ExactIndex
        except (ImportError, AttributeError) as exc:
            self.errors["avq"] = f"avq_plugin.ExactIndex not importable ({exc})"
        try:
            import faiss

            self.backends["faiss"] = faiss
        except ImportError:
            self.errors["faiss"] = f"faiss not installed ({INSTALL_HINT})"
        if not self.backends:
            raise SystemUnavailable("exact: " + "; ".join(self.errors.values()) + ": skipped")

    def build(self, train, metric, args):
        backend = args.get("backend", "avq")
        if backend not in self.backends:
            reason = self.errors.get(backend, f"unknown exact backend {backend!r}")
            raise SystemUnavailable(f"exact backend {backend}: {reason}: skipped")
        self.backend = backend
        if backend == "avq":
            metric_name = {"angular": "cosine", "euclidean": "l2"}[metric]
            self.index = self.backends["avq"](metric=metric_name, num_threads=self.threads).fit(train)
            self.version = getattr(sys.modules.get("avq_plugin"), "__version__", "?")
            self.own_memory_kind = "memory_usage()"
            self.resolved = f"ExactIndex({metric_name})"
        else:
            faiss = self.backends["faiss"]
            faiss.omp_set_num_threads(self.threads)
            if metric == "angular":
                data, self.index = _normalize_rows(train), faiss.IndexFlatIP(train.shape[1])
            else:
                data, self.index = np.ascontiguousarray(train), faiss.IndexFlatL2(train.shape[1])
            self.index.add(data)
            self.version = getattr(faiss, "__version__", "?")
            self.own_memory_kind = "serialized"
            self.resolved = type(self.index).__name__

    def single_fn(self, k, qa):
        search = self.index.search
        if self.backend == "avq":
            return lambda q: search(q, k)[1]
        return lambda q: search(q[None, :], k)[1]

    def batch_fn(self, k, qa):
        search = self.index.search
        return lambda Q: search(Q, k)[1]

    def own_memory(self):
        if self.backend == "avq":
            return int(self.index.memory_usage()) if hasattr(self.index, "memory_usage") else None
        return int(self.backends["faiss"].serialize_index(self.index).nbytes)


class HnswlibRunner(Runner):
    """hnswlib's HNSW graph (``space="cosine"`` for angular data, ``"l2"`` for euclidean)."""

    own_memory_kind = "index_file_size()"

    def __init__(self) -> None:
        hnswlib = _import_peer("hnswlib")
        self.hnswlib = hnswlib
        self.version = _dist_version("hnswlib")

    def build(self, train, metric, args):
        a = dict(args)
        M, ef_construction = int(a.pop("M")), int(a.pop("ef_construction"))
        seed = int(a.pop("seed", 100))
        if a:
            raise ValueError(f"unknown hnswlib build args: {sorted(a)}")
        n, d = train.shape
        space = "cosine" if metric == "angular" else "l2"
        index = self.hnswlib.Index(space=space, dim=d)
        index.init_index(max_elements=n, ef_construction=ef_construction, M=M, random_seed=seed)
        index.set_num_threads(self.threads)
        ids = np.arange(n, dtype=np.int64)
        _add_in_chunks(
            lambda x, lo, hi: index.add_items(x, ids[lo:hi], num_threads=self.threads),
            train,
            self._bar("hnswlib add", n, "vec"),
            pass_range=True,
        )
        self.index = index
        self.resolved = f"{space}, M={M}, ef_construction={ef_construction}"

    def single_fn(self, k, qa):
        self.index.set_ef(int(qa["ef"]))
        query = self.index.knn_query
        return lambda q: query(q, k=k)[0]

    def batch_fn(self, k, qa):
        self.index.set_ef(int(qa["ef"]))
        query, nt = self.index.knn_query, self.threads
        return lambda Q: query(Q, k=k, num_threads=nt)[0]

    def ids_single(self, result):
        return np.asarray(result, dtype=np.int64).reshape(-1)

    def ids_batch(self, result):
        return np.asarray(result, dtype=np.int64)

    def own_memory(self):
        return int(self.index.index_file_size())


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


RUNNERS = {"avq": AVQRunner, "scann": ScannRunner, "faiss": FaissRunner, "hnswlib": HnswlibRunner, "exact": ExactRunner}


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "?"


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


def make_runner(system: str, threads: int = 1) -> Runner:
    """Instantiate the runner of ``system``; raises :class:`SystemUnavailable` if its library is missing."""
    runner = RUNNERS[system]()
    runner.threads = threads
    return runner


def run_benchmark(
    dataset,
    config_dir: Path,
    systems: Sequence[str],
    reps: int = 3,
    quick: bool = False,
    modes: Sequence[str] = ("single", "batch"),
    min_time: float = 0.1,
    log=sys.stderr,
    k: int | None = None,
    threads: int = 1,
    bars: Bars | None = None,
    runners: dict | None = None,
) -> dict:
    """Build and query every configured system on ``dataset``.

    Parameters
    ----------
    dataset : avq_plugin.datasets.Dataset
        Data and ground truth (ann-benchmarks conventions), at least ``k``
        columns of it (see :func:`ensure_ground_truth`).
    config_dir : pathlib.Path
        Directory with ``targets.yaml`` and ``<system>.yaml``.
    systems : sequence of str
        Subset of :data:`SYSTEMS`; a system whose library is missing is skipped
        with a note (pass ``runners`` to decide that beforehand).
    reps : int, default=3
        Timings per (setting, mode); the fastest is kept.
    min_time : float, default=0.1
        Each timing repeats whole passes over the queries until this many
        seconds have passed, and reports the time per pass; this steadies
        timings of small query sets without slowing down large ones.
    quick : bool, default=False
        Use the reduced grids.
    modes : sequence of str, default=("single", "batch")
        Query modes to time.
    log : file-like or None, default=sys.stderr
        Where progress lines go (None: nowhere).
    k : int, optional
        Neighbours per query and recall depth; default: ``k`` of ``targets.yaml``.
    threads : int, default=1
        Threads every system may use to build and search.
    bars : Bars, optional
        Progress bars for builds and sweeps (default: none).
    runners : dict, optional
        Already created runners by system name (see :func:`make_runner`).

    Returns
    -------
    dict
        JSON-serialisable record: ``dataset``, ``environment``, ``settings``,
        ``targets``, ``skipped`` (system -> reason) and ``builds`` (list of
        :class:`BuildRun` as dicts).
    """
    bars = bars or Bars(False)

    def say(msg: str) -> None:
        if log is not None:
            bars.write(msg, file=log)

    targets = load_targets(config_dir)
    if k is not None:
        targets["k"] = int(k)
    k = targets["k"]
    if not dataset.has_ground_truth:
        raise ValueError(f"dataset {dataset.name} has no ground truth (see ensure_ground_truth)")
    if dataset.distances.shape[1] < k:
        raise ValueError(f"ground truth has {dataset.distances.shape[1]} columns < k={k}")
    rows = list(dataset.test)  # 1-D float32 views, shared by every system
    builds: list[BuildRun] = []
    skipped: dict[str, str] = {}
    runners = dict(runners or {})
    for system in systems:
        try:
            runner = runners.pop(system, None) or make_runner(system, threads)
        except SystemUnavailable as exc:
            skipped[system] = str(exc)
            say(f"note: {exc}")
            continue
        runner.threads, runner.bars = threads, bars
        cfg = load_system_config(config_dir, system, dataset.n_train, dataset.metric, quick)
        _warm_up(runner, cfg, dataset, say)
        for build in cfg.builds:
            say(f"[{system}] build {build['name']} {build['args']}")
            try:
                br = _measure_build(runner, system, build, dataset)
            except SystemUnavailable as exc:
                say(f"  skipped: {exc}")
                skipped[f"{system}:{build['name']}"] = str(exc)
                continue
            except Exception as exc:
                say(f"  build FAILED: {type(exc).__name__}: {exc}")
                builds.append(
                    BuildRun(system, build["name"], build["args"], runner.version, error=f"{type(exc).__name__}: {exc}")
                )
                runner.close()
                continue
            say(f"  built in {br.build_seconds:.2f} s, RSS +{_mb(br.rss_delta_bytes)} MB, index {_mb(br.own_bytes)} MB")
            sweep = bars.bar(f"{system} {build['name']} sweep", len(cfg.query_args) * len(modes), "setting")
            try:
                for values in cfg.query_args:
                    qa = dict(zip(cfg.query_arg_names, values))
                    for mode in modes:
                        try:
                            qr = _measure_query(runner, dataset, rows, k, qa, mode, reps, targets["epsilon"], min_time)
                        except Exception as exc:
                            say(f"  {mode} {qa} FAILED: {type(exc).__name__}: {exc}")
                            br.error = f"{mode} {qa}: {type(exc).__name__}: {exc}"
                            continue
                        finally:
                            sweep.update(1)
                        br.queries.append(qr)
                        say(f"  {mode:6s} {_fmt_qa(qa):32s} recall={qr.recall:.4f} qps={qr.qps:9.1f}")
            finally:
                sweep.close()
            builds.append(br)
            runner.close()
            gc.collect()
    return {
        "dataset": {
            "name": dataset.name,
            "metric": dataset.metric,
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "dim": dataset.dim,
        },
        "environment": _environment(),
        "settings": {
            "reps": reps,
            "min_time": min_time,
            "quick": quick,
            "modes": list(modes),
            "threads": threads,
            "config_dir": str(config_dir),
            "systems": list(systems),
        },
        "targets": targets,
        "skipped": skipped,
        "builds": [asdict(b) for b in builds],
    }


def _environment() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    avq = sys.modules.get("avq_plugin")
    if avq is not None and hasattr(avq, "build_info"):
        try:
            env["avq_plugin_build_info"] = avq.build_info()
        except Exception:
            pass
    return env


# --------------------------------------------------------------------------- report


def _mb(nbytes: int | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.1f}"


def _fmt_qa(qa: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in qa.items()) or "-"


def _pareto(points: list[dict]) -> set:
    """Indices of points not dominated in (recall up, qps up)."""
    best, keep = -1.0, set()
    for i in sorted(range(len(points)), key=lambda j: (-points[j]["recall"], -points[j]["qps"])):
        if points[i]["qps"] > best:
            keep.add(i)
            best = points[i]["qps"]
    return keep


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def best_at_targets(results: dict) -> dict:
    """Best QPS at each recall target, per system and mode.

    Parameters
    ----------
    results : dict
        Output of :func:`run_benchmark`.

    Returns
    -------
    dict
        ``{system: {mode: {target: {"qps", "recall", "build", "query_args"} or None}}}``.
    """
    out: dict = {}
    for b in results["builds"]:
        for q in b["queries"]:
            per_mode = out.setdefault(b["system"], {}).setdefault(q["mode"], {})
            for t in results["targets"]["targets"]:
                cur = per_mode.get(t)
                if q["recall"] >= t and (cur is None or q["qps"] > cur["qps"]):
                    per_mode[t] = {
                        "qps": q["qps"],
                        "recall": q["recall"],
                        "build": b["name"],
                        "query_args": q["query_args"],
                    }
                else:
                    per_mode.setdefault(t, None)
    return out


def _headline_build(results: dict, system: str, best: dict, mode: str | None = None) -> dict | None:
    """The build of ``system`` that gives the most best-QPS entries in ``mode``.

    Ties go to the build that wins the highest target; with no target reached,
    the build with the best recall. ``mode`` defaults to the first mode timed.
    """
    builds = [b for b in results["builds"] if b["system"] == system and b["queries"]]
    if not builds:
        return None
    mode = mode or results["settings"]["modes"][0]
    wins: dict = {}
    for i, t in enumerate(results["targets"]["targets"]):
        hit = best.get(system, {}).get(mode, {}).get(t)
        if hit:
            count, top = wins.get(hit["build"], (0, -1))
            wins[hit["build"]] = (count + 1, i)
    if wins:
        name = max(wins, key=lambda n: wins[n])
        return next(b for b in builds if b["name"] == name)
    return max(builds, key=lambda b: max((q["recall"] for q in b["queries"]), default=-1))


def format_report(results: dict) -> str:
    """Render the recall-vs-QPS tables, matched budgets and the summary with ratios.

    Parameters
    ----------
    results : dict
        Output of :func:`run_benchmark`.

    Returns
    -------
    str
        Plain-text report.
    """
    ds, tg = results["dataset"], results["targets"]
    k, targets = tg["k"], tg["targets"]
    out = [
        f"dataset {ds['name']}: {ds['n_train']} x {ds['dim']}, {ds['n_test']} queries, {ds['metric']}; "
        f"recall@{k} (ann-benchmarks rule, eps={tg['epsilon']:g}); "
        f"{results['settings'].get('threads', 1)} thread(s); "
        f"QPS = queries / seconds per pass, best of {results['settings']['reps']} timings of "
        f">= {results['settings']['min_time']:g} s",
        f"host: {results['environment']['cpu']} ({results['environment']['cpu_count']} CPUs), "
        f"python {results['environment']['python']}, numpy {results['environment']['numpy']}",
    ]
    for reason in results["skipped"].values():
        out.append(f"note: {reason}")

    # Per system and mode: recall-vs-QPS table, Pareto points starred.
    for system in dict.fromkeys(b["system"] for b in results["builds"]):
        sys_builds = [b for b in results["builds"] if b["system"] == system]
        for mode in results["settings"]["modes"]:
            pts = [dict(build=b["name"], **q) for b in sys_builds for q in b["queries"] if q["mode"] == mode]
            if not pts:
                continue
            front = _pareto(pts)
            order = sorted(range(len(pts)), key=lambda i: (pts[i]["build"], pts[i]["recall"]))
            rows = [
                [
                    ("* " if i in front else "  ") + pts[i]["build"],
                    _fmt_qa(pts[i]["query_args"]),
                    f"{pts[i]['recall']:.4f}",
                    f"{pts[i]['qps']:.0f}",
                    f"{pts[i]['cpu_over_wall']:.2f}",
                ]
                for i in order
            ]
            out += [
                "",
                f"== {system} / {mode} query ({'one call per query' if mode == 'single' else 'all queries in one call'}); * = Pareto-optimal",
                _table(["build", "query args", f"recall@{k}", "QPS", "cpu/wall"], rows),
            ]
        for b in sys_builds:
            if b["error"]:
                out.append(f"  ! {b['name']}: {b['error']}")

    # Matched budgets: (partitions probed, candidates re-ranked), single-query recall.
    budget_builds = [b for b in results["builds"] if any(q.get("budget") for q in b["queries"])]
    if len(budget_builds) > 1:
        budgets = sorted({tuple(q["budget"]) for b in budget_builds for q in b["queries"] if q.get("budget")})
        cols = [f"{b['system']}:{b['name']}" for b in budget_builds]
        rows = []
        for bud in budgets:
            cells = []
            for b in budget_builds:
                rec = [
                    q["recall"]
                    for q in b["queries"]
                    if q.get("budget") and tuple(q["budget"]) == bud and q["mode"] == "single"
                ]
                cells.append(f"{rec[0]:.4f}" if rec else "")
            rows.append([f"({bud[0]}, {bud[1]})"] + cells)
        out += [
            "",
            f"== recall@{k} at matched budgets (partitions probed, candidates re-ranked)",
            _table(["budget"] + cols, rows),
        ]

    # Builds.
    rows = [
        [
            b["system"],
            b["name"],
            b["resolved"],
            b["version"],
            f"{b['build_seconds']:.2f}",
            _mb(b["rss_delta_bytes"]),
            _mb(b["peak_delta_bytes"]),
            f"{_mb(b['own_bytes'])} {b['own_kind']}".strip(),
        ]
        for b in results["builds"]
    ]
    if rows:
        out += [
            "",
            "== builds (RSS+ = resident growth after build, peak+ = peak growth during build)",
            _table(["system", "build", "index", "version", "build s", "RSS+ MB", "peak+ MB", "own MB"], rows),
        ]

    # Summary and ratios.
    best = best_at_targets(results)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    headline = {s: _headline_build(results, s, best) for s in systems}
    rows, winners = [], []
    for s in systems:
        hb = headline[s]
        for mode in results["settings"]["modes"]:
            cells = []
            for t in targets:
                hit = best.get(s, {}).get(mode, {}).get(t)
                cells.append(f"{hit['qps']:.0f}" if hit else "not reached")
                if hit:
                    winners.append(
                        f"  {s} {mode} @{t:g}: {hit['build']}, {_fmt_qa(hit['query_args'])} "
                        f"-> recall {hit['recall']:.4f}, {hit['qps']:.0f} QPS"
                    )
            rows.append(
                [s, mode]
                + cells
                + (
                    [
                        hb["name"],
                        f"{hb['build_seconds']:.2f}",
                        _mb(hb["rss_delta_bytes"]),
                        _mb(hb["peak_delta_bytes"]),
                        f"{_mb(hb['own_bytes'])} {hb['own_kind']}".strip(),
                    ]
                    if hb
                    else ["", "", "", "", ""]
                )
            )
    out += [
        "",
        "== summary: best QPS at each recall target; build time and memory of the headline build "
        "(the build behind most best-QPS entries of the first mode)",
        _table(
            ["system", "mode"]
            + [f"QPS@{t:g}" for t in targets]
            + ["headline build", "build s", "RSS+ MB", "peak+ MB", "own MB"],
            rows,
        ),
        "settings that achieved them:",
    ] + winners

    if "avq" in systems:
        ratio_rows = []
        for peer in [s for s in systems if s != "avq"]:
            for mode in results["settings"]["modes"]:
                cells = []
                for t in targets:
                    a = best.get("avq", {}).get(mode, {}).get(t)
                    p = best.get(peer, {}).get(mode, {}).get(t)
                    cells.append(f"{a['qps'] / p['qps']:.2f}x" if a and p else "n/a")
                ha, hp = headline["avq"], headline[peer]
                build = f"{ha['build_seconds'] / hp['build_seconds']:.2f}x" if ha and hp else "n/a"
                mem = (
                    f"{ha['rss_delta_bytes'] / hp['rss_delta_bytes']:.2f}x"
                    if ha and hp and ha["rss_delta_bytes"] and hp["rss_delta_bytes"] and hp["rss_delta_bytes"] > 0
                    else "n/a"
                )
                ratio_rows.append([f"avq/{peer}", mode] + cells + [build, mem])
        if ratio_rows:
            out += [
                "",
                "== ratios ours/peer (QPS: >1 means ours is faster; build time and RSS: <1 means ours is cheaper)",
                _table(["ratio", "mode"] + [f"QPS@{t:g}" for t in targets] + ["build time", "RSS+"], ratio_rows),
            ]
    noisy = [
        (b["system"], b["name"], q["mode"], q["cpu_over_wall"])
        for b in results["builds"]
        for q in b["queries"]
        if q["cpu_over_wall"] > 1.3 and results["settings"].get("threads", 1) == 1
    ]
    starved = [q["cpu_over_wall"] for b in results["builds"] for q in b["queries"] if q["cpu_over_wall"] < 0.85]
    if starved:
        out.append(
            f"warning: {len(starved)} timings got less than 85% of a CPU (cpu/wall down to "
            f"{min(starved):.2f}): the machine was busy; their QPS is understated, rerun to confirm"
        )
    if noisy:
        names = sorted({f"{n[0]}:{n[1]}/{n[2]}" for n in noisy})
        out.append(
            f"warning: {len(noisy)} timings used more CPU than wall time (cpu/wall up to "
            f"{max(n[3] for n in noisy):.2f}; {', '.join(names)}): not single-threaded?"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- summary and files


def summarize(results: dict) -> dict:
    """Best QPS per target, each system's headline build, and the ratios AVQ / peer.

    Parameters
    ----------
    results : dict
        Output of :func:`run_benchmark`.

    Returns
    -------
    dict
        ``{"best": best_at_targets(results), "headline": {mode: {system: {"build", "build_seconds",
        "index_bytes"}}}, "ratios": {mode: {peer: {"qps": {target: ratio or None}, "build_seconds",
        "index_bytes"}}}}``; ratios are AVQ's value divided by the peer's.
    """
    best = best_at_targets(results)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    targets = results["targets"]["targets"]
    headline, ratios = {}, {}
    for mode in results["settings"]["modes"]:
        headline[mode] = {}
        for s in systems:
            hb = _headline_build(results, s, best, mode)
            headline[mode][s] = (
                None
                if hb is None
                else {
                    "build": hb["name"],
                    "build_seconds": hb["build_seconds"],
                    "index_bytes": hb["own_bytes"],
                    "index_bytes_kind": hb["own_kind"],
                }
            )
        if "avq" in systems and headline[mode].get("avq"):
            ours = headline[mode]["avq"]
            ratios[mode] = {}
            for peer in systems:
                if peer == "avq" or not headline[mode].get(peer):
                    continue
                theirs = headline[mode][peer]
                qps = {}
                for t in targets:
                    a_, p_ = best.get("avq", {}).get(mode, {}).get(t), best.get(peer, {}).get(mode, {}).get(t)
                    qps[t] = a_["qps"] / p_["qps"] if a_ and p_ else None
                ratios[mode][peer] = {
                    "qps": qps,
                    "build_seconds": (
                        ours["build_seconds"] / theirs["build_seconds"]
                        if theirs["build_seconds"] and theirs["build_seconds"] > 0
                        else None
                    ),
                    "index_bytes": (
                        ours["index_bytes"] / theirs["index_bytes"]
                        if ours["index_bytes"] and theirs["index_bytes"]
                        else None
                    ),
                }
    return {"best": best, "headline": headline, "ratios": ratios}


def format_summary(results: dict) -> str:
    """The printed table: best QPS at each recall target per system, build time, index size, ratios.

    Parameters
    ----------
    results : dict
        Output of :func:`run_benchmark`.

    Returns
    -------
    str
        Plain text, one block per query mode.
    """
    ds, tg, st = results["dataset"], results["targets"], results["settings"]
    k, targets = tg["k"], tg["targets"]
    summ = summarize(results)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    threads = st.get("threads", 1)
    out = [
        f"{ds['name']}: {ds['n_train']} x {ds['dim']} {ds['metric']}, {ds['n_test']} queries, "
        f"recall@{k}, {threads} thread{'s' if threads != 1 else ''}"
    ]
    for reason in results["skipped"].values():
        out.append(f"note: {reason}")
    for mode in st["modes"]:
        how = "one query per call" if mode == "single" else "all queries in one call"
        rows = []
        for s in systems:
            cells = []
            for t in targets:
                hit = summ["best"].get(s, {}).get(mode, {}).get(t)
                cells.append(f"{hit['qps']:,.0f}" if hit else "-")
            hb = summ["headline"][mode].get(s)
            rows.append(
                [s]
                + cells
                + ([f"{hb['build_seconds']:.1f}", _mb(hb["index_bytes"]), hb["build"]] if hb else ["", "", ""])
            )
        out += [
            "",
            f"Best QPS at recall@{k} >= target ({mode} mode: {how}; - = not reached)",
            _table(["system"] + [f"@{t:g}" for t in targets] + ["build s", "index MB", "build"], rows),
        ]
        ratio_rows = []
        for peer, r in summ["ratios"].get(mode, {}).items():
            ratio_rows.append(
                [f"avq/{peer}"]
                + [f"{r['qps'][t]:.2f}x" if r["qps"][t] else "-" for t in targets]
                + [
                    f"{r['build_seconds']:.2f}x" if r["build_seconds"] else "-",
                    f"{r['index_bytes']:.2f}x" if r["index_bytes"] else "-",
                ]
            )
        if ratio_rows:
            out += [
                "",
                "AVQ / peer (QPS >1: AVQ faster; build time and index size <1: AVQ cheaper)",
                _table(["ratio"] + [f"QPS@{t:g}" for t in targets] + ["build", "size"], ratio_rows),
            ]
    failed = [f"{b['system']}:{b['name']}: {b['error']}" for b in results["builds"] if b["error"]]
    out += [f"error: {f}" for f in failed]
    return "\n".join(out)


def format_markdown(results: dict) -> str:
    """The summary of :func:`format_summary` as Markdown tables, plus the settings behind each entry."""
    ds, tg, st = results["dataset"], results["targets"], results["settings"]
    k, targets = tg["k"], tg["targets"]
    summ = summarize(results)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    versions = {b["system"]: b["version"] for b in results["builds"]}
    threads = st.get("threads", 1)
    out = [
        f"**{ds['name']}**: {ds['n_train']:,} x {ds['dim']} ({ds['metric']}), {ds['n_test']:,} queries, "
        f"recall@{k}, {threads} thread{'s' if threads != 1 else ''}, best of {st['reps']} timings."
    ]
    for reason in results["skipped"].values():
        out.append(f"\nNote: {reason}")
    for mode in st["modes"]:
        how = "one query per call" if mode == "single" else "all queries in one call"
        out += [
            "",
            f"Best QPS at recall@{k} >= target, {mode} mode ({how}); - = not reached:",
            "",
            "| system | " + " | ".join(f"QPS @{t:g}" for t in targets) + " | build s | index MB | build |",
            "|---|" + "---:|" * (len(targets) + 2) + "---|",
        ]
        for s in systems:
            cells = []
            for t in targets:
                hit = summ["best"].get(s, {}).get(mode, {}).get(t)
                cells.append(f"{hit['qps']:,.0f}" if hit else "-")
            hb = summ["headline"][mode].get(s)
            tail = [f"{hb['build_seconds']:.1f}", _mb(hb["index_bytes"]), hb["build"]] if hb else ["", "", ""]
            out.append(f"| {s} {versions.get(s, '')} | " + " | ".join(cells + tail) + " |")
        ratios = summ["ratios"].get(mode, {})
        if ratios:
            out += [
                "",
                "AVQ / peer (QPS > 1: AVQ faster; build time and index size < 1: AVQ cheaper):",
                "",
                "| ratio | " + " | ".join(f"QPS @{t:g}" for t in targets) + " | build time | index size |",
                "|---|" + "---:|" * (len(targets) + 2),
            ]
            for peer, r in ratios.items():
                cells = [f"{r['qps'][t]:.2f}x" if r["qps"][t] else "-" for t in targets]
                cells += [
                    f"{r['build_seconds']:.2f}x" if r["build_seconds"] else "-",
                    f"{r['index_bytes']:.2f}x" if r["index_bytes"] else "-",
                ]
                out.append(f"| avq / {peer} | " + " | ".join(cells) + " |")
        out += ["", "<details><summary>settings behind each entry</summary>", ""]
        for s in systems:
            for t in targets:
                hit = summ["best"].get(s, {}).get(mode, {}).get(t)
                if hit:
                    out.append(
                        f"- {s} @{t:g}: {hit['build']}, {_fmt_qa(hit['query_args'])} -> recall "
                        f"{hit['recall']:.4f}, {hit['qps']:,.0f} QPS"
                    )
        out += ["", "</details>"]
    return "\n".join(out)


CSV_COLUMNS = (
    "dataset",
    "system",
    "build",
    "mode",
    "query_args",
    "recall",
    "qps",
    "pareto",
    "build_seconds",
    "index_bytes",
    "threads",
    "k",
)


def write_csv(results: dict, path: str | os.PathLike) -> None:
    """One row per (system, build, query setting, mode), with a Pareto flag per system and mode."""
    import csv

    fronts = {}
    for s in dict.fromkeys(b["system"] for b in results["builds"]):
        for mode in results["settings"]["modes"]:
            pts = [
                (b["name"], i)
                for b in results["builds"]
                if b["system"] == s
                for i, q in enumerate(b["queries"])
                if q["mode"] == mode
            ]
            qs = [
                next(b for b in results["builds"] if b["system"] == s and b["name"] == n)["queries"][i] for n, i in pts
            ]
            fronts.update({(s, pts[j][0], pts[j][1]): True for j in _pareto(qs)})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for b in results["builds"]:
            for i, q in enumerate(b["queries"]):
                w.writerow(
                    [
                        results["dataset"]["name"],
                        b["system"],
                        b["name"],
                        q["mode"],
                        ";".join(f"{k}={v}" for k, v in q["query_args"].items()),
                        f"{q['recall']:.5f}",
                        f"{q['qps']:.1f}",
                        int((b["system"], b["name"], i) in fronts),
                        f"{b['build_seconds']:.3f}",
                        "" if b["own_bytes"] is None else b["own_bytes"],
                        results["settings"].get("threads", 1),
                        results["targets"]["k"],
                    ]
                )


_STYLE = {
    "avq": ("tab:red", "o"),
    "scann": ("tab:blue", "s"),
    "faiss": ("tab:green", "^"),
    "hnswlib": ("tab:purple", "D"),
    "exact": ("black", "*"),
}


def plot_results(results: dict, path: str | os.PathLike) -> None:
    """Recall@k vs QPS (log scale), one Pareto curve per system, one panel per query mode.

    Uses matplotlib's Agg canvas directly, so it never touches the pyplot
    backend of the calling program.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ds, k = results["dataset"], results["targets"]["k"]
    modes = results["settings"]["modes"]
    threads = results["settings"].get("threads", 1)
    fig = Figure(figsize=(7.0 * len(modes), 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    for i, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), i + 1)
        lows = []
        for s in systems:
            color, marker = _STYLE.get(s, ("gray", "x"))
            pts = [q for b in results["builds"] if b["system"] == s for q in b["queries"] if q["mode"] == mode]
            if not pts:
                continue
            front = sorted((pts[j] for j in _pareto(pts)), key=lambda q: q["recall"])
            version = next((b["version"] for b in results["builds"] if b["system"] == s), "")
            ax.scatter(
                [q["recall"] for q in pts],
                [q["qps"] for q in pts],
                color=color,
                marker=marker,
                s=12,
                alpha=0.25,
                linewidths=0,
            )
            ax.plot(
                [q["recall"] for q in front],
                [q["qps"] for q in front],
                color=color,
                marker=marker,
                markersize=5,
                linewidth=1.6,
                label=f"{s} {version}".strip(),
            )
            lows.append(min(q["recall"] for q in front))
        for t in results["targets"]["targets"]:
            ax.axvline(t, color="gray", linewidth=0.6, linestyle=":")
        ax.set_yscale("log")
        ax.set_xlim(max(0.0, min(lows, default=0.0) - 0.02), 1.005)
        ax.set_xlabel(f"recall@{k}")
        ax.set_ylabel("queries per second (log scale)")
        how = "one query per call" if mode == "single" else "batched"
        ax.set_title(
            f"{ds['name']} ({ds['n_train']:,} x {ds['dim']}, {ds['metric']})\n"
            f"{how}, {threads} thread{'s' if threads != 1 else ''}; curves: Pareto fronts",
            fontsize=10,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower left", fontsize=9)
    fig.savefig(os.fspath(path))


def write_outputs(results: dict, out_dir: str | os.PathLike, say=None) -> dict:
    """Write results.json, results.csv, report.txt, summary.md and recall_vs_qps.png into ``out_dir``.

    Returns
    -------
    dict
        File kind -> path written (the plot is missing when matplotlib is not installed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "report": out / "report.txt",
        "markdown": out / "summary.md",
        "plot": out / "recall_vs_qps.png",
    }
    record = dict(results)
    record["summary"] = summarize(results)
    with open(paths["json"], "w") as f:
        json.dump(record, f, indent=1, default=_json_default)
    write_csv(results, paths["csv"])
    with open(paths["report"], "w") as f:
        f.write(format_summary(results) + "\n\n" + format_report(results) + "\n")
    with open(paths["markdown"], "w") as f:
        f.write(format_markdown(results) + "\n")
    try:
        plot_results(results, paths["plot"])
    except ImportError:
        if say:
            say(f"note: matplotlib is not installed: no plot ({INSTALL_HINT})")
        paths.pop("plot")
    return {k: str(v) for k, v in paths.items()}


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
        h.update(memoryview(np.ascontiguousarray(a, dtype=np.float32)).cast("B"))
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


# --------------------------------------------------------------------------- CLI


class CommandLineError(Exception):
    """A user error: reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise CommandLineError(message)


def _parse_args(argv):
    p = _Parser(
        prog="avq-bench",
        description="Recall@k vs queries per second of avq_plugin against ScaNN, Faiss, hnswlib and exact "
        "search, on the shipped GloVe subset or your own data. Writes results.json, results.csv, "
        "report.txt and recall_vs_qps.png to --out and prints the best QPS at each recall target.",
    )
    p.add_argument(
        "data",
        nargs="*",
        metavar="DATA",
        help="DATASET.hdf5 (ann-benchmarks layout) or X.npy Q.npy (database, queries); "
        "default: the shipped 20k GloVe subset",
    )
    p.add_argument("--dataset", metavar="PATH.hdf5", help=argparse.SUPPRESS)  # old spelling of DATA
    p.add_argument(
        "--metric", help="angular (or cosine) / euclidean (or l2); default: the HDF5 file's (required for .npy input)"
    )
    p.add_argument("--k", type=int, default=None, help="neighbours per query and recall depth (default 10)")
    p.add_argument(
        "--algorithms",
        "--systems",
        dest="algorithms",
        metavar="LIST",
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all installed; a library "
        "named here that is not installed is an error)",
    )
    p.add_argument("--threads", type=int, default=1, help="threads for building and searching (default 1)")
    p.add_argument("--batch", action="store_true", help="time all queries in one call instead of one call per query")
    p.add_argument("--modes", default=None, help="comma-separated subset of single,batch (overrides --batch)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: avq-bench-results/<dataset>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.add_argument(
        "--ground-truth",
        choices=("auto", "file", "compute"),
        default="auto",
        help="auto: the file's ground truth if it has one, else computed exactly and cached; "
        "file: require the file's; compute: always compute (default auto)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where computed ground truth is cached (default $AVQ_BENCH_CACHE or ~/.cache/avq-bench)",
    )
    p.add_argument("--max-queries", type=int, metavar="N", help="use only the first N queries")
    p.add_argument(
        "--configs",
        metavar="DIR",
        help="directory with the YAML grids (default: ./benchmark_configs, else the one in the package's repository)",
    )
    p.add_argument("--reps", type=int, default=3, help="timings per setting; the best is kept (default 3)")
    p.add_argument(
        "--min-time",
        type=float,
        default=0.1,
        metavar="SEC",
        help="each timing repeats passes over the queries for at least SEC seconds "
        "and reports the time per pass (default 0.1)",
    )
    p.add_argument("--quick", action="store_true", help="reduced grids")
    p.add_argument("--json", metavar="FILE", help="also write the raw results to FILE")
    args = p.parse_args(argv)

    args.algorithms_given = args.algorithms is not None
    names = [s.strip() for s in (args.algorithms or ",".join(SYSTEMS)).split(",") if s.strip()]
    bad = [s for s in names if s not in SYSTEMS]
    if bad:
        raise CommandLineError(
            f"unknown algorithm{'s' if len(bad) > 1 else ''} {', '.join(bad)}; choose from {','.join(SYSTEMS)}"
        )
    if not names:
        raise CommandLineError("--algorithms is empty")
    args.algorithms = list(dict.fromkeys(names))
    if args.modes is None:
        args.modes = ["batch"] if args.batch else ["single"]
    else:
        args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not args.modes or any(m not in ("single", "batch") for m in args.modes):
            raise CommandLineError("--modes must be a comma-separated subset of single,batch")
    if args.dataset:
        if args.data:
            raise CommandLineError("give the dataset either as DATA or with --dataset, not both")
        args.data = [args.dataset]
    if len(args.data) > 2:
        raise CommandLineError(f"expected DATASET.hdf5 or X.npy Q.npy, got {len(args.data)} paths")
    if len(args.data) == 1 and args.data[0].endswith(".npy"):
        raise CommandLineError(f"{args.data[0]}: a .npy database needs its queries too: avq-bench X.npy Q.npy")
    if len(args.data) == 2 and not all(x.endswith(".npy") for x in args.data):
        raise CommandLineError("two paths must be X.npy Q.npy (database and queries)")
    if args.k is not None and args.k < 1:
        raise CommandLineError(f"--k must be >= 1, got {args.k}")
    if args.threads < 1:
        raise CommandLineError(f"--threads must be >= 1, got {args.threads}")
    if args.min_time < 0:
        raise CommandLineError("--min-time must be >= 0")
    if args.reps < 1:
        raise CommandLineError("--reps must be >= 1")
    if args.max_queries is not None and args.max_queries < 1:
        raise CommandLineError("--max-queries must be >= 1")
    return args


def _load_dataset(args):
    from avq_plugin import datasets

    if not args.data:
        ds = datasets.load_glove_subset()
        if args.metric is not None and datasets.normalize_metric(args.metric) != ds.metric:
            ds = datasets.Dataset(ds.name, datasets.normalize_metric(args.metric), ds.train, ds.test, None, None)
        return ds
    if len(args.data) == 1:
        return datasets.load_hdf5(args.data[0], metric=args.metric)
    if args.metric is None:
        raise CommandLineError("X.npy Q.npy input needs --metric angular or --metric euclidean")
    return datasets.load_npy(args.data[0], args.data[1], args.metric)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``avq-bench`` (also ``python -m avq_plugin.bench``).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when no system produced a result, 2 for a
        user error (reported as one ``avq-bench: error: ...`` line on stderr),
        130 when interrupted.
    """
    try:
        return _main(argv)
    except CommandLineError as exc:
        print(f"avq-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avq-bench: interrupted", file=sys.stderr)
        return 130


def _main(argv) -> int:
    args = _parse_args(argv)
    # BLAS/OpenMP pools of libraries imported from here on get --threads threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    bars = Bars(not args.quiet and sys.stderr.isatty())
    log = None if args.quiet else sys.stderr

    def say(msg: str) -> None:
        if log is not None:
            bars.write(msg)

    try:
        config_dir = find_config_dir(args.configs)
        targets = load_targets(config_dir)  # fail early on a missing or unreadable targets.yaml
        k = args.k or targets["k"]
        t0 = time.perf_counter()
        dataset = _load_dataset(args).subsample_queries(args.max_queries)
        if k > dataset.n_train:
            raise CommandLineError(f"--k {k} exceeds the number of database vectors ({dataset.n_train})")
        # Runners first: an algorithm named on the command line must be installed.
        runners, skipped_notes = {}, []
        for system in args.algorithms:
            try:
                runners[system] = make_runner(system, args.threads)
            except SystemUnavailable as exc:
                if args.algorithms_given:
                    raise CommandLineError(f"{system} was requested but is not available: {exc}") from None
                skipped_notes.append(str(exc))
        if args.ground_truth == "file":
            dataset = ensure_ground_truth(dataset, k, "file")  # its errors come before any output
        say(f"loaded {dataset!r} in {time.perf_counter() - t0:.1f} s; configs from {config_dir}")
        dataset = ensure_ground_truth(dataset, k, args.ground_truth, args.cache_dir, say=say)
    except (FileNotFoundError, ImportError, ValueError, OSError) as exc:
        raise CommandLineError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    for note in skipped_notes:
        say(f"note: {note}")
    systems = [s for s in args.algorithms if s in runners]
    results = run_benchmark(
        dataset,
        config_dir,
        systems,
        reps=args.reps,
        quick=args.quick,
        modes=args.modes,
        min_time=args.min_time,
        log=log,
        k=k,
        threads=args.threads,
        bars=bars,
        runners=runners,
    )
    for note in skipped_notes:
        results["skipped"].setdefault(note.split(" ", 1)[0], note)
    out_dir = Path(args.out) if args.out else Path("avq-bench-results") / dataset.name
    paths = write_outputs(results, out_dir, say)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "summary": summarize(results)}, f, indent=1, default=_json_default)
        paths["json (copy)"] = args.json
    print(format_summary(results))
    print("\nwritten: " + ", ".join(paths.values()))
    if not any(b["queries"] for b in results["builds"]):
        print("avq-bench: error: no system produced a result", file=sys.stderr)
        return 1
    return 0


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


if __name__ == "__main__":
    sys.exit(main())
